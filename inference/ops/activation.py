"""Elementwise activation functions (Relu family, Sigmoid family, Gelu, Mish, Shrink...).

Why: each is a short numpy formula in the input dtype; attribute scalars are converted to that
dtype first so float16/float32 inputs never get promoted to float64. Exponentials are written in
their overflow-free forms.
"""
from __future__ import annotations

import numpy as np

from inference.errors import KernelError, ShapeInferenceError
from inference.ops._dtypes import keeps_dtype
from inference.ops.unary import erf
from inference.ops.registry import register

SELU_ALPHA = 1.67326319217681884765625
SELU_GAMMA = 1.05070102519989013671875


def _sigmoid(x: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0)


def _hard_sigmoid(x: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    t = x.dtype.type
    return np.clip(t(alpha) * x + t(beta), t(0), t(1))


@register("Relu", since=6)
@keeps_dtype
def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, x.dtype.type(0))


@register("LeakyRelu", since=6)
@keeps_dtype
def leaky_relu(x: np.ndarray, *, alpha: float = 0.01) -> np.ndarray:
    return np.where(x >= 0, x, x * x.dtype.type(alpha))


@register("PRelu", since=6)
def prelu_6(x: np.ndarray, slope: np.ndarray) -> np.ndarray:
    """Opset 6: a 1-D ``slope`` holds one value per channel (axis 1)."""
    if slope.ndim == 1 and x.ndim >= 2 and slope.size == x.shape[1]:
        slope = slope.reshape((-1,) + (1,) * (x.ndim - 2))
    return prelu(x, slope)


@register("PRelu", since=7)
@keeps_dtype
def prelu(x: np.ndarray, slope: np.ndarray) -> np.ndarray:
    """Leaky relu with a learned ``slope`` broadcast one way onto ``x``'s shape."""
    try:
        slope = np.broadcast_to(slope, x.shape)
    except ValueError as e:
        raise ShapeInferenceError(f"PRelu: slope of shape {slope.shape} does not broadcast to "
                                  f"input shape {x.shape}") from e
    return np.where(x < 0, x * slope.astype(x.dtype), x)


@register("Elu", since=6)
@keeps_dtype
def elu(x: np.ndarray, *, alpha: float = 1.0) -> np.ndarray:
    return np.where(x > 0, x, x.dtype.type(alpha) * np.expm1(x))


@register("Selu", since=6)
@keeps_dtype
def selu(x: np.ndarray, *, alpha: float = SELU_ALPHA, gamma: float = SELU_GAMMA) -> np.ndarray:
    t = x.dtype.type
    return t(gamma) * np.where(x > 0, x, t(alpha) * np.expm1(x))


@register("Celu", since=12)
@keeps_dtype
def celu(x: np.ndarray, *, alpha: float = 1.0) -> np.ndarray:
    if alpha == 0:
        raise KernelError("Celu: alpha must be non-zero")
    a = x.dtype.type(alpha)
    return np.maximum(x, 0) + np.minimum(0, a * np.expm1(x / a))


@register("Sigmoid", since=6)
@keeps_dtype
def sigmoid(x: np.ndarray) -> np.ndarray:
    return _sigmoid(x)


@register("HardSigmoid", since=6)
@keeps_dtype
def hard_sigmoid(x: np.ndarray, *, alpha: float = 0.2, beta: float = 0.5) -> np.ndarray:
    return _hard_sigmoid(x, alpha, beta)


@register("HardSwish", since=14)
@keeps_dtype
def hard_swish(x: np.ndarray) -> np.ndarray:
    return x * _hard_sigmoid(x, 1 / 6, 0.5)


@register("Softplus", since=1)
@keeps_dtype
def softplus(x: np.ndarray) -> np.ndarray:
    return _softplus(x)


@register("Softsign", since=1)
@keeps_dtype
def softsign(x: np.ndarray) -> np.ndarray:
    return x / (1 + np.abs(x))


@register("Gelu", since=20)
@keeps_dtype
def gelu(x: np.ndarray, *, approximate: str = "none") -> np.ndarray:
    """``x * Phi(x)``; ``approximate="tanh"`` uses the tanh formula of Hendrycks & Gimpel."""
    if approximate == "none":
        return 0.5 * x * (1 + erf(x / np.sqrt(2.0)))
    if approximate == "tanh":
        x64 = x.astype(np.float64)
        return 0.5 * x64 * (1 + np.tanh(np.sqrt(2 / np.pi) * (x64 + 0.044715 * x64 ** 3)))
    raise KernelError(f"Gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


@register("Mish", since=18)
@keeps_dtype
def mish(x: np.ndarray) -> np.ndarray:
    return x * np.tanh(_softplus(x))


@register("Swish", since=24)
@keeps_dtype
def swish(x: np.ndarray, *, alpha: float = 1.0) -> np.ndarray:
    return x * _sigmoid(x.dtype.type(alpha) * x)


@register("ThresholdedRelu", since=10)
@keeps_dtype
def thresholded_relu(x: np.ndarray, *, alpha: float = 1.0) -> np.ndarray:
    return np.where(x > x.dtype.type(alpha), x, x.dtype.type(0))


@register("Shrink", since=9)
@keeps_dtype
def shrink(x: np.ndarray, *, bias: float = 0.0, lambd: float = 0.5) -> np.ndarray:
    """``x + bias`` below ``-lambd``, ``x - bias`` above ``lambd``, 0 between."""
    xf = x.astype(np.float64)  # Shrink also takes integer tensors: compute wide, cast back
    return np.where(xf < -lambd, xf + bias, np.where(xf > lambd, xf - bias, 0.0))


def _clip(x: np.ndarray, low, high) -> np.ndarray:
    """Bound ``x`` below then above (so ``low > high`` gives ``high`` everywhere, as ONNX says)."""
    if low is not None:
        x = np.maximum(x, np.asarray(low).astype(x.dtype))
    if high is not None:
        x = np.minimum(x, np.asarray(high).astype(x.dtype))
    return x


@register("Clip", since=6)
@keeps_dtype
def clip_6(x: np.ndarray, *, min: float | None = None, max: float | None = None) -> np.ndarray:
    """Opsets 6-10: the bounds are attributes (absent means unbounded)."""
    return _clip(x, min, max)


@register("Clip", since=11)
@keeps_dtype
def clip(x: np.ndarray, min: np.ndarray | None = None, max: np.ndarray | None = None) -> np.ndarray:
    """Opset 11+: the bounds are optional scalar inputs."""
    for name, bound in (("min", min), ("max", max)):
        if bound is not None and bound.size != 1:
            raise ShapeInferenceError(f"Clip: {name} must be a scalar, got shape {bound.shape}")
    return _clip(x, min, max)
