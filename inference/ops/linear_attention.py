"""LinearAttention (opset 27): recurrent linear attention (linear, gated, delta, gated-delta rules).

Runs the recurrence token by token over a (batch, kv_heads, d_k, d_v) state, each query head
reading the state of its kv head (GQA). Chunked prefill is only a speed-up, so the sequential form
is the exact reference.
"""
from __future__ import annotations

import numpy as np

from inference.errors import KernelError
from inference.ops._attention_common import merge_heads, split_heads
from inference.ops.registry import register

_RULES = ("linear", "gated", "delta", "gated_delta")


def _per_head(x: np.ndarray, kv_heads: int, d_k: int) -> np.ndarray:
    """Decay or beta (batch, T, H*d_k | H | 1) as (batch, H|1, T, d_k|1), broadcastable onto the state rows."""
    b, t, n = x.shape
    if n == kv_heads * d_k:
        return x.reshape(b, t, kv_heads, d_k).transpose(0, 2, 1, 3)
    if n in (kv_heads, 1):
        return x.transpose(0, 2, 1)[..., None]
    raise KernelError(f"LinearAttention: last dimension {n} of decay/beta matches neither "
                      f"kv_num_heads*d_k={kv_heads * d_k}, kv_num_heads={kv_heads} nor 1")


@register("LinearAttention", since=27)
def linear_attention(query, key, value, past_state=None, decay=None, beta=None, *, q_num_heads=0,
                     kv_num_heads=0, update_rule="gated_delta", scale=0.0, chunk_size=64):
    if update_rule not in _RULES:
        raise KernelError(f"LinearAttention: update_rule must be one of {_RULES}, got {update_rule!r}")
    if not kv_num_heads or q_num_heads % kv_num_heads:
        raise KernelError(f"LinearAttention: q_num_heads ({q_num_heads}) must be a positive multiple of "
                          f"kv_num_heads ({kv_num_heads})")
    gated, delta = "gated" in update_rule, "delta" in update_rule
    if (gated and decay is None) or (delta and beta is None):
        raise KernelError(f"LinearAttention: update_rule {update_rule!r} needs "
                          f"{'decay' if gated and decay is None else 'beta'}")
    dtype = query.dtype
    work = np.promote_types(dtype, np.float32)  # half types accumulate in float32
    query, key, value = (a.astype(work) for a in (query, key, value))
    decay, beta = (None if a is None else a.astype(work) for a in (decay, beta))
    q = split_heads(query, q_num_heads, "query", "LinearAttention")  # (B, Hq, T, dk)
    k = split_heads(key, kv_num_heads, "key", "LinearAttention")      # (B, Hkv, T, dk)
    v = split_heads(value, kv_num_heads, "value", "LinearAttention")  # (B, Hkv, T, dv)
    b, _, steps, d_k = k.shape
    d_v = v.shape[3]
    scale = work.type(scale or 1.0 / np.sqrt(query.shape[-1] / q_num_heads))
    state = (np.zeros((b, kv_num_heads, d_k, d_v), work) if past_state is None
             else past_state.astype(work))
    g = np.exp(_per_head(decay, kv_num_heads, d_k)) if gated else None  # (B, H|1, T, dk|1)
    bt = _per_head(beta, kv_num_heads, 1) if delta else None
    group = q_num_heads // kv_num_heads
    outs = []
    for t in range(steps):
        kt, vt = k[:, :, t], v[:, :, t]  # (B, H, dk), (B, H, dv)
        if gated:
            state = g[:, :, t, :, None] * state
        if delta:
            err = vt - np.einsum("bhkv,bhk->bhv", state, kt)
            vt = bt[:, :, t] * err
        state = state + kt[..., :, None] * vt[..., None, :]
        shared = np.repeat(state, group, axis=1)  # (B, Hq, dk, dv)
        outs.append(scale * np.einsum("bhk,bhkv->bhv", q[:, :, t], shared))
    out = np.stack(outs, axis=2) if outs else np.zeros((b, q_num_heads, 0, d_v), work)
    return merge_heads(out).astype(dtype), state.astype(dtype)
