"""CausalConvWithState (opset 27): depthwise causal 1D convolution carrying its last k-1 inputs.

The past state (zeros when absent) is prepended to the input; the output at t sums the k taps
ending at t, and the present state is the last k-1 positions of that padded sequence.
"""
from __future__ import annotations

import numpy as np

from inference.errors import KernelError
from inference.ops.registry import register

_ACTIVATIONS = ("none", "silu", "swish")


@register("CausalConvWithState", since=27)
def causal_conv_with_state(input, weight, bias=None, past_state=None, *, activation="none"):
    if activation not in _ACTIVATIONS:
        raise KernelError(f"CausalConvWithState: activation must be one of {_ACTIVATIONS}, got {activation!r}")
    if input.ndim != 3 or weight.ndim != 3 or weight.shape[:2] != (input.shape[1], 1):
        raise KernelError(f"CausalConvWithState: expected input (N, C, L) and weight (C, 1, k), "
                          f"got {input.shape} and {weight.shape}")
    n, c, length = input.shape
    k = weight.shape[2]
    if past_state is None:
        past_state = np.zeros((n, c, k - 1), input.dtype)
    padded = np.concatenate([past_state.astype(input.dtype), input], axis=2)
    work = np.promote_types(input.dtype, np.float32)  # half types accumulate in float32
    w = weight[:, 0, :].astype(work)  # (C, k)
    out = sum(w[:, j, None] * padded[:, :, j:j + length].astype(work) for j in range(k))
    if bias is not None:
        out = out + bias[:, None].astype(work)
    out = out.astype(input.dtype)
    if activation != "none":  # SiLU on the rounded convolution, as a separate op would see it
        y = out.astype(work)
        out = (y / (1 + np.exp(-y))).astype(input.dtype)
    return out, padded[:, :, padded.shape[2] - (k - 1):].copy()
