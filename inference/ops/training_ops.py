"""ai.onnx.preview.training optimizers (Adagrad, Momentum, Adam): one update step of several tensors.

Inputs are R (learning rate), T (update count), then n tensors X, n gradients G and n of each
optimizer state; outputs are the n new X followed by the n new values of each state.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from inference.errors import KernelError
from inference.ops.registry import register

_DOMAIN = "ai.onnx.preview.training"


def _groups(op: str, tensors: Sequence[np.ndarray], n_states: int) -> list[tuple[np.ndarray, ...]]:
    """Split X1..Xn, G1..Gn, S1_1..S1_n, ... into per-tensor tuples (X, G, *states)."""
    per = 2 + n_states
    if not tensors or len(tensors) % per:
        raise KernelError(f"{op}: expected R, T and a multiple of {per} tensors (X, G and {n_states} "
                          f"state(s) each), got {len(tensors)} after R and T")
    n = len(tensors) // per
    return [tuple(tensors[k * n + i] for k in range(per)) for i in range(n)]


def _run(op: str, tensors: Sequence[np.ndarray], n_states: int, update: Callable) -> tuple[np.ndarray, ...]:
    """Apply ``update(X, G, *states) -> (X_new, *states_new)`` to each tensor; outputs grouped by kind."""
    groups = _groups(op, tensors, n_states)
    results = [update(*group) for group in groups]
    return tuple(np.asarray(res[k]).astype(group[0].dtype)
                 for k in range(1 + n_states) for res, group in zip(results, groups))


@register("Adagrad", since=1, domain=_DOMAIN)
def adagrad(R, T, *tensors, decay_factor=0.0, epsilon=1e-6, norm_coefficient=0.0):
    r = R / (1 + T * decay_factor)

    def update(x, g, h):
        g = norm_coefficient * x + g
        h_new = h + g * g
        return x - r * g / (np.sqrt(h_new) + epsilon), h_new

    return _run("Adagrad", tensors, 1, update)


@register("Momentum", since=1, domain=_DOMAIN)
def momentum(R, T, *tensors, alpha, beta, mode, norm_coefficient):
    if mode not in ("standard", "nesterov"):
        raise KernelError(f"Momentum: mode must be 'standard' or 'nesterov', got {mode!r}")
    beta_adj = beta if T > 0 else 1.0

    def update(x, g, v):
        g = norm_coefficient * x + g
        v_new = alpha * v + beta_adj * g
        step = g + alpha * v_new if mode == "nesterov" else v_new
        return x - R * step, v_new

    return _run("Momentum", tensors, 1, update)


@register("Adam", since=1, domain=_DOMAIN)
def adam(R, T, *tensors, alpha=0.9, beta=0.999, epsilon=1e-6, norm_coefficient=0.0, norm_coefficient_post=0.0):
    r = R * np.sqrt(1 - beta ** T) / (1 - alpha ** T) if T > 0 else R

    def update(x, g, v, h):
        g = norm_coefficient * x + g
        v_new = alpha * v + (1 - alpha) * g
        h_new = beta * h + (1 - beta) * g * g
        x_new = x - r * v_new / (np.sqrt(h_new) + epsilon)
        return (1 - norm_coefficient_post) * x_new, v_new, h_new

    return _run("Adam", tensors, 2, update)
