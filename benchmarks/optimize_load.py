"""Load time of a model saved by `edgelearn optimize` vs the original file, side by side.

Run from the project root:  env -u OPENBLAS_CORETYPE python benchmarks/optimize_load.py [--repeat N]

For each model the original ONNX file and the optimized one (passes run ahead of time, fused ops in
the ``edgelearn`` domain, metadata ``edgelearn.optimized``) are loaded by a Predictor in this one
process, alternately, with one thread; times are thread CPU times, load time the min over
``--repeat`` loads (Predictor construction: parse, shape inference, passes or none, session plan). The batch-1 run time of both (min of 10 runs)
shows the optimized file runs the same graph as the in-process optimized one (max|diff| = 0 when
the same kernels are chosen). Last, the transformer with and without the
``simplify_transpose_reshape`` pass (the K-transpose of each layer composed into one).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgelearn.cli import main as cli  # noqa: E402
from inference import Config, Predictor, zoo  # noqa: E402
from inference.onnx_export import model_to_proto  # noqa: E402

MODELS = {
    "mobilenet_v2": lambda: model_to_proto(zoo.mobilenet_v2()),
    "resnet18": lambda: model_to_proto(zoo.resnet18()),
    "transformer": lambda: model_to_proto(zoo.transformer_encoder()),
    "squeezenet": lambda: zoo.light_model("squeezenet"),
    "shufflenet": lambda: zoo.light_model("shufflenet"),
}


def min_time(fn, repeat: int) -> float:
    """Min over ``repeat`` calls of the calling thread's CPU time: everything runs in this thread
    (one BLAS/numba thread), and CPU time is what other jobs on a shared machine inflate least."""
    best = float("inf")
    for _ in range(repeat):
        t = time.thread_time()
        fn()
        best = min(best, time.thread_time() - t)
    return best


def feeds_of(p: Predictor) -> dict:
    rng = np.random.default_rng(0)
    out = {}
    for name in p.get_input_names():
        shape = [d if isinstance(d, int) else 1 for d in p.get_input_tensor(name).shape]
        out[name] = rng.standard_normal(shape).astype(np.float32)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    print(f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}  load average {os.getloadavg()}")
    print(f"{'model':<14}{'load orig ms':>14}{'load opt ms':>13}{'ratio':>8}{'run orig ms':>13}{'run opt ms':>12}"
          f"{'max|diff|':>11}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in MODELS.items():
            src, dst = os.path.join(tmp, f"{name}.onnx"), os.path.join(tmp, f"{name}.opt.onnx")
            onnx.save(make(), src)
            with open(os.devnull, "w") as null:
                stdout, sys.stdout = sys.stdout, null
                try:
                    cli(["optimize", src, "-o", dst])
                finally:
                    sys.stdout = stdout
            loads = {"orig": float("inf"), "opt": float("inf")}
            for _ in range(args.repeat):  # alternate so load drift hits both sides alike
                for key, path in (("orig", src), ("opt", dst)):
                    loads[key] = min(loads[key], min_time(lambda: Predictor(Config(model_path=path, num_threads=1)), 1))
            p0, p1 = Predictor(Config(model_path=src, num_threads=1)), Predictor(Config(model_path=dst, num_threads=1))
            assert p1.applied_passes == [] and p1.preoptimized is not None
            feeds = feeds_of(p0)
            p0.run(feeds), p1.run(feeds)  # warm-up (numba cache load)
            r0, r1 = min_time(lambda: p0.run(feeds), 10), min_time(lambda: p1.run(feeds), 10)
            diff = max(float(np.abs(a - b).max()) for a, b in zip(p0.run(feeds).values(), p1.run(feeds).values()))
            print(f"{name:<14}{loads['orig'] * 1e3:>14.1f}{loads['opt'] * 1e3:>13.1f}"
                  f"{loads['opt'] / loads['orig']:>8.2f}{r0 * 1e3:>13.2f}{r1 * 1e3:>12.2f}{diff:>11.1e}")
    proto = model_to_proto(zoo.transformer_encoder())
    on = Predictor(Config(model_path=proto, num_threads=1))
    off = Predictor(Config(model_path=proto, num_threads=1, passes={"simplify_transpose_reshape": False}))
    feeds = feeds_of(on)
    on.run(feeds), off.run(feeds)
    t_on, t_off = float("inf"), float("inf")
    for _ in range(10):  # interleaved blocks of 5 runs, min per run
        t_off = min(t_off, min_time(lambda: off.run(feeds), 5))
        t_on = min(t_on, min_time(lambda: on.run(feeds), 5))
    n_on = on.model.graph.op_histogram()["Transpose"]
    n_off = off.model.graph.op_histogram()["Transpose"]
    print(f"transformer batch 1, Transposes {n_off} -> {n_on}: {t_off * 1e3:.2f} ms -> {t_on * 1e3:.2f} ms "
          f"(ratio {t_on / t_off:.3f})")
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
