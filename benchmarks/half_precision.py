"""Half-precision models: our Predictor vs onnxruntime on float16 ONNX files, and each on the
float32 twin (the same weights, upcast), side by side in one run.

Run from the project root:  env -u OPENBLAS_CORETYPE python benchmarks/half_precision.py [--quick]

A model converted to float16 throughout (weights, inputs, outputs, every activation) is what a
half-precision export or onnxconverter's ``convert_float_to_float16`` writes. This CPU has no fast
float16 arithmetic: we widen such a graph to float32 (``inference.passes.widen_float16``) and
round at its outputs; onnxruntime runs its float16 kernels where it has them and casts around
the rest. The models are ``inference.zoo``'s MobileNetV2, ResNet-18 and transformer and onnx's
light squeezenet, random weights rounded to float16. Error columns: the largest difference from
the float32 twin's output (computed by onnxruntime in float32 on the same half inputs), as a
fraction of that output's largest magnitude; float16's own rounding of it is ~2.4e-4 (half an ulp
at 1). Ratios are ours / onnxruntime; medians of interleaved blocks, each after 0.3 s of the same
runtime's untimed runs.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from edgelearn.commands.bench import (add_table_arguments, edgelearn_runner, machine_line, peer_runner,  # noqa: E402
                                      random_feeds, time_interleaved)
from inference import zoo  # noqa: E402
from inference.onnx_export import model_to_proto  # noqa: E402
from inference.onnx_import import load_model  # noqa: E402

SETTLE_S = 0.3
MODELS = {
    "mobilenet_v2": (zoo.mobilenet_v2, (1, 32)),
    "resnet18": (zoo.resnet18, (1, 32)),
    "transformer": (zoo.transformer_encoder, (1, 32)),
    "squeezenet": (lambda: load_model(zoo.light_model("squeezenet")), (1,)),
}


def _relative_error(got: np.ndarray, exact: np.ndarray) -> float:
    return float(np.abs(got.astype(np.float64) - exact).max() / max(np.abs(exact).max(), 1e-30))


def cell(name: str, batch: int, threads: int, repeat: int) -> str:
    build = MODELS[name][0]
    half = model_to_proto(zoo.with_float_type(build(), np.float16))
    twin = model_to_proto(zoo.with_float_type(zoo.with_float_type(build(), np.float16), np.float32))
    feeds16 = random_feeds(load_model(half), batch)
    feeds32 = {k: v.astype(np.float32) for k, v in feeds16.items()}
    ours16, _ = edgelearn_runner(half, threads)
    ort16 = peer_runner("onnxruntime", half, threads)
    ours32, _ = edgelearn_runner(twin, threads)
    ort32 = peer_runner("onnxruntime", twin, threads)
    exact = ort32(feeds32)[0].astype(np.float64)
    err_ours, err_ort = (_relative_error(run(feeds16)[0], exact) for run in (ours16, ort16))
    runners = {"ours16": ours16, "ort16": ort16,
               "ours32": lambda _: ours32(feeds32), "ort32": lambda _: ort32(feeds32)}
    t = time_interleaved(runners, feeds16, max(3, repeat if batch == 1 else repeat // 4), warmup=1,
                         settle_s=SETTLE_S)
    ms = {k: v.median * 1e3 for k, v in t.items()}
    return (f"| {name} | {batch} | {threads} | {ms['ours16']:.2f} | {ms['ort16']:.2f} | "
            f"{ms['ours16'] / ms['ort16']:.2f}x | {ms['ours32']:.2f} | {ms['ort32']:.2f} | "
            f"{err_ours:.1e} | {err_ort:.1e} |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_table_arguments(p, MODELS)
    args = p.parse_args()
    print(machine_line())
    print("| model | batch | threads | ours fp16 ms | onnxruntime fp16 ms | ours/ort | ours fp32 twin ms "
          "| onnxruntime fp32 twin ms | ours error | onnxruntime error |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        batches = MODELS[name][1]
        for b in batches[:1] if args.quick else batches:
            for t in (int(x) for x in args.threads.split(",")):
                print(cell(name, b, t, 5 if args.quick else args.repeat), flush=True)
    print(f"load average at end: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
