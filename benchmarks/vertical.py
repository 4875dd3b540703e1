"""Vertical FL targets: PSI speed, FATE breast split AUC, digits halves, 8-bit embeddings/gradients.

    env -u OPENBLAS_CORETYPE PYTHONPATH=. python benchmarks/vertical.py [--quick] [--json out.json]

* PSI: 10,000 ids a party, half shared; the two parties run in two processes (one core each,
  talking through pipes), timed from the first hash to both intersections; also one process.
* Breast (FATE breast_hetero): 5-fold CV AUC of split learning through the Flower apps (in-process
  Grid, the same messages and codecs as the simulation engine) vs the same model trained centrally
  on all 30 features; and FATE's own protocol (train = test; FATE reports 0.9966 for its LR).
* Digits halves: joint accuracy vs each half alone (same model shape, one party).
* Compression: q8 and q8+deflate (8-bit codes, then lossless raw deflate of the bodies, see
  compress/codecs/deflate.py) vs fp32: serialized payload bytes (each message's header included)
  of embeddings + gradients per epoch, the whole Flower messages' bytes, and the metric delta.
  Every message is one self-describing codec payload (26-byte header for one 2-D array, the same
  for fp32): digits sends 32 x 16 values a message, so q8 alone caps at 2074/546 = 3.80x and
  the deflate stage carries it past 4x; the breast split sends 32 x 1 values a message, where
  header + 8-byte grid + 32 codes cap any 8-bit code at 154/66 = 2.33x (4x would need < 2 bits).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from federated.psi import PSIParty, intersect  # noqa: E402
from federated.vertical import VerticalConfig, load_party, train_local  # noqa: E402
from federated.vertical_apps import run_inprocess  # noqa: E402
from federated.vertical_data import PartyData  # noqa: E402
from simulations import scenario_path  # noqa: E402

N_PSI = 10_000
CODECS = ["fp32", "q8", "q8+deflate"]


def psi_two_processes(a: list[str], b: list[str]) -> tuple[float, int, float]:
    """Both parties at once, one process each: (wall seconds, intersection size, max CPU s of a party)."""
    ctx = mp.get_context("fork")
    ca, cb = ctx.Pipe()
    start, out = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_party, args=(ids, c, start, out, k == 0)) for k, (ids, c) in enumerate(((a, ca), (b, cb)))]
    for p in procs:
        p.start()
    start.wait()
    t0 = time.perf_counter()
    sizes = [out.get() for _ in procs]
    wall = time.perf_counter() - t0
    for p in procs:
        p.join()
    assert sizes[0][0] == sizes[1][0]
    return wall, sizes[0][0], max(c for _, c in sizes)


def _exchange(conn, data: bytes, first: bool) -> bytes:
    """Send and receive over one pipe; one side sends first so big messages cannot deadlock."""
    if first:
        conn.send_bytes(data)
        return conn.recv_bytes()
    got = conn.recv_bytes()
    conn.send_bytes(data)
    return got


def _party(ids: list[str], conn, start, out, first: bool) -> None:
    p = PSIParty(ids, workers=1)
    start.wait()
    cpu = time.process_time()
    peer = _exchange(conn, p.blinded(), first)
    peer_double = p.reblind(peer)                        # the peer's ids under both keys
    own_double = _exchange(conn, peer_double, first)     # our ids under both keys
    out.put((len(p.intersect(own_double, peer_double)), time.process_time() - cpu))


def bench_psi() -> dict:
    a = [f"customer-{i}" for i in range(N_PSI)]
    b = [f"customer-{i}" for i in range(N_PSI // 2, N_PSI // 2 + N_PSI)]
    wall2, n, cpu = psi_two_processes(a, b)
    t0 = time.perf_counter()
    got, _ = intersect(a, b, workers=2)
    wall1 = time.perf_counter() - t0
    assert n == len(got) == N_PSI // 2
    return {"ids_per_party": N_PSI, "shared": n, "two_processes_s": wall2, "party_cpu_s": cpu,
            "one_process_s": wall1, "load_avg": os.getloadavg()[0]}


def _mean(hist: list[list[dict]], key: str) -> float:
    return float(np.mean([h[-1][key] for h in hist]))


def bench_breast(quick: bool) -> dict:
    cfg = VerticalConfig.from_toml(scenario_path("breast_vertical")).replace(compare=CODECS)
    if quick:
        cfg = cfg.replace(epochs=5, run_folds=1)
    parties = [load_party(cfg, p) for p in cfg.party_names]
    n_folds = cfg.run_folds or cfg.folds
    split = run_inprocess(cfg)
    every = PartyData("all", parties[0].ids, np.concatenate([p.x for p in parties], 1), [], parties[0].y)
    central = [train_local(cfg, [every], f) for f in range(n_folds)]
    fate = cfg.replace(folds=0, run_folds=0, compare=["fp32"])
    out = {"cv_folds": n_folds, "split": {c: r["mean"] for c, r in split["runs"].items()},
           "bytes_per_epoch": {c: r["bytes_per_epoch"] for c, r in split["runs"].items()},
           "central_auc": _mean(central, "auc"),
           "fate_train_eq_test": {"split_auc": run_inprocess(fate)["runs"]["fp32"]["mean"]["auc"],
                                  "central_auc": train_local(fate, [every])[-1]["auc"], "fate_lr_auc": 0.9966}}
    return out


def bench_digits(quick: bool) -> dict:
    cfg = VerticalConfig.from_toml(scenario_path("digits_vertical")).replace(compare=CODECS)
    if quick:
        cfg = cfg.replace(epochs=5)
    left, right = (load_party(cfg, p) for p in cfg.party_names)
    joint = run_inprocess(cfg)
    right_labelled = PartyData("right", right.ids, right.x, right.features, left.take(right.ids).y)
    return {"split": {c: r["mean"] for c, r in joint["runs"].items()},
            "bytes_per_epoch": {c: r["bytes_per_epoch"] for c, r in joint["runs"].items()},
            "left_alone": train_local(cfg, [left])[-1]["accuracy"],
            "right_alone": train_local(cfg, [right_labelled])[-1]["accuracy"]}


def _ratio(b: dict, codec: str) -> tuple[float, float]:
    """(fp32 / codec) for the payload bytes and for the whole messages' bytes, per epoch."""
    pay = (b["fp32"]["emb_bytes"] + b["fp32"]["grad_bytes"]) / (b[codec]["emb_bytes"] + b[codec]["grad_bytes"])
    return pay, b["fp32"]["wire_bytes"] / b[codec]["wire_bytes"]


