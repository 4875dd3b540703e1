"""Ops that create tensors from attributes or shapes: Constant, ConstantOfShape, Range, EyeLike, Trilu,
and the random generators (Bernoulli, RandomNormal, RandomUniform and their *Like forms)."""
from __future__ import annotations

import math

import numpy as np
from onnx import TensorProto

from inference.errors import KernelError
from inference.ops._axes import int_list, np_dtype, scalar
from inference.ops.registry import register

_CONSTANT_ATTRS = {
    "value": lambda v: v,
    "sparse_value": lambda v: v,
    "value_float": lambda v: np.array(v, dtype=np.float32),
    "value_floats": lambda v: np.array(v, dtype=np.float32),
    "value_int": lambda v: np.array(v, dtype=np.int64),
    "value_ints": lambda v: np.array(v, dtype=np.int64),
    "value_string": lambda v: np.array(v, dtype=object),
    "value_strings": lambda v: np.array(v, dtype=object),
}


@register("Constant", since=1)
def constant(**attrs):
    """Exactly one ``value*`` attribute gives the output (tensor, sparse, float(s), int(s), string(s))."""
    given = [k for k in attrs if k in _CONSTANT_ATTRS]
    if len(given) != 1 or len(attrs) != 1:
        raise KernelError(f"Constant: needs exactly one value attribute, got {sorted(attrs)}")
    name = given[0]
    return np.asarray(_CONSTANT_ATTRS[name](attrs[name]))


@register("ConstantOfShape", since=9)
def constant_of_shape(shape, *, value=None):
    fill = np.zeros(1, np.float32) if value is None else np.asarray(value)
    if fill.size != 1:
        raise KernelError(f"ConstantOfShape: value must hold one element, got shape {fill.shape}")
    dims = int_list(shape)
    if any(d < 0 for d in dims):
        raise KernelError(f"ConstantOfShape: negative dim in shape {dims}")
    return np.full(dims, fill.reshape(-1)[0], dtype=fill.dtype)


_LOW_PRECISION = (np.dtype(np.float16), np_dtype(TensorProto.BFLOAT16))


def _range(start: np.ndarray, limit: np.ndarray, delta: np.ndarray, stash: bool = True) -> np.ndarray:
    """``start + i * delta`` for i < max(ceil((limit - start) / delta), 0), in the input type;
    float16/bfloat16 are computed in float32 when ``stash``, else by repeated low-precision adds."""
    dtype = np.asarray(start).dtype
    s, lim, d = scalar(start), scalar(limit), scalar(delta)
    if d == 0:
        raise KernelError("Range: delta must not be 0")
    exact = all(isinstance(v, int) for v in (s, lim, d))
    count = max(-((s - lim) // d) if exact else math.ceil((lim - s) / d), 0)
    if dtype in _LOW_PRECISION and not stash:
        steps = np.full(count, d, dtype=dtype)
        steps[:1] = s
        return np.cumsum(steps, dtype=dtype)
    work = np.float32 if dtype in _LOW_PRECISION else dtype
    return (np.asarray(s, work) + np.arange(count, dtype=work) * np.asarray(d, work)).astype(dtype)


@register("Range", since=11)
def range_v11(start, limit, delta):
    return _range(start, limit, delta)


@register("Range", since=27)
def range_(start, limit, delta, *, stash_type=1):
    return _range(start, limit, delta, stash=stash_type == 1)


@register("EyeLike", since=9)
def eye_like(x, *, dtype=None, k=0):
    if x.ndim != 2:
        raise KernelError(f"EyeLike: input must be 2-D, got shape {x.shape}")
    out_type = x.dtype if dtype is None else np_dtype(dtype)
    return np.eye(*x.shape, k=k, dtype=np.float64).astype(out_type)


@register("Trilu", since=14)
def trilu(x, k=None, *, upper=1):
    if x.ndim < 2:
        raise KernelError(f"Trilu: input must have rank >= 2, got shape {x.shape}")
    diag = 0 if k is None else int(scalar(k))
    return np.triu(x, diag) if upper else np.tril(x, diag)


# --- random generators -----------------------------------------------------------------------

def _rng(seed: float | None) -> np.random.Generator:
    return np.random.default_rng(None if seed is None else int(seed))


def _out_type(dtype: int | None, like: np.ndarray | None) -> np.dtype:
    if dtype is not None:
        return np_dtype(dtype)
    return np.dtype(np.float32) if like is None else like.dtype


@register("RandomNormal", since=1)
def random_normal(*, shape, dtype=TensorProto.FLOAT, mean=0.0, scale=1.0, seed=None):
    return _rng(seed).normal(mean, scale, size=shape).astype(np_dtype(dtype))


@register("RandomUniform", since=1)
def random_uniform(*, shape, dtype=TensorProto.FLOAT, low=0.0, high=1.0, seed=None):
    return _rng(seed).uniform(low, high, size=shape).astype(np_dtype(dtype))


@register("RandomNormalLike", since=1)
def random_normal_like(x, *, dtype=None, mean=0.0, scale=1.0, seed=None):
    return _rng(seed).normal(mean, scale, size=x.shape).astype(_out_type(dtype, x))


@register("RandomUniformLike", since=1)
def random_uniform_like(x, *, dtype=None, low=0.0, high=1.0, seed=None):
    return _rng(seed).uniform(low, high, size=x.shape).astype(_out_type(dtype, x))


@register("Bernoulli", since=15)
def bernoulli(p, *, dtype=None, seed=None):
    draws = _rng(seed).uniform(0.0, 1.0, size=p.shape) < p
    return draws.astype(_out_type(dtype, p))
