"""Elementwise math kernels (``inference.kernels.unary_math``) against numpy's ufuncs and onnxruntime.

Run from the project root:  env -u OPENBLAS_CORETYPE python benchmarks/unary_math.py [--rounds 15] [--ops Tanh,Exp]

Why: these ops ran as numpy ufuncs, which kernel replay cannot repeat; a fast kernel only pays
if it is not slower than the ufunc it replaces on large tensors (at 1K elements the Python
around a step is most of the time either way, and the replay removes ours). Per op, tensor size
(1K, 64K, 1M float32 elements, standard normal; positive for Log and Sqrt) and thread count:
``ours`` the fast kernel's call (as a session step makes it, without an arena: a fresh output),
``numpy`` the bare ufunc expression the reference op computes (without its dtype wrapper),
``ort`` a one-node onnxruntime model (``intra_op_num_threads`` = threads), microseconds per
call, the median over ``--rounds`` interleaved rounds (every runner once per round, each round
``inner`` calls; the machine is shared), and the ratios ours/numpy and ours/ort. numpy is
single-threaded at both counts; ours runs its parallel twin at 2 threads (numba as the threaded
pool, as :func:`inference.threads.set_num_threads` sets it for a numba-only graph); onnxruntime's
pool does not spin (its spinning workers, interleaved with numba's, made either side's 2-thread
times 10-500x). Tanh and Log above ``unary_math.NUMPY_ABOVE`` elements per thread are numpy's
ufunc in ours too (see that module).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.append(str(Path(__file__).resolve().parent))  # after the packages: benchmarks/inference.py is a script

from inference.ops.activation import SELU_ALPHA, SELU_GAMMA  # noqa: E402
from inference.ops.registry import lookup  # noqa: E402
from inference.threads import set_num_threads  # noqa: E402
from overhead import one_node  # noqa: E402

_TWO = np.array([2.0], np.float32)
_THREE = np.array([3.0], np.float32)
_HALF = np.array([0.5], np.float32)

#: op -> (attributes, exponent for Pow or None, numpy's expression of the reference)
CASES: dict[str, tuple[dict, np.ndarray | None, Callable[[np.ndarray], np.ndarray]]] = {
    "Tanh": ({}, None, np.tanh),
    "Exp": ({}, None, np.exp),
    "Log": ({}, None, np.log),
    "Softplus": ({}, None, lambda x: np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0)),
    "Elu": ({}, None, lambda x: np.where(x > 0, x, np.expm1(x))),
    "Selu": ({}, None, lambda x: np.float32(SELU_GAMMA) * np.where(x > 0, x, np.float32(SELU_ALPHA) * np.expm1(x))),
    "Celu": ({"alpha": 1.0}, None, lambda x: np.maximum(x, 0) + np.minimum(0, np.expm1(x))),
    "Sqrt": ({}, None, np.sqrt),
    "Abs": ({}, None, np.abs),
    "Neg": ({}, None, np.negative),
    "Reciprocal": ({}, None, np.reciprocal),
    "Softsign": ({}, None, lambda x: x / (1 + np.abs(x))),
    "Floor": ({}, None, np.floor),
    "Ceil": ({}, None, np.ceil),
    "Round": ({}, None, np.round),
    "Pow^2": ({}, _TWO, lambda x: np.power(x, _TWO)),
    "Pow^3": ({}, _THREE, lambda x: np.power(x, _THREE)),
    "Pow^0.5": ({}, _HALF, lambda x: np.power(x, _HALF)),
}
SIZES = (1 << 10, 1 << 16, 1 << 20)


def median_times(runners: dict[str, Callable[[], object]], rounds: int, inner: int) -> dict[str, float]:
    """Median over ``rounds`` interleaved rounds of the wall microseconds per call of ``inner`` calls."""
    for f in runners.values():
        for _ in range(3):
            f()
    times: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(rounds):
        for k, f in runners.items():
            t = time.perf_counter()
            for _ in range(inner):
                f()
            times[k].append((time.perf_counter() - t) / inner * 1e6)
    return {k: statistics.median(v) for k, v in times.items()}


def ort_session(op: str, x: np.ndarray, attrs: dict, exponent: np.ndarray | None, threads: int):
    import onnxruntime as ort

    consts = {} if exponent is None else {"e": exponent}
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # its pool and numba's alternate
    sess = ort.InferenceSession(one_node(op.split("^")[0], {"x": x}, consts, **attrs), opts,
                                providers=["CPUExecutionProvider"])
    return lambda: sess.run(None, {"x": x})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=15, help="interleaved timed rounds (median taken)")
    p.add_argument("--ops", default=",".join(CASES), help="comma-separated ops (Pow^2, Pow^3, Pow^0.5 for Pow)")
    p.add_argument("--threads", default="1,2")
    args = p.parse_args()
    print(f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}, "
          f"load avg {' '.join(f'{v:.2f}' for v in os.getloadavg())}\n")
    print("| op | elements | threads | ours us | numpy us | ort us | ours/numpy | ours/ort |")
    print("|---|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for op in args.ops.split(","):
        attrs, exponent, numpy_fn = CASES[op]
        fast = lookup(op.split("^")[0], "", 17, "fast").fn
        for n in SIZES:
            x = rng.standard_normal(n).astype(np.float32)
            if op in ("Log", "Sqrt", "Pow^0.5"):
                x = np.abs(x) + np.float32(0.01)
            ours = (lambda: fast(x, exponent)) if exponent is not None else (lambda: fast(x, **attrs))
            with np.errstate(all="ignore"):
                np.testing.assert_allclose(ours(), numpy_fn(x), rtol=1e-6, atol=1e-30)
            for threads in (int(t) for t in args.threads.split(",")):
                set_num_threads(threads, numba_pool=True)
                runners = {"ours": ours, "numpy": lambda: numpy_fn(x),
                           "ort": ort_session(op, x, attrs, exponent, threads)}
                t = median_times(runners, args.rounds, max(3, 4_000_000 // (n * 8 + 4000)))
                print(f"| {op} | {n} | {threads} | {t['ours']:.1f} | {t['numpy']:.1f} | {t['ort']:.1f} | "
                      f"{t['ours'] / t['numpy']:.2f} | {t['ours'] / t['ort']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
