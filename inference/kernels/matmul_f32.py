"""float32 ``act(X @ W + b + Z)`` with a constant ``W`` on our register tile: rows of X broadcast,
64 columns of W as the vectors.

Why: the products of channels-last pointwise convolutions (MobileNet's 1x1 layers: K = 16-960
input channels) and of FusedMatMul are short-K GEMMs, where OpenBLAS spent as much time around
the multiply as in it, and a separate epilogue pass re-read the output. Here ``W`` is packed once
per weight array into 64-column panels (the tile's vectors, read contiguously), ``X`` is packed
per call into 6-row panels (the broadcasts), and each 6 x 64 tile gets bias, residual and a clamp
(Relu / Clip) in registers before its only store (:mod:`inference.kernels.tile_lanes`); other
activations take one pass after. Same tile as :mod:`inference.kernels.conv_f32`.
"""
from __future__ import annotations

import weakref

import numba
import numpy as np

from inference.kernels._jit import threaded_kernel
from inference.kernels.activations import CLIP, NONE, RELU, activate_row
from inference.kernels.conv_f32 import MR, NP, _tile
from inference.kernels.tile_lanes import NL, add_lanes, clamp_block, clamp_range, scale_block, store_lanes

_NO_Z = np.zeros(1, np.float32)


@threaded_kernel()
def pack_row_panels(x, out):
    """Rows of ``x`` (R, K) as [R/MR][K][MR] panels in ``out`` (rows past R are zero)."""
    r, k = x.shape
    for rb in numba.prange(out.shape[0]):
        panel = out[rb]
        rows = min(MR, r - rb * MR)
        for i in range(rows):
            src = x[rb * MR + i]
            for kk in range(k):
                panel[kk, i] = src[kk]
        for i in range(rows, MR):
            for kk in range(k):
                panel[kk, i] = 0


@threaded_kernel(own_pool=True)
def rows_gemm(xp, k, r, wcols, ncols, koff, bias, z, has_z, amin, amax, y, nchunks, weights_outer):
    """Tiles (6-row panel ``rb`` of X, 64-column panel ``nb`` of W) in ``nchunks`` parallel runs:
    ``y[row, n] = clamp(sum_k X[row, k] W[k, n] + bias[n] + z[row, n], amin, amax)``.
    ``weights_outer`` sweeps all rows per column panel (W outgrows the cache), else all columns per
    row panel."""
    rbs, nbs = xp.size // (k * MR), wcols.size // (k * NP)
    total = rbs * nbs
    for ch in numba.prange(nchunks):
        buf = np.empty(MR * NP, np.float32)
        vals = np.empty(NL, np.float32)
        for t in range(ch * total // nchunks, (ch + 1) * total // nchunks):
            if weights_outer:
                nb, rb = t // rbs, t % rbs
            else:
                rb, nb = t // nbs, t % nbs
            _tile(xp, rb * k * MR, wcols, nb * k * NP, koff, k, buf)
            for i in range(min(MR, r - rb * MR)):
                base = (rb * MR + i) * ncols
                for hf in range(NP // NL):
                    n0 = nb * NP + hf * NL
                    cnt = min(NL, ncols - n0)
                    if cnt <= 0:
                        break
                    scale_block(buf, i * NP + hf * NL, np.float32(0), np.float32(1), np.float32(0), vals)
                    add_lanes(vals, 0, cnt, bias, n0)
                    if has_z:
                        add_lanes(vals, 0, cnt, z, base + n0)
                    clamp_block(vals, amin, amax)
                    store_lanes(vals, 0, cnt, y, base + n0)


# -- packed weights, once per weight array ----------------------------------------------------------
_PACKED: dict[int, tuple[weakref.ref, tuple, np.ndarray, np.ndarray]] = {}


def packed_columns(w: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``w`` seen as (K, N) -> ([N/64][K][64] flat, N zero-padded; the per-step offsets), packed
    once per weight array: callers pass the session's initializer itself, not a reshaped view."""
    key = id(w)
    hit = _PACKED.get(key)
    if hit is not None and hit[0]() is w and hit[1] == shape:
        return hit[2], hit[3]
    k, n = shape
    nb = -(-n // NP)
    full = np.zeros((k, nb * NP), np.float32)
    full[:, :n] = np.asarray(w, np.float32).reshape(k, n)
    packed = np.ascontiguousarray(full.reshape(k, nb, NP).transpose(1, 0, 2)).reshape(-1)
    koff = np.arange(k, dtype=np.int64) * NP
    try:
        _PACKED[key] = (weakref.ref(w, lambda _r, kk=key: _PACKED.pop(kk, None)), shape, packed, koff)
    except TypeError:  # not weak-referenceable: pack on every call
        pass
    return packed, koff


def _chunks(tiles: int) -> int:
    return max(1, min(tiles, 4 * numba.get_num_threads()))


def matmul_rows(x2d: np.ndarray, w: np.ndarray, shape: tuple[int, int], bias: np.ndarray, z: np.ndarray | None,
                code: int = NONE, alpha: float = 0.0, beta: float = 0.0) -> np.ndarray:
    """``act(x2d @ W + bias + z)`` for float32 ``x2d`` (R, K), ``w`` the constant weight seen as
    ``shape`` (K, N), ``bias`` float32 (N,), ``z`` (optional) (R, N); returns (R, N)."""
    r, k = x2d.shape
    n = shape[1]
    wcols, koff = packed_columns(w, shape)
    xp = np.empty((-(-r // MR), k, MR), np.float32)
    pack_row_panels(np.ascontiguousarray(x2d, dtype=np.float32), xp)
    y = np.empty((r, n), np.float32)
    zz = np.ascontiguousarray(z, dtype=np.float32).reshape(-1) if z is not None else _NO_Z
    clamps = code in (NONE, RELU, CLIP)
    amin, amax = clamp_range(code if clamps else NONE, np.float32(alpha), np.float32(beta))
    tiles = xp.shape[0] * (wcols.size // (k * NP))
    rows_gemm(xp.reshape(-1), k, r, wcols, n, koff, bias, zz, z is not None, amin, amax, y.reshape(-1), _chunks(tiles),
              wcols.size > xp.size)
    if not clamps:
        activate_row(y.reshape(-1), code, alpha, beta)
    return y
