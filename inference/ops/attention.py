"""Attention (opset 23-25): scaled dot-product attention with GQA, KV cache, masks, softcap and windows.

One kernel serves opsets 23, 24 (``nonpad_kv_seqlen``) and 25 (``left/right_window_size``): the
later versions only add inputs and attributes whose defaults reproduce the earlier behaviour.
The attention bias is the sum of the causal, window, padding and user masks; a query row with no
attendable key gives a zero row, never NaN.
"""
from __future__ import annotations

import numpy as np
from onnx import helper

from inference.errors import KernelError
from inference.ops._attention_common import guarded_softmax, merge_heads, split_heads
from inference.ops.registry import register


def allowed_keys(q_len: int, kv_len: int, offset: np.ndarray, is_causal: int,
                 left: int, right: int) -> np.ndarray:
    """Boolean (batch|1, 1, q_len, kv_len): key j is visible to query i under causal and window rules.

    ``offset`` (one per batch, or a single value) is the absolute position of the first query.
    """
    pos = np.asarray(offset).reshape(-1, 1, 1, 1) + np.arange(q_len).reshape(1, 1, -1, 1)
    j = np.arange(kv_len).reshape(1, 1, 1, -1)
    ok = np.ones(np.broadcast_shapes(pos.shape, j.shape), dtype=bool)
    if is_causal:
        ok &= j <= pos
    if left >= 0:
        ok &= j >= pos - left
    if right >= 0:
        ok &= j <= pos + right
    return ok


def mask_bias(attn_mask: np.ndarray, total: int, dtype: np.dtype) -> np.ndarray:
    """The user mask as an additive bias, its last axis padded to ``total`` with -inf."""
    if attn_mask.dtype == np.bool_:
        bias = np.where(attn_mask, dtype.type(0), dtype.type(-np.inf)).astype(dtype)
    else:
        bias = attn_mask.astype(dtype, copy=False)
    short = total - bias.shape[-1]
    if short > 0:
        pad = [(0, 0)] * (bias.ndim - 1) + [(0, short)]
        bias = np.pad(bias, pad, constant_values=-np.inf)
    elif short < 0:
        raise KernelError(f"Attention: attn_mask last dimension {bias.shape[-1]} exceeds the total "
                          f"sequence length {total}")
    return bias


def attention_bias(q_len: int, total: int, past_len: int, nonpad_kv_seqlen, is_causal: int, left: int,
                   right: int, attn_mask, dtype: np.dtype) -> np.ndarray:
    """Additive bias broadcastable to (batch, heads, q_len, total): 0 where attended, -inf elsewhere,
    plus a float ``attn_mask``. The causal/window frontier is offset by the cached keys: the past
    length, or ``nonpad_kv_seqlen - q_len`` per batch for an external cache."""
    neg_inf = dtype.type(-np.inf)
    bias = np.zeros((1, 1, 1, 1), dtype=dtype)
    offset = np.array(past_len)
    if nonpad_kv_seqlen is not None:
        valid = np.asarray(nonpad_kv_seqlen).reshape(-1, 1, 1, 1)
        bias = np.where(np.arange(total).reshape(1, 1, 1, -1) < valid, bias, neg_inf)
        if not past_len:
            offset = valid - q_len
    visible = allowed_keys(q_len, total, offset, is_causal, left, right)
    bias = np.where(visible, bias, neg_inf).astype(dtype)
    if attn_mask is not None:
        bias = (bias + mask_bias(attn_mask, total, dtype)).astype(dtype)
    return bias


@register("Attention", since=23)
def attention(Q, K, V, attn_mask=None, past_key=None, past_value=None, nonpad_kv_seqlen=None, *,
              is_causal=0, kv_num_heads=0, q_num_heads=0, qk_matmul_output_mode=0, scale=None,
              softcap=0.0, softmax_precision=None, left_window_size=-1, right_window_size=-1):
    """Returns (Y, present_key, present_value, qk_matmul_output), computed in the inputs' dtype."""
    if qk_matmul_output_mode not in (0, 1, 2, 3):
        raise KernelError(f"Attention: qk_matmul_output_mode must be 0..3, got {qk_matmul_output_mode}")
    if (past_key is None) != (past_value is None):
        raise KernelError("Attention: past_key and past_value must be given together")
    dtype = Q.dtype
    q = split_heads(Q, q_num_heads, "Q")
    k = split_heads(K, kv_num_heads, "K")
    v = split_heads(V, kv_num_heads, "V")
    past_len = 0
    if past_key is not None:
        past_len = past_key.shape[2]
        k = np.concatenate([past_key, k], axis=2)
        v = np.concatenate([past_value, v], axis=2)
    present_k, present_v = k, v

    hq, hkv = q.shape[1], k.shape[1]
    if hkv == 0 or hq % hkv:
        raise KernelError(f"Attention: q heads ({hq}) must be a multiple of kv heads ({hkv})")
    k = np.repeat(k, hq // hkv, axis=1)  # GQA: query head h reads kv head h // (hq / hkv)
    v = np.repeat(v, hq // hkv, axis=1)

    scale = 1.0 / np.sqrt(q.shape[3]) if scale is None else scale
    root = dtype.type(np.sqrt(scale))  # scale Q and K by sqrt(scale) each, as the spec does
    qk = np.matmul(q * root, np.swapaxes(k * root, -1, -2)).astype(dtype)
    capped = (dtype.type(softcap) * np.tanh(qk / dtype.type(softcap))).astype(dtype) if softcap else qk
    bias = attention_bias(q.shape[2], k.shape[2], past_len, nonpad_kv_seqlen, is_causal, left_window_size,
                          right_window_size, attn_mask, dtype)
    biased = (capped + bias).astype(dtype)

    work = helper.tensor_dtype_to_np_dtype(softmax_precision) if softmax_precision else dtype
    probs = guarded_softmax(biased.astype(work)).astype(dtype)
    y = np.matmul(probs, v).astype(dtype)
    if Q.ndim == 3:
        y = merge_heads(y)
    return y, present_k, present_v, (qk, capped, biased, probs)[qk_matmul_output_mode]
