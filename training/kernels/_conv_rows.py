"""Row matrices over NHWC copies for the ungrouped 2-D convolution gradients.

Why rows: columns copied along output rows (:func:`training.kernels.nn_grads.columns_t`) pay
per-row overhead when rows are short (the benchmark CNN's second conv: rows of 11). Rows
``(N*oh*ow, kh*kw*C)`` of an NHWC copy of X copy C contiguous values per tap instead
(:func:`rows_win` says when), and both gradients become one plain GEMM: ``dW = dY_t @ rows``
and ``d_rows = dY_nhwc @ W_r``, the latter added back by :func:`rows_2d_adjoint`. Measured
(conv 16->32, 3x3 on 13x13, batch 32, one thread, CPU time): dW 1.5-1.9 -> 0.65 ms, dX 1.1-1.4
-> 0.6 ms against the earlier shifted-plane GEMMs. Convs on 1-7 channels keep the columns.
"""
from __future__ import annotations

import numba
import numpy as np

Params2d = tuple[int, int, int, int, int, int, int, int]  # kh, kw, sh, sw, dh, dw, ph, pw


def rows_win(channels: int) -> bool:
    """Rows copy C contiguous values per tap, columns an output row per copy: measured (batch 1-32,
    3x3, 8-112 pixels wide) rows win from 8 channels on (1.3-2x), columns below (2-3x at 1-3)."""
    return channels >= 8


@numba.njit(cache=True, error_model="numpy")
def rows_2d(xn, oh, ow, kh, kw, sh, sw, dh, dw, ph, pw):
    """Rows (N*oh*ow, kh*kw*C) of NHWC ``xn``: row (n, oy, ox) holds every tap's C channels
    (tap-major, channel-minor), zeros where a tap reads padding. Indexed by (row, column), not
    by running flat offsets: the flat form measured 2x slower (the copies stopped vectorising)."""
    n, h, wd, c = xn.shape
    rows = np.empty((n * oh * ow, kh * kw * c), xn.dtype)
    zero = xn.dtype.type(0)
    for ni in range(n):
        for oy in range(oh):
            for ox in range(ow):
                r = (ni * oh + oy) * ow + ox
                for i in range(kh):
                    iy = oy * sh - ph + i * dh
                    for j in range(kw):
                        ix = ox * sw - pw + j * dw
                        base = (i * kw + j) * c
                        if 0 <= iy < h and 0 <= ix < wd:
                            for ci in range(c):
                                rows[r, base + ci] = xn[ni, iy, ix, ci]
                        else:
                            for ci in range(c):
                                rows[r, base + ci] = zero
    return rows


@numba.njit(cache=True, error_model="numpy")
def rows_2d_adjoint(rows, n, h, wd, c, oh, ow, kh, kw, sh, sw, dh, dw, ph, pw):
    """Adjoint of :func:`rows_2d`: row gradients added back onto an NHWC (n, h, wd, c) array."""
    dx = np.zeros((n, h, wd, c), rows.dtype)
    for ni in range(n):
        for oy in range(oh):
            for ox in range(ow):
                r = (ni * oh + oy) * ow + ox
                for i in range(kh):
                    iy = oy * sh - ph + i * dh
                    for j in range(kw):
                        ix = ox * sw - pw + j * dw
                        if 0 <= iy < h and 0 <= ix < wd:
                            base = (i * kw + j) * c
                            for ci in range(c):
                                dx[ni, iy, ix, ci] += rows[r, base + ci]
    return dx


def grad_weight_rows(dy: np.ndarray, x: np.ndarray, params: Params2d) -> tuple[np.ndarray, np.ndarray]:
    """dW (M, C, kh, kw) and dB (M,) of an ungrouped 2-D conv; ``dy``/``x`` are 4-D NCHW."""
    n, m, oh, ow = dy.shape
    kh, kw = params[:2]
    rows = rows_2d(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), oh, ow, *params)
    dy_t = np.ascontiguousarray(dy.transpose(1, 0, 2, 3)).reshape(m, -1)  # (M, N*P)
    dw = (dy_t @ rows).reshape(m, kh, kw, x.shape[1]).transpose(0, 3, 1, 2)
    return dw, dy_t.sum(axis=1)


def grad_input_rows(dy: np.ndarray, w: np.ndarray, shape: tuple[int, ...], params: Params2d) -> np.ndarray:
    """dX (N, C, H, W) of an ungrouped 2-D conv of weights ``w`` (M, C, kh, kw); 4-D NCHW."""
    n, m, oh, ow = dy.shape
    c, h, wd = shape[1:]
    w_r = w.transpose(0, 2, 3, 1).reshape(m, -1)  # (M, kh*kw*C), the rows' tap-major order
    d_rows = np.ascontiguousarray(dy.transpose(0, 2, 3, 1)).reshape(-1, m) @ w_r
    dxn = rows_2d_adjoint(d_rows, n, h, wd, c, oh, ow, *params)
    return np.ascontiguousarray(dxn.transpose(0, 3, 1, 2))
