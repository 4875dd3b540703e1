"""Normalization ops: batch/instance/layer/group/RMS standardization, LRN, Lp and MVN."""
from __future__ import annotations

import numpy as np
from onnx import helper

from inference.errors import KernelError
from inference.ops._window import pad_spatial, window_view
from inference.ops.registry import register


def _channel_shape(x: np.ndarray) -> tuple[int, ...]:
    """Shape that broadcasts a per-channel (axis 1) vector against ``x``."""
    return (1, -1) + (1,) * (x.ndim - 2)


def _standardize(x: np.ndarray, axes: tuple[int, ...], epsilon: float, dtype=np.float32
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(normalized, mean, variance, 1/std) of ``x`` over ``axes`` in ``dtype``; statistics keep dims."""
    xs = x.astype(dtype)
    mean = xs.mean(axis=axes, keepdims=True)
    var = ((xs - mean) ** 2).mean(axis=axes, keepdims=True)
    inv_std = 1.0 / np.sqrt(var + dtype(epsilon))
    return (xs - mean) * inv_std, mean, var, inv_std


def _stash_dtype(stash_type: int) -> np.dtype:
    """Precision of the standardization stage: the ONNX ``stash_type`` (float or double)."""
    dt = np.dtype(helper.tensor_dtype_to_np_dtype(stash_type))
    return dt if dt in (np.float32, np.float64) else np.dtype(np.float32)


def _trailing_axes(x: np.ndarray, axis: int, op: str) -> tuple[int, ...]:
    if not -x.ndim <= axis < x.ndim:
        raise KernelError(f"{op}: axis {axis} out of range for input of rank {x.ndim}")
    return tuple(range(axis % x.ndim, x.ndim))


@register("BatchNormalization", since=1)
def batch_normalization(x, scale, b, input_mean, input_var, *, epsilon=1e-5, momentum=0.9,
                        training_mode=0, spatial=1, is_test=0, consumed_inputs=None, ctx):
    if x.ndim < 2:
        raise KernelError(f"BatchNormalization: input must be N x C x ..., got shape {x.shape}")
    shape = _channel_shape(x)
    if not training_mode:
        inv = 1.0 / np.sqrt(input_var.astype(np.float64) + epsilon)
        y = (x - input_mean.reshape(shape)) * (scale * inv).reshape(shape) + b.reshape(shape)
        return y.astype(x.dtype)
    axes = (0,) + tuple(range(2, x.ndim))
    normalized, mean, var, _ = _standardize(x, axes, epsilon, np.float64)
    y = (normalized * scale.reshape(shape) + b.reshape(shape)).astype(x.dtype)
    running_mean = input_mean * momentum + mean.reshape(-1) * (1 - momentum)
    running_var = input_var * momentum + var.reshape(-1) * (1 - momentum)
    outs = (y, running_mean.astype(input_mean.dtype), running_var.astype(input_var.dtype))
    return outs[:ctx.num_outputs]


@register("InstanceNormalization", since=1)
def instance_normalization(x, scale, b, *, epsilon=1e-5):
    if x.ndim < 3:
        raise KernelError(f"InstanceNormalization: input must be N x C x spatial, got shape {x.shape}")
    normalized, *_ = _standardize(x, tuple(range(2, x.ndim)), epsilon, np.float64)
    shape = _channel_shape(x)
    return (normalized * scale.reshape(shape) + b.reshape(shape)).astype(x.dtype)


@register("LayerNormalization", since=17)
def layer_normalization(x, scale, b=None, *, axis=-1, epsilon=1e-5, stash_type=1, ctx):
    axes = _trailing_axes(x, axis, "LayerNormalization")
    stash = _stash_dtype(stash_type)
    normalized, mean, _, inv_std = _standardize(x, axes, epsilon, stash.type)
    y = normalized.astype(x.dtype) * scale
    if b is not None:
        y = y + b
    return (y.astype(x.dtype), mean, inv_std)[:ctx.num_outputs]


@register("RMSNormalization", since=23)
def rms_normalization(x, scale, *, axis=-1, epsilon=1e-5, stash_type=1):
    axes = _trailing_axes(x, axis, "RMSNormalization")
    xs = x.astype(_stash_dtype(stash_type))
    rms = np.sqrt((xs * xs).mean(axis=axes, keepdims=True) + xs.dtype.type(epsilon))
    return ((xs / rms).astype(x.dtype) * scale).astype(x.dtype)


def _group_norm(x: np.ndarray, scale: np.ndarray, bias: np.ndarray, num_groups: int, epsilon: float,
                stash_type: int, per_group: bool) -> np.ndarray:
    n, c = x.shape[:2]
    if num_groups < 1 or c % num_groups:
        raise KernelError(f"GroupNormalization: {c} channels are not divisible by num_groups={num_groups}")
    grouped = x.reshape(n, num_groups, -1)
    normalized, *_ = _standardize(grouped, (2,), epsilon, _stash_dtype(stash_type).type)
    normalized = normalized.astype(x.dtype).reshape(x.shape)
    if per_group:  # opset 18: one scale/bias per group
        scale, bias = np.repeat(scale, c // num_groups), np.repeat(bias, c // num_groups)
    shape = _channel_shape(x)
    return (normalized * scale.reshape(shape) + bias.reshape(shape)).astype(x.dtype)


@register("GroupNormalization", since=18)
def group_normalization_18(x, scale, bias, *, num_groups=None, epsilon=1e-5):
    return _group_norm(x, scale, bias, num_groups, epsilon, 1, per_group=True)


@register("GroupNormalization", since=21)
def group_normalization(x, scale, bias, *, num_groups=None, epsilon=1e-5, stash_type=1):
    return _group_norm(x, scale, bias, num_groups, epsilon, stash_type, per_group=False)


@register("LRN", since=1)
def lrn(x, *, size=None, alpha=1e-4, beta=0.75, bias=1.0):
    """Local response normalization across channels (axis 1) in windows of ``size`` channels."""
    if size is None or size < 1:
        raise KernelError(f"LRN: attribute size must be a positive integer, got {size}")
    if x.ndim < 2:
        raise KernelError(f"LRN: input must be N x C x ..., got shape {x.shape}")
    sq = np.moveaxis(x.astype(np.float64) ** 2, 1, -1)
    padded = pad_spatial(sq, ((size - 1) // 2,), (size // 2,), 0)
    square_sum = np.moveaxis(window_view(padded, (size,), (1,), (1,)).sum(axis=-1), -1, 1)
    return (x / (bias + alpha / size * square_sum) ** beta).astype(x.dtype)


@register("LpNormalization", since=1)
def lp_normalization(x, *, axis=-1, p=2):
    if p not in (1, 2):
        raise KernelError(f"LpNormalization: p must be 1 or 2, got {p}")
    if not -x.ndim <= axis < x.ndim:
        raise KernelError(f"LpNormalization: axis {axis} out of range for input of rank {x.ndim}")
    norm = np.abs(x).sum(axis=axis, keepdims=True) if p == 1 else np.sqrt((x * x).sum(axis=axis, keepdims=True))
    safe = np.where(norm == 0, 1, norm)
    return np.where(norm == 0, 0, x / safe).astype(x.dtype)  # an all-zero slice stays zero


@register("MeanVarianceNormalization", since=9)
def mean_variance_normalization(x, *, axes=(0, 2, 3)):
    axes = tuple(axes)
    mean = x.mean(axis=axes, keepdims=True)
    std = np.sqrt((x * x).mean(axis=axes, keepdims=True) - mean * mean)
    return ((x - mean) / (std + x.dtype.type(1e-9))).astype(x.dtype)
