"""Dropout: identity at inference; in training mode zeroes a random ``ratio`` of values and rescales."""
from __future__ import annotations

import numpy as np

from inference.errors import KernelError
from inference.ops.registry import register


def _dropout(x: np.ndarray, ratio: float, training: bool, seed: int | None, num_outputs: int):
    if not 0.0 <= ratio < 1.0:
        raise KernelError(f"Dropout: ratio must be in [0, 1), got {ratio}")
    if not training or ratio == 0.0:
        mask = np.ones(x.shape, dtype=bool)
        y = x.copy()
    else:
        rng = np.random.RandomState(seed) if seed is not None else np.random.RandomState()
        mask = rng.uniform(0.0, 1.0, x.shape) >= ratio
        y = (x * mask / x.dtype.type(1.0 - ratio)).astype(x.dtype)
    return (y, mask) if num_outputs > 1 else y


@register("Dropout", since=1)
def dropout_legacy(x, *, ratio=0.5, is_test=0, consumed_inputs=None, ctx):
    """Opsets 1-11: ratio is an attribute; the runtime always runs in inference mode."""
    return _dropout(x, ratio, False, None, ctx.num_outputs)


@register("Dropout", since=12)
def dropout(x, ratio=None, training_mode=None, *, seed=None, ctx):
    r = 0.5 if ratio is None else float(np.asarray(ratio))
    training = bool(training_mode) if training_mode is not None else False
    return _dropout(x, r, training, seed, ctx.num_outputs)
