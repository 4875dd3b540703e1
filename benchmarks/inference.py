"""Inference table: our Predictor vs onnxruntime vs onnx's ReferenceEvaluator, side by side.

Run from the project root:  env -u OPENBLAS_CORETYPE python benchmarks/inference.py [--quick]

Models: MobileNetV2- and ResNet-18-style CNNs (224x224, opset 17, BatchNorm, random weights), a
small transformer encoder (4 layers, 128 tokens, width 256) from ``inference.zoo``, and onnx's
light squeezenet and shufflenet with random real weights in place of their ConstantOfShape ones.
Each (model, batch, threads) cell builds both runtimes in this one process and times them in
interleaved blocks, each after 0.3 s of untimed runs of the same runtime (onnxruntime with its
default graph optimization and the same intra-op thread count); ratios are ours / onnxruntime.
At one thread every runtime computes in the calling thread, so the table also gives the ratio of
*thread CPU time*, which other jobs on a shared machine inflate far less than wall time.
ReferenceEvaluator runs at batch 1 only (seconds per run).
Cold start (import + load + first run in a fresh interpreter) is measured for the MobileNetV2
model with a warm numba cache and with an empty one (the compile time).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgelearn.commands.bench import (add_table_arguments, cold_starts, describe, edgelearn_runner,  # noqa: E402
                                      machine_line, max_abs_diff, peer_runner, random_feeds, time_interleaved)
from inference import Config, Predictor, zoo  # noqa: E402
from inference.onnx_export import model_to_proto  # noqa: E402
from inference.onnx_import import load_model  # noqa: E402

# Each timed block starts after 0.3 s of the same runtime's untimed runs: onnxruntime's and
# OpenBLAS's pools spin after their work and, at 2 threads, steal the next runtime's second core.
SETTLE_S = 0.3

MODELS = {
    "mobilenet_v2": (lambda: model_to_proto(zoo.mobilenet_v2()), (1, 32)),
    "resnet18": (lambda: model_to_proto(zoo.resnet18()), (1, 32)),
    "transformer": (lambda: model_to_proto(zoo.transformer_encoder()), (1, 32)),
    "squeezenet": (lambda: zoo.light_model("squeezenet"), (1,)),  # fixed batch-1 graphs
    "shufflenet": (lambda: zoo.light_model("shufflenet"), (1,)),
}


def _thread_timed(fn):
    """Wrap a runner to record the calling thread's CPU time of each call."""
    cpu: list[float] = []

    def run(feeds):
        t = time.thread_time()
        out = fn(feeds)
        cpu.append(time.thread_time() - t)
        return out

    return run, cpu


def cell(name: str, proto, batch: int, threads: int, repeat: int, with_reference: bool) -> dict:
    model = load_model(proto)
    feeds = random_feeds(model, batch)
    ours, _ = edgelearn_runner(proto, threads)
    ort = peer_runner("onnxruntime", proto, threads)
    (ours_t, ours_cpu), (ort_t, ort_cpu) = _thread_timed(ours), _thread_timed(ort)
    runners = {"edgelearn": ours_t, "onnxruntime": ort_t}
    if with_reference:
        runners["reference"] = peer_runner("reference", proto, threads)
    outs = {"edgelearn": ours(feeds), "onnxruntime": ort(feeds)}
    n = max(3, repeat if batch == 1 else repeat // 4)
    ours_cpu.clear(), ort_cpu.clear()
    tm = time_interleaved(runners, feeds, n, warmup=1, repeats={"reference": 2}, settle_s=SETTLE_S)
    diff, ok = max_abs_diff(outs["edgelearn"], outs["onnxruntime"])
    row = dict(model=name, batch=batch, threads=threads, ours=tm["edgelearn"], ort=tm["onnxruntime"],
               ref=tm.get("reference"), diff=diff, ok=ok,
               cpu_ratio=float(np.median(ours_cpu[1:]) / np.median(ort_cpu[1:])) if threads == 1 else None)
    return row


def fmt(row: dict) -> str:
    o, r, ref = row["ours"], row["ort"], row["ref"]
    ratio = o.median / r.median
    cpu = f"{row['cpu_ratio']:.2f}x" if row["cpu_ratio"] is not None else "-"
    ref_s = f"{ref.median * 1e3:,.0f} | {ref.median / o.median:,.0f}x" if ref is not None else "- | -"
    return (f"| {row['model']} | {row['batch']} | {row['threads']} | {o.median * 1e3:.1f} / {o.p90 * 1e3:.1f} | "
            f"{r.median * 1e3:.1f} / {r.p90 * 1e3:.1f} | {ratio:.2f}x | {cpu} | {ref_s} | "
            f"{row['diff']:.1e} {'ok' if row['ok'] else 'FAIL'} |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_table_arguments(p, MODELS)
    p.add_argument("--no-reference", action="store_true")
    p.add_argument("--no-cold-start", action="store_true")
    args = p.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    print(machine_line())
    print("| model | batch | threads | ours ms (median / p90) | onnxruntime ms (median / p90) | ours/ort "
          "| ours/ort CPU | ReferenceEvaluator ms | ref/ours | max abs diff vs ort |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        build, batches = MODELS[name]
        proto = build()
        for b in (batches[:1] if args.quick else batches):
            for t in threads:
                with_ref = b == 1 and t == 1 and not args.no_reference
                print(fmt(cell(name, proto, b, t, 5 if args.quick else args.repeat, with_ref)), flush=True)
    print(f"load average at end: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    for name in ("mobilenet_v2", "resnet18"):  # the CNNs' target: planned activations >= 40% below no reuse
        if name in args.models.split(","):
            plan = Predictor(Config(model_path=MODELS[name][0]().SerializeToString())).memory_plan(32)
            print(f"{name} at batch 32: {plan.report()}")
    if not args.no_cold_start:
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "mobilenet_v2.onnx")
            with open(path, "wb") as f:
                f.write(MODELS["mobilenet_v2"][0]().SerializeToString())
            cold = cold_starts(path)
        print(f"cold start mobilenet_v2 (import + load + first run, 1 thread): {describe(cold)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
