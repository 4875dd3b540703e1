"""RotaryEmbedding (opset 23): rotate pairs of features by position-dependent angles (RoPE).

The pairs are either the two halves of the rotated part of each head (``interleaved=0``) or
adjacent features (``interleaved=1``); features past ``rotary_embedding_dim`` pass through.
"""
from __future__ import annotations

import numpy as np

from inference.errors import KernelError
from inference.ops.registry import register


def _to_bshd(x: np.ndarray, num_heads: int) -> np.ndarray:
    """Input as (batch, seq, heads, head_size) from 4D (batch, heads, seq, size) or 3D (batch, seq, hidden)."""
    if x.ndim == 4:
        return x.transpose(0, 2, 1, 3)
    if x.ndim != 3:
        raise KernelError(f"RotaryEmbedding: X must be 3D or 4D, got rank {x.ndim}")
    if not num_heads or x.shape[2] % num_heads:
        raise KernelError(f"RotaryEmbedding: 3D input needs num_heads dividing hidden size {x.shape[2]}, "
                          f"got num_heads={num_heads}")
    b, s, hidden = x.shape
    return x.reshape(b, s, num_heads, hidden // num_heads)


@register("RotaryEmbedding", since=23)
def rotary_embedding(X, cos_cache, sin_cache, position_ids=None, *, interleaved=0, num_heads=0,
                     rotary_embedding_dim=0):
    x = _to_bshd(X, num_heads)
    dim = rotary_embedding_dim or x.shape[3]
    if position_ids is not None:
        cos_cache, sin_cache = cos_cache[position_ids], sin_cache[position_ids]
    if cos_cache.shape[-1] != dim // 2 or sin_cache.shape[-1] != dim // 2:
        raise KernelError(f"RotaryEmbedding: cos/sin caches have last dimension {cos_cache.shape[-1]}/"
                          f"{sin_cache.shape[-1]}, expected rotary_embedding_dim / 2 = {dim // 2}")
    cos, sin = cos_cache[:, :, None, :], sin_cache[:, :, None, :]  # (batch, seq, 1, dim/2)
    rot = x[..., :dim]
    x1, x2 = (rot[..., 0::2], rot[..., 1::2]) if interleaved else np.split(rot, 2, axis=-1)
    real, imag = cos * x1 - sin * x2, sin * x1 + cos * x2
    if interleaved:
        rotated = np.stack([real, imag], axis=-1).reshape(rot.shape)
    else:
        rotated = np.concatenate([real, imag], axis=-1)
    y = np.concatenate([rotated, x[..., dim:]], axis=-1).astype(X.dtype)
    return y.reshape(X.shape) if X.ndim == 3 else y.transpose(0, 2, 1, 3)
