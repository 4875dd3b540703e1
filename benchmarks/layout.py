"""Layout pass table: our Predictor with ``layout_nhwc`` on vs off, onnxruntime beside them.

Run from the project root:  env -u OPENBLAS_CORETYPE python benchmarks/layout.py [--quick]

MobileNetV2- and ResNet-18-style models (``inference.zoo``, 224x224): batch 1 at one and two
threads, batch 32 at one (``--full``: two as well; it doubles the run time). Per cell every runtime
is built in this process and timed in interleaved blocks of one run (so bursts of other jobs' load
spread over all of them); the table gives the minimum of N runs, the ratio off/on (> 1: the pass is
faster; in brackets for each converted variant) and on/onnxruntime. ``forced`` runs the pass with
its profitability rule switched off (every convertible region converted) to show what the rule
declines. A variant whose graph equals another's (``= on``) is not timed twice: on both models the
rule converts what forcing does. At two threads the table mostly shows our BLAS and numba pools fighting
for the cores (see ``inference/kernels/_jit.py``); one thread is the layout comparison.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgelearn.commands.bench import max_abs_diff, peer_runner, random_feeds, time_interleaved  # noqa: E402
from inference import Config, Predictor, zoo  # noqa: E402
from inference.onnx_export import model_to_proto  # noqa: E402
from inference.onnx_import import load_model  # noqa: E402
from inference.passes import layout  # noqa: E402

MODELS = {"mobilenet_v2": zoo.mobilenet_v2, "resnet18": zoo.resnet18}


def ours(proto, threads: int, on: bool, forced: bool = False):
    """A runner of our Predictor; ``forced`` builds it with the profitability threshold at zero."""
    saved = layout.MIN_DEPTHWISE_PER_BOUNDARY, layout.MIN_GEMM_MACS_PER_BOUNDARY
    if forced:
        layout.MIN_DEPTHWISE_PER_BOUNDARY = layout.MIN_GEMM_MACS_PER_BOUNDARY = 0.0
    try:
        pred = Predictor(Config(model_path=proto, num_threads=threads, passes={"layout_nhwc": on}))
    finally:
        layout.MIN_DEPTHWISE_PER_BOUNDARY, layout.MIN_GEMM_MACS_PER_BOUNDARY = saved
    name = pred.get_output_names()[0]
    converted = sum(n.op_type == layout.OP for n in pred.model.graph.nodes)
    return (lambda feeds: [pred.run(feeds)[name]]), converted


def cell(name: str, proto, batch: int, threads: int, repeat: int) -> str:
    feeds = random_feeds(load_model(proto), batch)
    runners, converted = {}, {}
    for label, on, forced in (("off", False, False), ("on", True, False), ("forced", True, True)):
        runners[label], converted[label] = ours(proto, threads, on, forced)
    same = {"on": "off" if converted["on"] == 0 else None,
            "forced": "on" if converted["forced"] == converted["on"] else None}
    for label, twin in same.items():
        if twin:  # the same graph as its twin: not timed twice
            del runners[label]
    runners["onnxruntime"] = peer_runner("onnxruntime", proto, threads)
    outs = {k: fn(feeds) for k, fn in runners.items()}  # also the warm-up run
    t = {k: min(v.times) for k, v in time_interleaved(runners, feeds, repeat, warmup=0, block=1).items()}
    diff = max(max_abs_diff(outs[k], outs["onnxruntime"])[0] for k in outs)
    for label, twin in same.items():
        if twin:
            t[label] = t[twin]

    def col(label: str) -> str:
        if same[label]:
            return f"= {same[label]}"
        return f"{t[label] * 1e3:.1f} ({converted[label]} convs, {t['off'] / t[label]:.2f}x)"

    return (f"| {name} | {batch} | {threads} | {t['off'] * 1e3:.1f} | {col('on')} | {col('forced')} | "
            f"{t['onnxruntime'] * 1e3:.1f} | **{t['off'] / t['on']:.2f}x** | {t['on'] / t['onnxruntime']:.2f}x | "
            f"{diff:.1e} |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--batches", default="1,32")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--repeat", type=int, default=9, help="timed runs per runtime at batch 1 (larger batches: 2)")
    p.add_argument("--full", action="store_true", help="every thread count at every batch (default: batches "
                   "above 1 at one thread only, which keeps the run under ~3 minutes)")
    p.add_argument("--quick", action="store_true", help="batch 1, one thread, 5 runs")
    args = p.parse_args()
    batches = [1] if args.quick else [int(b) for b in args.batches.split(",")]
    threads = [1] if args.quick else [int(t) for t in args.threads.split(",")]
    repeat = 5 if args.quick else args.repeat
    print(f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}  cores={os.cpu_count()}  "
          f"load average at start: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print(f"rule: depthwise output elements >= {layout.MIN_DEPTHWISE_PER_BOUNDARY} x boundary-transposed elements, "
          f"or other convolutions' multiply-adds >= {layout.MIN_GEMM_MACS_PER_BOUNDARY:.0f} x them")
    print("| model | batch | threads | off ms | on ms | forced ms | onnxruntime ms | off/on | on/ort | max abs diff |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        proto = model_to_proto(MODELS[name]())
        for b in batches:
            for th in (threads if b == 1 or args.full else threads[:1]):
                print(cell(name, proto, b, th, repeat if b == 1 else 2), flush=True)
    print(f"load average at end: {' '.join(f'{v:.1f}' for v in os.getloadavg())}  (min of N runs per cell)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
