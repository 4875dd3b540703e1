"""MobileNetV2's inverted residual blocks fused (``edgelearn::InvertedResidualNHWC``) beside the same
blocks run as their two or three convolutions apart (the kernels the fused one replaced).

Run from the project root:  env -u OPENBLAS_CORETYPE python benchmarks/inverted_residual.py [--threads 1,2]

Why: the fused kernel runs each block a band of rows at a time with the expanded rows in a ring in
L2 (``inference/kernels/inverted_residual.py``); apart, each convolution writes its whole output
and the next reads it back. Both sides run our own kernels on the same channels-last arrays, so
the ratio is the fusion's alone. Each round runs all blocks in model order on one side, then on
the other (which side first alternates), so each block's weights and input arrive from L3 as in a
model, never from the other side's call just before; each cell is the median over rounds of one
call (thread time at one thread, wall time at more). At two or more threads the fused call splits
the blocks whose weights outweigh their rows (``weight_bound``) by expanded channels instead of
rows, marked "by channels" here (a block with no expansion runs apart, marked "apart").
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgelearn.commands.bench import time_in_model_order  # noqa: E402
from inference.kernels import inverted_residual as ir  # noqa: E402
from inference.threads import set_num_threads  # noqa: E402
from inference.zoo import MOBILENET_V2_STAGES  # noqa: E402

CLIP6 = dict(expand_activation="Clip", expand_alpha=0.0, expand_beta=6.0, depthwise_activation="Clip",
             depthwise_alpha=0.0, depthwise_beta=6.0)


def blocks(size: int = 224) -> list[tuple]:
    """(H, C in, expanded or None, M out, stride, residual) of MobileNetV2's 17 blocks."""
    out, h, cin = [], size // 2, 32
    for t, c, n, s in MOBILENET_V2_STAGES:
        for i in range(n):
            stride = s if i == 0 else 1
            out.append((h, cin, None if t == 1 else cin * t, c, stride, stride == 1 and cin == c))
            h, cin = -(-h // stride), c
    return out


def arrays(rng, h: int, cin: int, e: int | None, m: int, stride: int, residual: bool, batch: int) -> dict:
    c = cin if e is None else e
    oh = -(-h // stride)
    return dict(x=rng.standard_normal((batch, h, h, cin)).astype(np.float32),
                w1=None if e is None else (rng.standard_normal((1, 1, cin, c)) / np.sqrt(cin)).astype(np.float32),
                b1=None if e is None else rng.standard_normal(c).astype(np.float32),
                wd=(rng.standard_normal((3, 3, 1, c)) / 3).astype(np.float32), bd=rng.standard_normal(c).astype(np.float32),
                w2=(rng.standard_normal((1, 1, c, m)) / np.sqrt(c)).astype(np.float32),
                b2=rng.standard_normal(m).astype(np.float32),
                z=rng.standard_normal((batch, oh, oh, m)).astype(np.float32) if residual else None)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", default="1")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--rounds", type=int, default=30)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    for threads in (int(t) for t in args.threads.split(",")):
        set_num_threads(threads, numba_pool=True)  # as a Predictor sets it for MobileNetV2
        clock = time.thread_time if threads == 1 else time.perf_counter
        cases = []
        for shape in blocks():
            h, cin, e, m, stride, _ = shape
            a = arrays(rng, *shape, args.batch)
            attrs = dict(strides=[stride, stride], pads=[1, 1, 1, 1], **CLIP6)
            fused = ir._binder(ir.inverted_residual_packed, True)(**attrs)
            apart = ir._stages_apart(a["x"].shape, None if e is None else a["w1"].shape, a["w2"].shape,
                                     ir._window((h, h), attrs, "bench", (3, 3)), attrs, True)
            args_ = list(a.values())
            np.testing.assert_allclose(fused(*args_), apart(*args_), rtol=1e-4, atol=1e-4)
            heavy = ir.weight_bound(args.batch * h * h, cin if e else 0, e or cin, m, threads)
            cases.append((shape, fused, apart, args_, heavy))
        times = time_in_model_order([{"fused": lambda f=fused, a=args_: f(*a), "apart": lambda f=apart, a=args_: f(*a)}
                                     for _, fused, apart, args_, _ in cases], args.rounds, clock)
        print(f"\n{threads} thread(s), batch {args.batch}: ms per block, median of {args.rounds} rounds in model order")
        print("| block (H, C -> E -> M, stride) | apart | fused | fused / apart |")
        print("|---|---|---|---|")
        tot_f = tot_a = 0.0
        for (shape, *_, heavy), t in zip(cases, times):
            h, cin, e, m, stride, res = shape
            f, a_ = float(np.median(t["fused"])), float(np.median(t["apart"]))
            tot_f, tot_a = tot_f + f, tot_a + a_
            note = (" (by channels)" if e else " (apart)") if heavy else ""
            print(f"| {h}x{h}, {cin} -> {e or '-'} -> {m}, /{stride}{' +Z' if res else ''} | {a_ * 1e3:.3f} | "
                  f"{f * 1e3:.3f}{note} | {f / a_:.2f}x |")
        print(f"| all | {tot_a * 1e3:.2f} | {tot_f * 1e3:.2f} | {tot_f / tot_a:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
