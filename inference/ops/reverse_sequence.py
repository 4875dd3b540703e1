"""ReverseSequence: reverse the first sequence_lens[b] time steps of every batch entry."""
from __future__ import annotations

import numpy as np

from inference.errors import KernelError
from inference.ops._axes import normalize_axis
from inference.ops.registry import register


@register("ReverseSequence", since=10)
def reverse_sequence(x, sequence_lens, *, batch_axis=1, time_axis=0):
    if x.ndim < 2:
        raise KernelError(f"ReverseSequence: input must have rank >= 2, got shape {x.shape}")
    batch_axis = normalize_axis(batch_axis, x.ndim, "batch_axis")
    time_axis = normalize_axis(time_axis, x.ndim, "time_axis")
    if batch_axis == time_axis:
        raise KernelError("ReverseSequence: batch_axis and time_axis must differ")
    steps, batch = x.shape[time_axis], x.shape[batch_axis]
    lens = np.asarray(sequence_lens, dtype=np.int64).reshape(-1)
    if lens.shape != (batch,) or (lens < 0).any() or (lens > steps).any():
        raise KernelError(f"ReverseSequence: sequence_lens {lens} must be {batch} values in [0, {steps}]")
    t = np.arange(steps)[:, None]  # (time, batch) source step of every output step
    src = np.where(t < lens, lens - 1 - t, t)
    shape = [1] * x.ndim
    shape[time_axis], shape[batch_axis] = steps, batch
    order = src if time_axis < batch_axis else src.T
    idx = np.broadcast_to(order.reshape(shape), x.shape)
    return np.take_along_axis(x, idx, axis=time_axis)