def report(res: dict) -> str:
    p, br, dg = res["psi"], res["breast"], res["digits"]
    bs, ds = br["split"], dg["split"]
    lines = [f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}, {os.cpu_count()} cores",
             f"PSI {p['ids_per_party']} ids/party, {p['shared']} shared: two parties in two processes "
             f"{p['two_processes_s']:.2f} s wall (target <= 2 s), {p['party_cpu_s']:.2f} s CPU per party; one process "
             f"{p['one_process_s']:.2f} s; load average {p['load_avg']:.1f}",
             f"breast {br['cv_folds']}-fold CV AUC: split fp32 {bs['fp32']['auc']:.4f}, central (30 features) "
             f"{br['central_auc']:.4f}, diff {bs['fp32']['auc'] - br['central_auc']:+.4f} "
             f"(targets >= 0.995, |diff| <= 0.001)",
             f"breast train=test (FATE protocol): split {br['fate_train_eq_test']['split_auc']:.4f}, central "
             f"{br['fate_train_eq_test']['central_auc']:.4f}, FATE LR 0.9966",
             f"digits halves accuracy: joint fp32 {ds['fp32']['accuracy']:.4f} (target >= 0.96), left alone "
             f"{dg['left_alone']:.4f}, right alone {dg['right_alone']:.4f}"]
    for name, part, m in (("breast", br, "auc"), ("digits", dg, "accuracy")):
        for codec in CODECS[1:]:
            pay, wire = _ratio(part["bytes_per_epoch"], codec)
            delta = 100 * (part["split"][codec][m] - part["split"]["fp32"][m])
            lines.append(f"{name} {codec} vs fp32: payload bytes/epoch {pay:.2f}x fewer, whole messages "
                         f"{wire:.2f}x; {m} {delta:+.2f} points (targets >= 4x, >= -0.5 points)")
    lines.append(f"load average at the end: {os.getloadavg()[0]:.1f} (1 min)")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few epochs, one fold (smoke run)")
    ap.add_argument("--json", help="also write the numbers to this file")
    args = ap.parse_args()
    res = {"psi": bench_psi(), "breast": bench_breast(args.quick), "digits": bench_digits(args.quick)}
    print(report(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=float))


if __name__ == "__main__":
    main()
