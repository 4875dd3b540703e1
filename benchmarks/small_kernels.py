"""Small-node kernels side by side: direct 3x3 conv vs the tile and im2col + BLAS, 2x2/2 pool vs the general one.

Run from the project root:  env -u OPENBLAS_CORETYPE python benchmarks/small_kernels.py [--quick]

Why: the size rule of ``inference.kernels.direct_conv.prefer_direct`` (which conv goes direct) and the
specialised 2x2 stride-2 pool are justified by these numbers. Batch 1, one thread, 3x3 pad-1 stride-1
convs with bias + Relu over input channels, output channels and map sizes; each cell is the min over
``--reps`` blocks of the calling thread's CPU time (the machine is shared: CPU time is inflated less by
other jobs than wall time), the variants timed in alternating blocks. The other paths: ``tile`` is the
float32 implicit-GEMM tile with its weight packing kept (``inference.kernels.conv_f32``: what a
Predictor runs for a constant weight the rule sends away from the direct kernel), ``BLAS`` im2col +
numpy's GEMM (what a conv whose weight changes, as in training, runs). ``picked`` is the one the
runtime uses for a constant weight; a row where it is the slower by more than noise means the rule
needs a look.
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.append(str(Path(__file__).resolve().parent))  # after the packages: benchmarks/inference.py is a script

from inference.kernels import conv, conv_f32, pool  # noqa: E402
from inference.kernels.activations import RELU  # noqa: E402
from inference.kernels.direct_conv import prefer_direct  # noqa: E402
from inference.ops._window import window_geometry  # noqa: E402
from inference.threads import set_num_threads  # noqa: E402
from overhead import min_times  # noqa: E402


def cpu_us(fns: dict[str, Callable[[], object]], reps: int, inner: int) -> dict[str, float]:
    """Min over ``reps`` alternating blocks of ``inner`` calls: thread CPU microseconds per call."""
    return {k: v * 1e6 for k, v in min_times(fns, reps, inner, clock=time.thread_time).items()}


def conv_rows(sizes, args) -> None:
    print("| C_in | C_out | map | MMAC | tile us | BLAS us | direct us | tile/direct | picked |")
    print("|---|---|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for c, m, h in sizes:
        x = rng.standard_normal((1, c, h, h)).astype(np.float32)
        w = rng.standard_normal((m, c, 3, 3)).astype(np.float32)
        b = rng.standard_normal(m).astype(np.float32)
        win = window_geometry((h, h), (3, 3), (1, 1), (1, 1), (1, 1, 1, 1), "NOTSET", 0, "Conv")
        tiled = conv_f32.prepare_tiles(x.shape, w.shape, conv.tile_plan(x.shape, w.shape, win, 1), 1, RELU,
                                       keep_packing=True)
        runs = {"tile": lambda: tiled(x, w, b, None),
                "blas": lambda: conv.conv2d(x, w, b, None, win, 1, RELU, allow_direct=False),
                "direct": lambda: conv.conv2d_direct(x, w, b, None, win, RELU, 0.0, 0.0)}
        for run in ("tile", "blas"):
            np.testing.assert_allclose(runs["direct"](), runs[run](), rtol=1e-4, atol=1e-3)
        t = cpu_us(runs, args.reps, max(5, 20000 // (c * m * h * h // 1000 + 10)))
        pick = "direct" if prefer_direct(c, m, 3, 3, 1, 1, h, h, 1) else "tile"
        print(f"| {c} | {m} | {h}x{h} | {c * m * 9 * h * h / 1e6:.2f} | {t['tile']:.1f} | {t['blas']:.1f} | "
              f"{t['direct']:.1f} | {t['tile'] / t['direct']:.2f}x | {pick} |", flush=True)


def pool_rows(sizes, args) -> None:
    print("\n| MaxPool 2x2/2 input | general kernel us | 2x2 kernel us | ratio |\n|---|---|---|---|")
    rng = np.random.default_rng(0)
    for c, h in sizes:
        x = rng.standard_normal((1, c, h, h)).astype(np.float32)
        y = np.empty((1, c, h // 2, h // 2), np.float32)
        general = lambda: pool.pool2d_unpadded(x, 2, 2, 2, 2, 1, 1, y, True)  # noqa: E731
        special = lambda: pool.pool2x2s2(x, y, True)  # noqa: E731
        t = cpu_us({"general": general, "special": special}, args.reps, max(20, 200000 // (c * h * h)))
        print(f"| 1x{c}x{h}x{h} | {t['general']:.2f} | {t['special']:.2f} | {t['general'] / t['special']:.1f}x |",
              flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=9, help="alternating timed blocks (min taken)")
    p.add_argument("--quick", action="store_true", help="the MNIST CNN's shapes and a few around them")
    args = p.parse_args()
    set_num_threads(1)
    print(f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}, 1 thread, "
          f"load avg {' '.join(f'{v:.2f}' for v in os.getloadavg())}\n")
    if args.quick:
        sizes = [(1, 8, 28), (1, 16, 28), (8, 16, 14), (16, 32, 14), (16, 64, 14), (3, 32, 56)]
    else:
        sizes = list(itertools.product((1, 3, 8, 16, 32, 64), (8, 16, 32, 64, 128), (7, 14, 28, 56)))
    conv_rows(sizes, args)
    pool_rows([(8, 28), (16, 28), (16, 14), (32, 14), (64, 56)], args)


if __name__ == "__main__":
    main()
