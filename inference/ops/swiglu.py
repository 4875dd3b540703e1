"""SwiGLU (opset 28): the gated activation Y = A * sigmoid(alpha * A) * B of modern MLP blocks."""
from __future__ import annotations

import numpy as np

from inference.errors import KernelError
from inference.ops.registry import register


@register("SwiGLU", since=28)
def swiglu(A, B, *, alpha=1.0):
    if A.shape != B.shape:
        raise KernelError(f"SwiGLU: A {A.shape} and B {B.shape} must have the same shape")
    gate = A / (1 + np.exp(-A.dtype.type(alpha) * A))
    return (gate * B).astype(A.dtype)
