"""``act(A @ W + bias + Z)`` for a row-major float32 ``A`` (P, K), on our register tile with output
channels along its lanes: the channels-last convolutions' GEMM.

Why not BLAS: a channels-last 1x1 convolution is ``(pixels, C) @ (C, M)`` with short K and M
(MobileNetV2: K and M 16-960). OpenBLAS ran those at 66-130 GFLOP/s on one core and then needed a
second pass over the output for bias and activation; at 2 threads it gained only 1.0-1.5x, and
its pool spinning beside numba's forced the depthwise kernels serial (``inference.thread_policy``).
Here the tile (:func:`~inference.kernels.tile_ir.make_out_tile`, ``lanes="channels"``) broadcasts
6 pixels' inputs straight from rows of ``A`` (no packing), multiplies 64 channels of ``W``'s row k
(``W`` laid out once per weight as zero-padded panels), and stores bias + residual + clamp from
registers. Where 64-lane tiles would leave more lanes idle (M = 16, 24, 96, 160 ...), the tile is
12 pixels x 32 channels.
"""
from __future__ import annotations

import numba
import numpy as np

from inference.kernels._jit import threaded_kernel
from inference.kernels._prepack import prepacked
from inference.kernels.tile_ir import LANES, make_out_tile

# (pixels per tile, 16-lane vectors per tile): 24 accumulators either way
WIDE, NARROW = (6, 4), (12, 2)
_TILES = {shape: (make_out_tile(*shape, residual=False, lanes="channels"),
                  make_out_tile(*shape, residual=True, lanes="channels")) for shape in (WIDE, NARROW)}
_wide, _wide_z = _TILES[WIDE]
_narrow, _narrow_z = _TILES[NARROW]


def tile_shape(m: int) -> tuple[int, int]:
    """The tile for ``m`` output channels: 32 lanes when 64 would leave more of them idle."""
    waste = lambda nv: -(-m // (nv * LANES)) * nv * LANES - m  # noqa: E731
    return NARROW if waste(NARROW[1]) < waste(WIDE[1]) else WIDE


def padded_weight(w: np.ndarray, nl: int, keep_for: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``w`` (K, M) as panels of ``nl`` columns (M zero-padded to whole panels), each panel's (K, nl)
    contiguous, flat; and the offsets of a panel's K rows. Why panels: a tile then reads its
    weights as one sequential run; rows of the whole (K, M) matrix put each step on another page
    (5 KB apart for M = 1280). MobileNetV2's last 1x1 (49 x 320 -> 1280), weights arriving from L3,
    ran 1.5x its time alone that way; as panels, as fast as OpenBLAS in the same setting.
    ``keep_for``: the constant weight ``w`` is a view of; the panels are then kept while it lives."""

    def build() -> tuple[np.ndarray, np.ndarray]:
        k, m = w.shape
        mp = -(-m // nl) * nl
        full = np.zeros((k, mp), np.float32)
        full[:, :m] = w
        panels = np.ascontiguousarray(full.reshape(k, mp // nl, nl).transpose(1, 0, 2))
        return panels.reshape(-1), np.arange(k, dtype=np.int64) * nl

    return build() if keep_for is None else prepacked(keep_for, ("rows_gemm", nl), build)


_NO_Z = np.zeros(1, np.float32)


def gemm_rows(a: np.ndarray, w: np.ndarray, bias: np.ndarray, z: np.ndarray | None, amin: np.float32,
              amax: np.float32, keep_for: np.ndarray | None = None, out: np.ndarray | None = None,
              shape: tuple[int, int] | None = None) -> np.ndarray:
    """``clamp(a @ w + bias + z, amin, amax)``: ``a`` (P, K), ``w`` (K, M), ``bias`` (M,), ``z``
    (P, M) or None, all float32; ``keep_for`` as in :func:`padded_weight`; ``out``: a C-contiguous
    (P, M) float32 array to write (else a new one); ``shape``: force a tile (WIDE or NARROW)."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    p, k = a.shape
    m = w.shape[1]
    mr, nv = shape or tile_shape(m)
    nl = nv * LANES
    wp, koff = padded_weight(w, nl, keep_for)
    bp = np.zeros(-(-m // nl) * nl, np.float32)
    bp[:m] = bias
    if out is not None and (out.shape != (p, m) or out.dtype != np.float32 or not out.flags.c_contiguous):
        raise ValueError(f"gemm_rows: out must be a C-contiguous float32 ({p}, {m}) array, got {out.dtype} "
                         f"{out.shape}{'' if out.flags.c_contiguous else ' (not C-contiguous)'}")
    y = np.empty((p, m), np.float32) if out is None else out
    full = p // mr
    tail = np.zeros(mr * k, np.float32)  # the last, partial block of rows, zero-padded to a whole tile
    if p % mr:
        tail[:(p - full * mr) * k] = a[full * mr:].reshape(-1)
    zz = _NO_Z if z is None else np.ascontiguousarray(z, dtype=np.float32).reshape(-1)
    tiles = -(-p // mr) * (bp.size // nl)
    chunks = max(1, min(tiles, 4 * numba.get_num_threads()))
    weights_outer = wp.size > a.size  # deep layers: each channel block's weights stay cached over the pixels
    _gemm(a.reshape(-1), tail, p, k, wp, koff, bp, zz, z is not None, amin, amax, y.reshape(-1), m, mr, nv,
          chunks, weights_outer)
    return y


@threaded_kernel()
def _gemm(a, tail, p, k, wp, koff, bias, z, has_z, amin, amax, y, m, mr, nv, nchunks, weights_outer):
    """The (pixel block, channel block) tiles in ``nchunks`` parallel runs; ``mr``/``nv`` pick the
    tile shape (WIDE or NARROW)."""
    nl = nv * LANES
    pbs, mbs = -(-p // mr), bias.size // nl
    full = p // mr
    for ch in numba.prange(nchunks):
        seg = np.empty((1, 3), np.int64)
        seg[0, 0] = 0
        for t in range(ch * pbs * mbs // nchunks, (ch + 1) * pbs * mbs // nchunks):
            if weights_outer:
                mb, pb = t // pbs, t % pbs
            else:
                pb, mb = t // mbs, t % mbs
            m0, p0, w0 = mb * nl, pb * mr, mb * k * nl
            seg[0, 1] = m0
            seg[0, 2] = min(nl, m - m0)
            src, off = (a, p0 * k) if pb < full else (tail, 0)
            rows = min(mr, p - p0)
            if nv == WIDE[1]:
                if has_z:
                    _wide_z(src, off, wp, w0, koff, k, bias, m0, rows, amin, amax, z, y, p0 * m, m, seg, 1)
                else:
                    _wide(src, off, wp, w0, koff, k, bias, m0, rows, amin, amax, z, y, p0 * m, m, seg, 1)
            elif has_z:
                _narrow_z(src, off, wp, w0, koff, k, bias, m0, rows, amin, amax, z, y, p0 * m, m, seg, 1)
            else:
                _narrow(src, off, wp, w0, koff, k, bias, m0, rows, amin, amax, z, y, p0 * m, m, seg, 1)
