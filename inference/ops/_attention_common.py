"""Helpers shared by the attention-family kernels (Attention, LinearAttention, FlexAttention)."""
from __future__ import annotations

import numpy as np

from inference.errors import KernelError


def split_heads(x: np.ndarray, num_heads: int, name: str, op: str = "Attention") -> np.ndarray:
    """(batch, seq, heads * size) -> (batch, heads, seq, size); 4D inputs pass through."""
    if x.ndim == 4:
        return x
    if x.ndim != 3:
        raise KernelError(f"{op}: {name} must be 3D or 4D, got rank {x.ndim}")
    if num_heads <= 0 or x.shape[2] % num_heads:
        raise KernelError(f"{op}: {name} hidden size {x.shape[2]} is not divisible by its number "
                          f"of heads {num_heads} (set q_num_heads/kv_num_heads for 3D inputs)")
    b, s, hidden = x.shape
    return x.reshape(b, s, num_heads, hidden // num_heads).transpose(0, 2, 1, 3)


def merge_heads(x: np.ndarray) -> np.ndarray:
    """(batch, heads, seq, size) -> (batch, seq, heads * size)."""
    b, h, s, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(b, s, h * d)


def guarded_softmax(scores: np.ndarray) -> np.ndarray:
    """Softmax over the last axis; rows whose every score is -inf give zeros instead of NaN."""
    m = np.max(scores, axis=-1, keepdims=True)
    dead = np.isneginf(m)
    e = np.exp(scores - np.where(dead, 0, m).astype(scores.dtype))
    s = np.sum(e, axis=-1, keepdims=True)
    return np.where(dead, 0, e / np.where(dead, 1, s)).astype(scores.dtype)
