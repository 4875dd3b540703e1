"""Patch-embedding convolutions (kernel = stride, no padding, no dilation, one group) as a gather
of whole patches and one product on the register tile.

Why: a vision transformer's patch embedding (ViT's 16x16/16, Swin's and ConvNeXt's 4x4/4 stems)
reads non-overlapping patches, so its im2col is only a permutation of the input; the NCHW
implicit-GEMM tile instead loaded each of its k x k steps from pixels a whole stride apart: ViT's
8x8/8 embedding of 8x3x32x32 took 152 us against onnxruntime's 24, ViT-B/16's 768-channel one
3.1 ms against 2.1. Here the patches are gathered into rows (:func:`gather_patches`), multiplied by the weight as a (C kh kw, M)
matrix on :class:`~inference.kernels.rows_gemm.PreparedGemm` with the bias and activation in its
epilogue, and the (pixels, M) result turned to NCHW by a block swap. A residual input goes to the
general path.
"""
from __future__ import annotations

import numba
import numpy as np

from inference.kernels._prepack import LastWeights
from inference.kernels.activations import activate_row
from inference.kernels.arena_slot import new_output, new_scratch
from inference.kernels.rows_gemm import PreparedGemm
from inference.kernels.tile_lanes import tile_epilogue
from inference.kernels._jit import threaded_kernel
from inference.kernels.transpose import swap_last_two


#: the fewest taps of a patch this path takes. Measured against the tile (one thread, alone): 8x8
#: and 16x16 patches 3-4.6x and 1.4x faster; 4x4 ones 0.8-1.1x (3 -> 64 channels on 224x224: 404
#: against 335 us; 16 -> 64 on 64x64: 139 against 149) and 2x2 ones 0.93-1.0x (Swin's patch
#: merging): their short products (K = C kh kw of 48-384) keep the tile the better path there
MIN_TAPS = 64


def is_patchify(kernel: tuple, strides: tuple, dilations: tuple, pads: tuple, group: int) -> bool:
    """Non-overlapping patches of :data:`MIN_TAPS` or more taps that tile the map from its corner
    (their im2col is a permutation)."""
    return group == 1 and tuple(kernel) == tuple(strides) and int(np.prod(kernel)) >= MIN_TAPS \
        and all(d == 1 for d in dilations) and not any(pads)


@threaded_kernel()
def gather_patches(x, kh, kw, oh, ow, patches):
    """``patches[(n, i, j), (c, ki, kj)] = x[n, c, i kh + ki, j kw + kj]``: each input row read
    once, contiguously, its ow runs of kw floats written to their patches; a row of patches (n, i)
    per parallel step."""
    n, c = x.shape[0], x.shape[1]
    for t in numba.prange(n * oh):
        b, i = t // oh, t % oh
        for ch in range(c):
            for ki in range(kh):
                src = x[b, ch, i * kh + ki]
                col = (ch * kh + ki) * kw
                for j in range(ow):
                    dst = patches[t * ow + j]
                    for kj in range(kw):
                        dst[col + kj] = src[j * kw + kj]


class PatchifyConv:
    """The call ``(x, w, bias, z) -> act(conv(x, w) + bias)`` for one input and weight shape
    (``z`` must be None: the caller's general path takes a residual)."""

    def __init__(self, x_shape: tuple, w_shape: tuple, out_hw: tuple, code: int, alpha: float, beta: float):
        n, c = x_shape[:2]
        m, _, self.kh, self.kw = w_shape
        oh, ow = out_hw
        self.shape = (n, m, oh, ow)
        self.pixels, self.k, self.m = n * oh * ow, c * self.kh * self.kw, m
        self.gemm = PreparedGemm(self.pixels, self.k, m)
        self.whole, self.amin, self.amax, self.act = tile_epilogue(code, alpha, beta)
        self.code, self.alpha, self.beta = code, alpha, beta
        self.weights = LastWeights()

    def __call__(self, x: np.ndarray, w: np.ndarray, bias: np.ndarray, z: np.ndarray | None) -> np.ndarray:
        wt = self.weights.get((w,), lambda: np.ascontiguousarray(w.reshape(self.m, self.k).T))
        patches = new_scratch((self.pixels, self.k))
        n, m, oh, ow = self.shape
        gather_patches(np.ascontiguousarray(x), self.kh, self.kw, oh, ow, patches)
        rows = self.gemm(patches, wt, bias, None, self.amin, self.amax, keep_for=wt,
                         out=new_scratch((self.pixels, self.m)), act=self.act)
        if not self.whole:
            activate_row(rows.reshape(-1), self.code, self.alpha, self.beta)
        y = new_output(self.shape)
        swap_last_two(rows.reshape(n, oh * ow, m), y.reshape(n, m, oh * ow))
        return y
