"""FlexAttention (ai.onnx.preview opset 1): scaled dot-product attention with score/prob modifier subgraphs.

Scores and probabilities live in ``softmax_precision`` (float32 unless the inputs are double);
the optional ``score_mod`` and ``prob_mod`` subgraphs are run through the session (``ctx.run_graph``).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from onnx import helper

from inference.errors import KernelError
from inference.ops._attention_common import guarded_softmax
from inference.ops.registry import KernelContext, register


def _first_input_name(graph: Any) -> str:
    """Name of a subgraph's single input, for an onnx GraphProto or our IR Graph."""
    if hasattr(graph, "input"):  # onnx.GraphProto
        return graph.input[0].name
    first = graph.inputs[0]
    return first if isinstance(first, str) else first.name


def _apply_mod(graph: Any, x: np.ndarray, ctx: KernelContext, name: str) -> np.ndarray:
    """Run a modifier subgraph on ``x``; it must keep the shape."""
    if graph is None:
        return x
    out = np.asarray(ctx.run_graph(graph, {_first_input_name(graph): x})[0])
    if out.shape != x.shape:
        raise KernelError(f"FlexAttention: {name} changed the shape {x.shape} to {out.shape}")
    return out.astype(x.dtype, copy=False)


@register("FlexAttention", since=1, domain="ai.onnx.preview")
def flex_attention(Q, K, V, *, scale=None, softmax_precision=None, score_mod=None, prob_mod=None, ctx):
    if Q.ndim != 4 or K.ndim != 4 or V.ndim != 4:
        raise KernelError(f"FlexAttention: Q, K, V must be rank 4, got {Q.ndim}, {K.ndim}, {V.ndim}")
    hq, hkv = Q.shape[1], K.shape[1]
    if hq % hkv:
        raise KernelError(f"FlexAttention: q heads ({hq}) must be a multiple of kv heads ({hkv})")
    if softmax_precision:
        work = np.dtype(helper.tensor_dtype_to_np_dtype(softmax_precision))
    else:
        work = np.dtype(np.float64 if Q.dtype == np.float64 else np.float32)
    k = np.repeat(K, hq // hkv, axis=1).astype(work)
    v = np.repeat(V, hq // hkv, axis=1).astype(work)
    scale = 1.0 / np.sqrt(Q.shape[3]) if scale is None else scale
    scores = (Q.astype(work) @ np.swapaxes(k, -1, -2)) * work.type(scale)
    scores = _apply_mod(score_mod, scores, ctx, "score_mod")
    probs = _apply_mod(prob_mod, guarded_softmax(scores), ctx, "prob_mod")
    return (probs @ v).astype(Q.dtype)
