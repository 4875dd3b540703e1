"""Classification losses: NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss (= NLL of log-softmax)."""
from __future__ import annotations

import numpy as np

from inference.errors import KernelError
from inference.ops.registry import register
from inference.ops.softmax import log_softmax

_REDUCTIONS = ("none", "sum", "mean")


def _nll(log_prob: np.ndarray, target: np.ndarray, weight: np.ndarray | None, reduction: str,
         ignore_index: int | None, op: str) -> np.ndarray:
    """Weighted negative log-likelihood of ``target`` classes (axis 1 of ``log_prob``)."""
    if reduction not in _REDUCTIONS:
        raise KernelError(f"{op}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if log_prob.ndim < 2 or target.shape != log_prob.shape[:1] + log_prob.shape[2:]:
        raise KernelError(f"{op}: input must be (N, C, d1..dk) and target (N, d1..dk), "
                          f"got {log_prob.shape} and {target.shape}")
    keep = np.ones(target.shape, dtype=bool) if ignore_index is None else target != ignore_index
    safe = np.where(keep, target, 0).astype(np.int64)
    picked = np.take_along_axis(log_prob, np.expand_dims(safe, 1), axis=1)[:, 0]
    w = (np.ones_like(picked) if weight is None else weight[safe].astype(picked.dtype)) * keep
    loss = -picked * w
    if reduction == "none":
        return loss.astype(log_prob.dtype)
    total = loss.sum(dtype=np.float64)
    if reduction == "mean":
        total = total / w.sum(dtype=np.float64)
    return np.asarray(total, dtype=log_prob.dtype)


@register("NegativeLogLikelihoodLoss", since=12)
def negative_log_likelihood_loss(x, target, weight=None, *, reduction="mean", ignore_index=None):
    return _nll(x, target, weight, reduction, ignore_index, "NegativeLogLikelihoodLoss")


@register("SoftmaxCrossEntropyLoss", since=12)
def softmax_cross_entropy_loss(scores, labels, weights=None, *, reduction="mean", ignore_index=None, ctx):
    log_prob = log_softmax(scores, 1).astype(scores.dtype)
    loss = _nll(log_prob, labels, weights, reduction, ignore_index, "SoftmaxCrossEntropyLoss")
    return (loss, log_prob) if ctx.num_outputs > 1 else loss
