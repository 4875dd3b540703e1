"""MobileNetV3-style with its squeeze-and-excitation gates fused (``edgelearn::SqueezeExciteNHWC``)
beside the same model with the pass ``fuse_squeeze_excite`` off (each gate its four nodes: global
pool, two one-pixel convolutions, the Mul) and onnxruntime, in one process.

Run from the project root:  env -u OPENBLAS_CORETYPE python benchmarks/squeeze_excite.py [--threads 1,2]

First the whole model, the three runtimes' blocks interleaved (each after 0.3 s of its own
untimed runs: a pool left spinning by the runtime before steals the cores); then each gate in
the model, fused against its four nodes, from our session's per-node profile (both predictors'
runs interleaved, median over runs of each gate's time: the fused node's, or the sum of its four).
"""
from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgelearn.commands.bench import edgelearn_runner, max_abs_diff, peer_runner, time_interleaved  # noqa: E402
from inference import zoo  # noqa: E402
from inference.kernels.squeeze_excite import OP  # noqa: E402
from inference.onnx_export import model_to_proto  # noqa: E402

OFF = {"passes": {"fuse_squeeze_excite": False}}


def gate_times(fused, apart, run_fused, run_apart, feeds: dict, runs: int) -> list[tuple[tuple, float, float]]:
    """Per gate of the fused predictor: (X's shape, median fused time, median time of its four
    nodes apart), from the sessions' profiles over ``runs`` interleaved runs each."""
    times = {"fused": collections.defaultdict(list), "apart": collections.defaultdict(list)}
    for side, pred in (("fused", fused), ("apart", apart)):
        per_run = times[side]
        pred.session.profiler = lambda node, kernel, start, end, d=per_run: d[node.label()].append(end - start)
    try:
        for _ in range(runs):
            run_fused(feeds)
            run_apart(feeds)
    finally:
        fused.session.profiler = apart.session.profiler = None
    graph = fused.model.graph
    out = []
    for node in graph.nodes:
        if node.op_type != OP:
            continue
        parts = node.name.split("+")  # the pass names the fused node after the four it replaced
        f = float(np.median(times["fused"][node.label()]))
        a = float(np.median(np.sum([times["apart"][p] for p in parts], axis=0)))
        out.append((graph.type_of(node.inputs[0]).shape, f, a))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", default="1,2")
    p.add_argument("--repeat", type=int, default=60)
    p.add_argument("--model", default="mobilenet_v3_style")
    args = p.parse_args()
    proto = model_to_proto(zoo.ZOO[args.model]())
    x = np.random.default_rng(0).standard_normal(zoo.input_shape(args.model, 1)).astype(np.float32)
    feeds = {proto.graph.input[0].name: x}
    for t in (int(v) for v in args.threads.split(",")):
        run_fused, fused = edgelearn_runner(proto.SerializeToString(), t)
        run_apart, apart = edgelearn_runner(proto.SerializeToString(), t, **OFF)
        gates = sum(n.op_type == OP for n in fused.model.graph.nodes)
        if gates == 0:
            raise SystemExit(f"{args.model}: no gate fused")
        runners = {"fused": run_fused, "apart": run_apart, "onnxruntime": peer_runner("onnxruntime", proto, t)}
        outs = {k: r(feeds) for k, r in runners.items()}
        for k in ("fused", "apart"):
            diff, ok = max_abs_diff(outs[k], outs["onnxruntime"], rtol=1e-4, atol=1e-4)
            if not ok:
                raise SystemExit(f"{args.model} ({k}): differs from onnxruntime (max abs difference {diff})")
        ms = {k: tm.median * 1e3 for k, tm in time_interleaved(runners, feeds, args.repeat, settle_s=0.3).items()}
        print(f"\n{args.model}, batch 1, {t} thread(s), {gates} gates: median ms of {args.repeat} runs")
        print("| fused | apart | onnxruntime | fused / apart | fused / onnxruntime | apart / onnxruntime |")
        print("|---|---|---|---|---|---|")
        print(f"| {ms['fused']:.3f} | {ms['apart']:.3f} | {ms['onnxruntime']:.3f} | {ms['fused'] / ms['apart']:.3f}x | "
              f"{ms['fused'] / ms['onnxruntime']:.2f}x | {ms['apart'] / ms['onnxruntime']:.2f}x |")
        print("\n| gate (H, W, C) | apart us | fused us | fused / apart |")
        print("|---|---|---|---|")
        tot_f = tot_a = 0.0
        for shape, f, a in gate_times(fused, apart, run_fused, run_apart, feeds, args.repeat):
            tot_f, tot_a = tot_f + f, tot_a + a
            print(f"| {tuple(shape[1:])} | {a * 1e6:.1f} | {f * 1e6:.1f} | {f / a:.2f}x |")
        print(f"| all | {tot_a * 1e6:.1f} | {tot_f * 1e6:.1f} | {tot_f / tot_a:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
