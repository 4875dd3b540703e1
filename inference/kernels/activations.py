"""Activations as small integer codes, so one compiled epilogue serves every fused activation.

Why: a numba kernel specialised per activation would multiply compile time (and cold start);
branching on an int inside the inner loop is predictable and costs next to nothing next to the
memory traffic it saves. ``ACTIVATIONS`` maps the ``activation`` attribute of our fused ops
(an ONNX op type, plus ``GeluTanh``) to the code; alpha/beta carry the op's parameters.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from inference.errors import KernelError
from inference.kernels._jit import threaded_kernel
from inference.kernels.vmath import FAST_FINITE, erf_row, sigmoid_row

NONE, RELU, CLIP, LEAKY_RELU, SIGMOID, HARD_SIGMOID, HARD_SWISH, GELU, GELU_TANH, SILU = range(10)
#: not an activation a fused op may name: the standalone Erf op's code for :func:`activate_row`
ERF = 10

#: ``Silu`` (x * sigmoid(x), also called Swish) is ours, like ``GeluTanh``: exporters write it as a
#: Sigmoid and a Mul, which the fusion passes take in as one activation
ACTIVATIONS: dict[str, int] = {
    "": NONE, "Relu": RELU, "Clip": CLIP, "LeakyRelu": LEAKY_RELU, "Sigmoid": SIGMOID,
    "HardSigmoid": HARD_SIGMOID, "HardSwish": HARD_SWISH, "Gelu": GELU, "GeluTanh": GELU_TANH, "Silu": SILU,
}

_SQRT_HALF = 1.0 / math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def activation_code(name: str) -> int:
    """The code of a fused op's ``activation`` attribute; unknown names are an error, not a no-op."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise KernelError(f"unknown fused activation {name!r}; known: {sorted(ACTIVATIONS)}") from None


@numba.njit(cache=True, error_model="numpy", inline="always")
def activate(v, code, alpha, beta):
    """``v`` through activation ``code`` (alpha/beta: Clip min/max, LeakyRelu and HardSigmoid's)."""
    if code == RELU:
        return v if v > 0 else v * 0
    if code == CLIP:
        return min(max(v, alpha), beta)
    if code == LEAKY_RELU:
        return v if v >= 0 else v * alpha
    if code == SIGMOID:
        return _sigmoid(v)
    if code == HARD_SIGMOID:  # in float32 like Clip: the float64 form vectorised into a max that drops NaN
        return min(max(np.float32(alpha * v + beta), np.float32(0.0)), np.float32(1.0))
    if code == HARD_SWISH:  # in float32: the float64 form ran 0.17 ns per element vectorised, this 0.05
        return v * min(max(v * np.float32(1.0 / 6.0) + np.float32(0.5), np.float32(0.0)), np.float32(1.0))
    if code == GELU:
        return 0.5 * v * (1 + math.erf(v * _SQRT_HALF))
    if code == GELU_TANH:
        return 0.5 * v * (1 + math.tanh(_SQRT_2_OVER_PI * (v + 0.044715 * v * v * v)))
    if code == SILU:
        return v * _sigmoid(v)
    return v


@numba.njit(cache=True, error_model="numpy", inline="always")
def _sigmoid(v):
    if v >= 0:
        return 1 / (1 + math.exp(-v))
    e = math.exp(v)
    return e / (1 + e)


@numba.njit(cache=True, error_model="numpy", fastmath=FAST_FINITE)
def activate_row(row, code, alpha, beta):
    """``row`` through activation ``code`` in place; one loop per code so each loop vectorises
    (a per-element branch on ``code`` ran several times slower). Its flags stated: left out, the
    first kernel to call it set them for every caller and the on-disk cache (numba's
    ``inherit_if_not_set``): ``fastmath=True`` (no NaN, no inf) when a depthwise convolution came
    first, none when an epilogue did. :data:`FAST_FINITE` keeps NaN and inf IEEE; its ``contract``
    made HardSigmoid 0.19 -> 0.15 ns per element."""
    n = row.size
    if code == RELU:
        for k in range(n):
            row[k] = max(row[k], 0)
    elif code == CLIP:
        lo, hi = np.float32(alpha), np.float32(beta)
        for k in range(n):
            row[k] = min(max(row[k], lo), hi)
    elif code == GELU:  # vectorised erf: libm's scalar erf per element was most of a Gelu epilogue
        erf_row(row, True)
    elif code == ERF:
        erf_row(row, False)
    elif code == SIGMOID or code == SILU:  # vectorised exp, as Gelu's
        sigmoid_row(row, code == SILU)
    elif code == GELU_TANH:
        sigmoid_row(row, True, True)
    elif code != NONE:
        for k in range(n):
            row[k] = activate(row[k], code, alpha, beta)


@threaded_kernel()
def epilogue_rows(y, bias, z, has_z, code, alpha, beta):
    """In place over ``y`` (N, M, P): ``y = act(y + bias[m] + z)``; ``z`` like ``y`` when ``has_z``.

    One pass over the output (per row, while it is in cache) instead of three numpy passes.
    """
    n, m, p = y.shape
    for r in numba.prange(n * m):
        i, c = r // m, r % m
        row = y[i, c]
        b = bias[c]
        if has_z:
            zr = z[i, c]
            for k in range(p):
                row[k] = row[k] + b + zr[k]
        else:
            for k in range(p):
                row[k] = row[k] + b
        activate_row(row, code, alpha, beta)


@threaded_kernel()
def epilogue_cols(y, bias, z, has_z, code, alpha, beta):
    """In place over C-contiguous ``y`` (R, N) of a matrix product: ``y = act(y + bias + z)``, bias
    per column.

    Rows go in chunks of about 2048 elements: bias and residual row by row, then the activation
    over the whole chunk as one flat vector while it is in cache. Per row, short rows (the 16-32
    channels of an NHWC convolution's pixel) spent more in the activation call than in the math:
    2-4x slower on (12544, 16), and no faster on wide rows.
    """
    r, n = y.shape
    step = max(1, 2048 // max(n, 1))
    for chunk in numba.prange((r + step - 1) // step):
        start = chunk * step
        stop = min(r, start + step)
        for i in range(start, stop):
            row = y[i]
            if has_z:
                zr = z[i]
                for k in range(n):
                    row[k] = row[k] + bias[k] + zr[k]
            else:
                for k in range(n):
                    row[k] = row[k] + bias[k]
        activate_row(y[start:stop].reshape((stop - start) * n), code, alpha, beta)


#: the epilogues' ``z`` when there is no residual (``has_z`` false: never read), by rank
NO_RESIDUAL_2D = np.empty((1, 1), np.float32)
NO_RESIDUAL_4D = np.empty((1, 1, 1, 1), np.float32)


def as_f32(a: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    """``a`` as a C-contiguous float32 array of ``shape`` (zeros if absent); no copy when it already is."""
    if a is None:
        return np.zeros(shape, np.float32)
    if type(a) is np.ndarray and a.shape == shape and a.dtype == np.float32 and a.flags.c_contiguous:
        return a  # the common case, in a fifth of the time of the general path
    return np.ascontiguousarray(a, dtype=np.float32).reshape(shape)
