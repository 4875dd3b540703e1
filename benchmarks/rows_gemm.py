"""The channels-last GEMM tile (``inference.kernels.rows_gemm``) beside the OpenBLAS GEMM it replaced.

Run from the project root:  env -u OPENBLAS_CORETYPE python benchmarks/rows_gemm.py [--reps 30]

Why: MobileNetV2's channels-last 1x1 convolutions and the transformer's constant-weight products
run on the tile instead of ``np.matmul`` followed by the epilogue pass (bias, Clip or residual); this
prints both per layer shape. Shapes run in model order, every layer once per round, so each
layer's weights arrive from L3 as in a model (one layer timed over and over keeps its weights in
L2, which flatters whichever side reads them more). Each cell: min over rounds, one call. One
thread only: at two, each side wants its own pool threaded (OpenBLAS's or numba's), and alternating
them in one process makes the idle one spin against the other; ``benchmarks/inference.py`` has
the models at two threads.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference.kernels.activations import CLIP, NONE, epilogue_cols  # noqa: E402
from inference.kernels.rows_gemm import gemm_rows  # noqa: E402
from inference.kernels.tile_lanes import clamp_epilogue  # noqa: E402
from inference.threads import set_num_threads  # noqa: E402

# (pixels or tokens, K, M, activation code): MobileNetV2's pointwise layers at batch 1, then the
# transformer encoder's projections (128 tokens; the residual products are timed without Z)
LAYERS = {
    "mobilenet_v2": [(12544, 32, 16), (12544, 16, 96), (3136, 96, 24), (3136, 24, 144), (3136, 144, 24),
                     (784, 144, 32), (784, 32, 192), (784, 192, 32), (196, 192, 64), (196, 64, 384),
                     (196, 384, 64), (196, 384, 96), (196, 96, 576), (196, 576, 96), (49, 576, 160),
                     (49, 160, 960), (49, 960, 160), (49, 960, 320), (49, 320, 1280)],
    "transformer": [(128, 256, 256), (128, 256, 1024), (128, 1024, 256)],
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=30)
    args = p.parse_args()
    set_num_threads(1)
    rng = np.random.default_rng(0)
    code = {"mobilenet_v2": CLIP, "transformer": NONE}
    print(f"one thread; ms per call, min of {args.reps} rounds in model order")
    print("| model | P x K -> M | OpenBLAS + epilogue | tile | tile / BLAS |")
    print("|---|---|---|---|---|")
    for model, shapes in LAYERS.items():
        c = code[model]
        _, lo, hi = clamp_epilogue(c, 0.0, 6.0)
        data = [(rng.standard_normal((p_, k)).astype(np.float32), rng.standard_normal((k, m)).astype(np.float32),
                 rng.standard_normal(m).astype(np.float32)) for p_, k, m in shapes]
        no_z = np.empty((1, 1), np.float32)

        def blas(a, w, b):
            y = np.matmul(a, w)
            epilogue_cols(y, b, no_z, False, c, 0.0, 6.0)
            return y

        def tile(a, w, b):
            return gemm_rows(a, w, b, None, lo, hi, keep_for=w)

        for a, w, b in data:  # same results, and the tile's panels built before timing
            np.testing.assert_allclose(tile(a, w, b), blas(a, w, b), rtol=1e-3, atol=1e-3)
        best = {"blas": [np.inf] * len(data), "tile": [np.inf] * len(data)}
        for _ in range(args.reps):
            for name, fn in (("blas", blas), ("tile", tile)):
                for i, (a, w, b) in enumerate(data):
                    t = time.perf_counter()
                    fn(a, w, b)
                    best[name][i] = min(best[name][i], time.perf_counter() - t)
        for (p_, k, m), tb, tt in zip(shapes, best["blas"], best["tile"]):
            print(f"| {model} | {p_} x {k} -> {m} | {tb * 1e3:.3f} | {tt * 1e3:.3f} | {tt / tb:.2f}x |")
        tb, tt = sum(best["blas"]), sum(best["tile"])
        print(f"| {model} | all | {tb * 1e3:.3f} | {tt * 1e3:.3f} | {tt / tb:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
