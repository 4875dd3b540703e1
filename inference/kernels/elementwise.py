"""Fast float32 activations that survive fusion (standalone Relu, Clip, Sigmoid, HardSwish, ...) and Erf.

Why: after ``fuse_conv_epilogue`` most activations live inside a conv's epilogue; the ones left
(after a Concat, an Add with a later activation, a Transpose) run here in one numba pass with the
same code as the epilogue, instead of numpy's ``np.where``/``np.clip`` temporaries. Binary ops are
:mod:`~inference.kernels.row_copies`'s.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from inference.kernels._applies import float32_input
from inference.kernels._jit import threaded_kernel
from inference.kernels.activations import ERF, activate_row, activation_code
from inference.kernels.arena_slot import OVER_FIRST, new_output, overwritten
from inference.ops.registry import lookup, register

_CHUNK = 1 << 14  # elements per parallel work item


@threaded_kernel()
def activate_flat(x, y, code, alpha, beta, in_place):
    """``y = act(x)`` over flat arrays, in chunks so two threads split large tensors; ``in_place``:
    ``y`` is ``x``, activated where it is (no copy: see ``arena_slot.overwritten``)."""
    n = x.size
    for c in numba.prange((n + _CHUNK - 1) // _CHUNK):
        lo, hi = c * _CHUNK, min(n, (c + 1) * _CHUNK)
        out = y[lo:hi]
        if not in_place:
            src = x[lo:hi]
            for k in range(out.size):  # an element loop: numba's ``out[:] = src`` copied 3x slower
                out[k] = src[k]
        activate_row(out, code, alpha, beta)


def _run(x: np.ndarray, activation: str | int, alpha: float = 0.0, beta: float = 0.0) -> np.ndarray:
    """``activation`` by name, or a code of :mod:`~inference.kernels.activations` (Erf's has no name)."""
    code = activation if isinstance(activation, int) else activation_code(activation)
    y = new_output(x.shape)
    xf, yf = np.ascontiguousarray(x).reshape(-1), y.reshape(-1)
    activate_flat(xf, yf, code, alpha, beta, overwritten(yf, xf) == OVER_FIRST)
    return y


def _fast_or_reference(op: str, opset: int, activation: str | int, alpha: float = 0.0, beta: float = 0.0):
    ref = lookup(op, "", opset).fn

    def kernel(x, **attrs):
        if x.dtype != np.float32:
            return ref(x, **attrs)
        return _run(x, activation, alpha, beta)

    kernel.__name__ = kernel.__qualname__ = f"fast_{op.lower()}"
    return kernel


register("Relu", since=6, kind="fast", applies=float32_input)(_fast_or_reference("Relu", 6, "Relu"))
register("Sigmoid", since=6, kind="fast", applies=float32_input)(_fast_or_reference("Sigmoid", 6, "Sigmoid"))
register("HardSwish", since=14, kind="fast", applies=float32_input)(_fast_or_reference("HardSwish", 14, "HardSwish"))
#: Erf: the reference's float64 series took 18.6 ms for 131K elements, this (Gelu's vectorised erf,
#: a series near 0) 57 us; within 3e-7 absolute and 6e-7 relative of float64 erf
register("Erf", since=9, kind="fast", applies=float32_input)(_fast_or_reference("Erf", 9, ERF))


@register("LeakyRelu", since=6, kind="fast", applies=float32_input)
def leaky_relu(x, *, alpha=0.01):
    return _run(x, "LeakyRelu", float(alpha)) if x.dtype == np.float32 else lookup("LeakyRelu", "", 6).fn(x, alpha=alpha)


@register("HardSigmoid", since=6, kind="fast", applies=float32_input)
def hard_sigmoid(x, *, alpha=0.2, beta=0.5):
    if x.dtype != np.float32:
        return lookup("HardSigmoid", "", 6).fn(x, alpha=alpha, beta=beta)
    return _run(x, "HardSigmoid", float(alpha), float(beta))


@register("Clip", since=11, kind="fast", applies=float32_input)
def clip(x, min=None, max=None):
    bounds = [b for b in (min, max) if b is not None]
    if x.dtype != np.float32 or any(b.size != 1 for b in bounds):
        return lookup("Clip", "", 11).fn(x, min, max)
    lo = -math.inf if min is None else float(min.reshape(()))
    hi = math.inf if max is None else float(max.reshape(()))
    return _run(x, "Clip", lo, hi)


@register("Gelu", since=20, kind="fast", applies=float32_input)
def gelu(x, *, approximate="none"):
    if x.dtype != np.float32 or approximate not in ("none", "tanh"):
        return lookup("Gelu", "", 20).fn(x, approximate=approximate)
    return _run(x, "Gelu" if approximate == "none" else "GeluTanh")
