"""Resident memory a loaded model costs: our Predictor with its packed weights held once (the
default, ``inference.weight_release``), the same keeping the originals beside their panels, and
onnxruntime; each in a fresh process, import first, then load and run batch 1 (and batch 32).

Run from the project root:  env -u OPENBLAS_CORETYPE python benchmarks/weight_memory.py [--repeat 3]
Prints the RSS growth from before the load to after the runs (MB; the median over ``--repeat``
processes; onnxruntime's and numba's libraries are imported before, our kernels' machine code
loads with the first run and counts) and what our graph's weights and their packings hold.
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODELS = ("mobilenet_v2", "resnet18", "squeezenet", "shufflenet")
RUNTIMES = ("held once", "kept twice", "onnxruntime")


def child(name: str, runtime: str, batches: list[int]) -> dict:
    """In this (fresh) process: RSS growth of loading ``name`` and running it at ``batches``."""
    import numpy as np
    import onnxruntime as ort

    from inference import Config, Predictor, zoo
    from inference.kernels._prepack import is_released, packings
    from inference.onnx_export import model_to_proto
    from inference.rss import current_rss_mb
    from inference.weight_release import return_free_memory

    proto = model_to_proto(getattr(zoo, name)()) if name in ("mobilenet_v2", "resnet18") else zoo.light_model(name)
    data = proto.SerializeToString()
    inp = proto.graph.input[0].name
    gc.collect()
    return_free_memory()  # what building the model freed is not counted as saved by anyone's later trim
    before = current_rss_mb()
    if runtime == "onnxruntime":
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
        run = lambda feeds: sess.run(None, feeds)  # noqa: E731
    else:
        pred = Predictor(Config(model_path=data, num_threads=1, release_weights=runtime == "held once"))
        run = pred.run
    del data
    grown = {}
    for b in batches:
        run({inp: np.random.default_rng(b).standard_normal(zoo.input_shape(name, b)).astype(np.float32)})
        grown[b] = current_rss_mb() - before
    held = None
    if runtime != "onnxruntime":
        inits = pred.model.graph.initializers.values()
        originals = sum(a.nbytes for a in inits if not is_released(a))
        packed = {id(v): v for a in inits for p in packings(a).values() for v in _arrays(p)}
        held = (originals + sum(v.nbytes for v in packed.values())) / 1e6
    return {"grown": grown, "held": held}


def _arrays(value) -> list:
    import numpy as np

    if isinstance(value, np.ndarray):
        return [value.base if isinstance(value.base, np.ndarray) else value]
    if isinstance(value, (tuple, list)):
        return [a for v in value for a in _arrays(v)]
    return []


def _child_run(name: str, runtime: str, batches: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", name, runtime, batches], capture_output=True,
                         text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        name, runtime, batches = args.child
        print(json.dumps(child(name, runtime, [int(b) for b in batches.split(",")])))
        return 0
    print("| model | batch | held once MB | kept twice MB | onnxruntime MB | held once / onnxruntime | "
          "our weights held once / twice MB |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        batches = "1,32" if name in ("mobilenet_v2", "resnet18") else "1"
        results = {r: [] for r in RUNTIMES}
        _child_run(name, RUNTIMES[0], batches)  # untimed: numba's cache filled, no later process compiles
        for _ in range(args.repeat):
            for r in RUNTIMES:  # alternating, so a slow drift of the machine spreads over all three
                results[r].append(_child_run(name, r, batches))
        for b in batches.split(","):
            mb = {r: statistics.median(x["grown"][b] for x in results[r]) for r in RUNTIMES}
            held = [results[r][0]["held"] for r in RUNTIMES[:2]]
            print(f"| {name} | {b} | {mb['held once']:.0f} | {mb['kept twice']:.0f} | {mb['onnxruntime']:.0f} | "
                  f"{mb['held once'] / mb['onnxruntime']:.2f}x | {held[0]:.1f} / {held[1]:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
