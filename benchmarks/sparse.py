"""Dense (BLAS) vs sparse (CSR, ``inference.kernels.sparse``) kernels per layer shape and sparsity.

Run from the project root:  env -u OPENBLAS_CORETYPE python benchmarks/sparse.py [--threads 1] [--repeat 15]

For each layer shape and each fraction of zeros (weights zeroed at random positions, as
magnitude pruning of random-like weights leaves them) it times the kernel the session runs when
the weight is dense (BLAS GEMM: ``np.matmul`` for MatMul/Gemm, im2col + GEMM for Conv) against
the sparse kernel, min of ``--repeat`` interleaved runs, checks both give the same output, and
prints dense/sparse (> 1: sparse wins) and the crossover: the lowest sparsity from which sparse
wins at every measured level. ``MATMUL_SPARSITY``/``CONV_SPARSITY`` in the kernel module are set
from these crossovers. A "rows" table times the two sparse matrix-product loops by batch rows
(``GATHER_MAX_ROWS``). Both sides run on the same thread count (BLAS and numba capped together).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import inference.kernels  # noqa: E402,F401
from inference.kernels import conv as fast_conv  # noqa: E402
from inference.kernels import sparse as S  # noqa: E402
from inference.kernels._jit import use_parallel_kernels  # noqa: E402
from inference.ops.matmul import matmul as dense_matmul  # noqa: E402
from inference.threads import set_num_threads  # noqa: E402

SPARSITIES = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98)
# (label, kind, input shape, weight shape, conv attrs)
SHAPES = [
    ("Gemm 1x1024 @ 1024x1024", "matmul", (1, 1024), (1024, 1024), {}),
    ("Gemm 32x1024 @ 1024x1024", "matmul", (32, 1024), (1024, 1024), {}),
    ("Conv 3x3 64->64 56x56", "conv", (1, 64, 56, 56), (64, 64, 3, 3), {"pads": [1, 1, 1, 1]}),
    ("Conv 1x1 256->256 28x28", "conv", (1, 256, 28, 28), (256, 256, 1, 1), {}),
]


def sparse_weight(shape: tuple, zeros: float, rng: np.random.Generator) -> np.ndarray:
    """Random weights with exactly ``round(zeros * size)`` of them zeroed at random positions."""
    w = rng.standard_normal(shape).astype(np.float32)
    flat = w.reshape(-1)
    flat[rng.permutation(flat.size)[:int(round(zeros * flat.size))]] = 0
    return w


def min_time(fns: list[Callable[[], object]], repeat: int) -> list[float]:
    """Min seconds of each function over ``repeat`` interleaved rounds (after one warm-up each)."""
    for f in fns:
        f()
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, f in enumerate(fns):
            t = time.perf_counter()
            f()
            best[i] = min(best[i], time.perf_counter() - t)
    return best


def pair(kind: str, x: np.ndarray, w: np.ndarray, attrs: dict) -> tuple[Callable, Callable]:
    """(dense, sparse) callables for one layer; the sparse weight is packed before timing, as the
    session packs it when it plans."""
    if kind == "matmul":
        S.packed(w, "matmul")
        return (lambda: dense_matmul(x, w)), (lambda: S.matmul(x, w))
    S.packed(w, "conv")
    return (lambda: fast_conv.conv(x, w, None, **attrs)), (lambda: S.conv(x, w, None, **attrs))


def crossover(ratios: list[float]) -> str:
    """The lowest sparsity from which every measured ratio is > 1."""
    best = None
    for s, r in zip(reversed(SPARSITIES), reversed(ratios)):
        if r <= 1.0:
            break
        best = s
    return f"{best:.0%}" if best is not None else "none"


def shape_table(repeat: int, rng: np.random.Generator) -> None:
    """Per layer: the dense time (min over every round of every level: BLAS does not care how many
    zeros it multiplies, so more rounds only sharpen its min) and the sparse time per level."""
    head = "".join(f"{s:>8.0%}" for s in SPARSITIES)
    print(f"\n{'layer':<26}{'dense ms':>9} | sparse ms at sparsity")
    print(f"{'':<26}{'':>9} | {head}")
    for label, kind, xs, ws, attrs in SHAPES:
        x = rng.standard_normal(xs).astype(np.float32)
        dense_s, sparse_s = float("inf"), []
        for s in SPARSITIES:
            w = sparse_weight(ws, s, rng)
            fd, fs = pair(kind, x, w, attrs)
            np.testing.assert_allclose(fs(), fd(), rtol=1e-4, atol=1e-3)
            td, ts = min_time([fd, fs], repeat)
            dense_s = min(dense_s, td)
            sparse_s.append(ts)
        ratios = [dense_s / t for t in sparse_s]
        print(f"{label:<26}{dense_s * 1e3:>9.3f} | " + "".join(f"{t * 1e3:>8.3f}" for t in sparse_s))
        print(f"{'  dense/sparse':<26}{'':>9} | " + "".join(f"{r:>7.2f}x" for r in ratios)
              + f"   crossover: {crossover(ratios)}")


def rows_table(repeat: int, rng: np.random.Generator) -> None:
    """The two sparse matrix-product loops by batch rows, 1024x1024 at 90% zeros."""
    w = sparse_weight((1024, 1024), 0.9, rng)
    csr = S.packed(w, "matmul")
    print("\nsparse MatMul loops, 1024x1024 at 90% zeros: gather-dot vs transposed direct (ms)")
    for nr in (1, 2, 4, 8, 16, 32):
        x = rng.standard_normal((nr, 1024)).astype(np.float32)
        y1 = np.empty((nr, 1024), np.float32)

        def gather():
            S.sparse_gather(x, csr.indptr, csr.chan, csr.vals, y1)

        def direct():
            y2 = np.empty((1024, nr), np.float32)
            S.sparse_rows(np.ascontiguousarray(x.T).reshape(-1), nr, 0, csr.indptr, csr.chan, csr.ti, csr.tj,
                          csr.vals, y2)
            return np.ascontiguousarray(y2.T)

        tg, td = min_time([gather, direct], repeat)
        print(f"  rows {nr:>3}: gather {tg * 1e3:7.3f}  direct {td * 1e3:7.3f}  gather/direct {tg / td:5.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="BLAS and numba threads (both sides)")
    ap.add_argument("--repeat", type=int, default=15, help="timed rounds per kernel (min is reported)")
    args = ap.parse_args()
    set_num_threads(args.threads)
    use_parallel_kernels(args.threads > 1)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    S.matmul(np.ones((1, 8), np.float32), sparse_weight((8, 8), 0.5, rng))  # numba cache load / compile
    S.matmul(np.ones((8, 8), np.float32), sparse_weight((8, 8), 0.5, rng))
    S.conv(np.ones((1, 2, 5, 5), np.float32), sparse_weight((2, 2, 3, 3), 0.5, rng), None, pads=[1, 1, 1, 1])
    cold = time.perf_counter() - t0
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, threads={args.threads}, "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')}, load {os.getloadavg()}")
    print(f"# sparse kernels first call (numba cache load or compile): {cold:.2f} s")
    shape_table(args.repeat, rng)
    rows_table(args.repeat, rng)
    print(f"\n# session thresholds: MATMUL_SPARSITY={S.MATMUL_SPARSITY:.0%} "
          f"POINTWISE_SPARSITY={S.POINTWISE_SPARSITY:.0%} CONV_SPARSITY={S.CONV_SPARSITY:.0%} "
          f"GATHER_MAX_ROWS={S.GATHER_MAX_ROWS}; load after {os.getloadavg()}")


if __name__ == "__main__":
    main()
