"""Losses as IR: each ``build`` emits standard ONNX ops into the training-step graph.

Only ops with gradient rules sit on the path from the prediction to the loss (|x| is written
``Relu(x) + Relu(-x)``, min/max through Relu), and every reduction is a full ``ReduceSum``
(no axes), so the emitted graph is valid at any opset the imported model uses. Masks, one-hot
targets and batch sizes lie off the differentiable path and may use any op.
"""
from __future__ import annotations

import fnmatch
from typing import Any, Callable, Sequence

import numpy as np
from onnx import TensorProto

from inference.errors import InvalidModelError
from inference.ir import TensorType
from training.protocols import Loss, StepBuilder

__all__ = ["CrossEntropyLoss", "BCEWithLogitsLoss", "MSELoss", "L1Loss", "HuberLoss", "KLDivLoss",
           "WeightedSum", "L1Regularizer", "L2Regularizer", "CustomLoss", "bind_parameters"]


# -- small emitters shared by the losses --------------------------------------------------------
def _dtype(b: StepBuilder, name: str) -> np.dtype:
    t = b.type_of(name)
    return t.dtype if isinstance(t, TensorType) else np.dtype(np.float32)


def _c(b: StepBuilder, value: Any, like: str) -> str:
    """A constant of ``like``'s dtype."""
    return b.const(np.asarray(value, dtype=_dtype(b, like)), _dtype(b, like))


def _abs(b: StepBuilder, x: str) -> str:
    return b.op("Add", b.op("Relu", x), b.op("Relu", b.op("Neg", x)))


def _total(b: StepBuilder, x: str) -> str:
    return b.op("ReduceSum", x, keepdims=0)


def _count(b: StepBuilder, x: str, axis: int | None, like: str) -> str:
    """Number of elements of ``x`` (or its size along ``axis``) as a scalar of ``like``'s dtype."""
    to = TensorProto.FLOAT if _dtype(b, like) == np.float32 else TensorProto.DOUBLE
    if axis is None:
        return b.op("Cast", b.op("Size", x), to=to)
    return b.op("Cast", b.op("Gather", b.op("Shape", x), b.const(np.asarray(axis, np.int64), np.int64), axis=0),
                to=to)


def _reduce(b: StepBuilder, per_elem: str, reduction: str, like: str) -> str:
    """Sum or mean of ``per_elem``; ``like`` (a typed value) gives the dtype of the count."""
    if reduction == "sum":
        return _total(b, per_elem)
    if reduction == "mean":
        return b.op("Div", _total(b, per_elem), _count(b, per_elem, None, like))
    raise InvalidModelError(f"reduction must be 'mean' or 'sum' (a loss is a scalar), got {reduction!r}")


def _softplus_neg(b: StepBuilder, x: str) -> str:
    """log(1 + exp(-x)) without overflow: relu(-x) + log(1 + exp(-|x|))."""
    tail = b.op("Log", b.op("Add", _c(b, 1.0, x), b.op("Exp", b.op("Neg", _abs(b, x)))))
    return b.op("Add", b.op("Relu", b.op("Neg", x)), tail)


def _as_prediction(b: StepBuilder, target: str, prediction: str) -> str:
    """The target cast to the prediction's dtype and reshaped to its shape (labels of shape (N,) vs (N, 1))."""
    t_type, p_type = b.type_of(target), b.type_of(prediction)
    to = TensorProto.FLOAT if _dtype(b, prediction) == np.float32 else TensorProto.DOUBLE
    if not (isinstance(t_type, TensorType) and t_type.dtype == _dtype(b, prediction)):
        target = b.op("Cast", target, to=to)
    if not (isinstance(t_type, TensorType) and isinstance(p_type, TensorType) and t_type.rank == p_type.rank):
        target = b.op("Reshape", target, b.op("Shape", prediction))
    return target


# -- losses ---------------------------------------------------------------------------------------
class CrossEntropyLoss:
    """Softmax cross-entropy of logits (N, C) against integer class targets (N,), as PyTorch.

    With weights ``w`` and smoothing ``eps`` the per-sample target distribution is
    ``q = (1 - eps) * onehot + eps / C`` and the mean is ``sum_i m_i sum_c w_c q_ic (-log p_ic) /
    sum_i m_i w_{y_i}``, where ``m_i`` masks out samples whose target is ``ignore_index``.
    """

    def __init__(self, weight: Sequence[float] | None = None, label_smoothing: float = 0.0,
                 ignore_index: int | None = None, reduction: str = "mean"):
        self.weight = None if weight is None else np.asarray(weight, dtype=np.float64)
        self.label_smoothing, self.ignore_index, self.reduction = float(label_smoothing), ignore_index, reduction

    def target_type(self, prediction: TensorType) -> TensorType:
        shape = None if prediction.shape is None else tuple(prediction.shape[:1])
        return TensorType(TensorProto.INT64, shape)

    def build(self, b: StepBuilder, prediction: str, target: str) -> str:
        p_type = b.type_of(prediction)
        n_classes = p_type.shape[1] if isinstance(p_type, TensorType) and p_type.shape else None
        if not isinstance(n_classes, int):
            raise InvalidModelError(f"CrossEntropyLoss needs the class count: {prediction!r} has type {p_type}")
        logp = b.op("LogSoftmax", prediction, axis=1)
        labels = target if _dtype(b, target) == np.int64 else b.op("Cast", target, to=TensorProto.INT64)
        mask = None
        if self.ignore_index is not None:
            keep = b.op("Not", b.op("Equal", labels, b.const(np.asarray(self.ignore_index, np.int64), np.int64)))
            labels = b.op("Where", keep, labels, b.const(np.asarray(0, np.int64), np.int64))
            mask = b.op("Unsqueeze", b.op("Cast", keep, to=_onnx_float(b, prediction)),
                        b.const(np.asarray([1], np.int64), np.int64))
        off_on = _c(b, [0.0, 1.0], prediction)
        onehot = b.op("OneHot", labels, b.const(np.asarray(n_classes, np.int64), np.int64), off_on, axis=-1)
        eps = self.label_smoothing
        q = onehot if eps == 0 else b.op("Add", b.op("Mul", onehot, _c(b, 1 - eps, prediction)),
                                         _c(b, eps / n_classes, prediction))
        w_sample = onehot  # per-sample weight of the true class, spread over C (summed later)
        if self.weight is not None:
            if self.weight.shape != (n_classes,):
                raise InvalidModelError(f"CrossEntropyLoss weight has shape {self.weight.shape}, "
                                        f"expected ({n_classes},)")
            w = _c(b, self.weight, prediction)
            q, w_sample = b.op("Mul", q, w), b.op("Mul", onehot, w)
        if mask is not None:
            q, w_sample = b.op("Mul", q, mask), b.op("Mul", w_sample, mask)
        total = b.op("Neg", _total(b, b.op("Mul", q, logp)))
        if self.reduction == "sum":
            return total
        if self.reduction != "mean":
            raise InvalidModelError(f"reduction must be 'mean' or 'sum', got {self.reduction!r}")
        return b.op("Div", total, _total(b, w_sample))


def _onnx_float(b: StepBuilder, like: str) -> int:
    return TensorProto.FLOAT if _dtype(b, like) == np.float32 else TensorProto.DOUBLE


class BCEWithLogitsLoss:
    """Binary cross-entropy of logits, as PyTorch: ``(1 - y) x + (1 + (pw - 1) y) softplus(-x)``."""


    def __init__(self, pos_weight: float | Sequence[float] | None = None, reduction: str = "mean"):
        self.pos_weight, self.reduction = pos_weight, reduction

    def build(self, b: StepBuilder, prediction: str, target: str) -> str:
        y = _as_prediction(b, target, prediction)
        x = prediction
        lin = b.op("Mul", b.op("Sub", _c(b, 1.0, x), y), x)
        sp = _softplus_neg(b, x)
        if self.pos_weight is not None:
            pw = np.asarray(self.pos_weight, dtype=np.float64)
            sp = b.op("Mul", sp, b.op("Add", _c(b, 1.0, x), b.op("Mul", _c(b, pw - 1.0, x), y)))
        return _reduce(b, b.op("Add", lin, sp), self.reduction, prediction)


class _PointwiseLoss:
    """A loss that reduces a pointwise function of ``d = prediction - target``."""

    def __init__(self, reduction: str = "mean"):
        self.reduction = reduction

    def pointwise(self, b: StepBuilder, d: str) -> str:
        raise NotImplementedError

    def build(self, b: StepBuilder, prediction: str, target: str) -> str:
        d = b.op("Sub", prediction, _as_prediction(b, target, prediction))
        return _reduce(b, self.pointwise(b, d), self.reduction, prediction)


class MSELoss(_PointwiseLoss):
    """Mean squared error."""

    def pointwise(self, b: StepBuilder, d: str) -> str:
        return b.op("Mul", d, d)


class L1Loss(_PointwiseLoss):
    """Mean absolute error."""

    def pointwise(self, b: StepBuilder, d: str) -> str:
        return _abs(b, d)


class HuberLoss:
    """Huber: ``0.5 d^2`` below ``delta``, ``delta (|d| - delta / 2)`` above; as ``0.5 c^2 + delta (|d| - c)``
    with ``c = min(|d|, delta) = |d| - relu(|d| - delta)``."""


    def __init__(self, delta: float = 1.0, reduction: str = "mean"):
        self.delta, self.reduction = float(delta), reduction

    def build(self, b: StepBuilder, prediction: str, target: str) -> str:
        a = _abs(b, b.op("Sub", prediction, _as_prediction(b, target, prediction)))
        c = b.op("Sub", a, b.op("Relu", b.op("Sub", a, _c(b, self.delta, prediction))))
        quad = b.op("Mul", _c(b, 0.5, prediction), b.op("Mul", c, c))
        lin = b.op("Mul", _c(b, self.delta, prediction), b.op("Sub", a, c))
        return _reduce(b, b.op("Add", quad, lin), self.reduction, prediction)


class KLDivLoss:
    """Distillation loss ``T^2 * KL(softmax(t / T) || softmax(s / T))`` averaged over the batch.

    The teacher's logits are the ``target`` by default; with ``teacher_input`` they are a second
    graph input of that name (so the loss combines with a label loss in a :class:`WeightedSum`,
    and the trainer feeds the teacher's logits alongside the labels).
    """


    def __init__(self, temperature: float = 1.0, teacher_input: str | None = None):
        self.temperature, self.teacher_input = float(temperature), teacher_input

    def extra_inputs(self, prediction: TensorType) -> dict[str, TensorType]:
        return {self.teacher_input: prediction} if self.teacher_input else {}

    def build(self, b: StepBuilder, prediction: str, target: str) -> str:
        teacher = target
        if self.teacher_input:
            p_type = b.type_of(prediction)
            teacher = b.input(self.teacher_input, _dtype(b, prediction),
                              p_type.shape if isinstance(p_type, TensorType) else None)
        inv_t = _c(b, 1.0 / self.temperature, prediction)
        log_s = b.op("LogSoftmax", b.op("Mul", prediction, inv_t), axis=1)
        log_t = b.op("LogSoftmax", b.op("Mul", teacher, inv_t), axis=1)
        kl = _total(b, b.op("Mul", b.op("Exp", log_t), b.op("Sub", log_t, log_s)))
        scaled = b.op("Mul", kl, _c(b, self.temperature ** 2, prediction))
        return b.op("Div", scaled, _count(b, prediction, 0, prediction))


class WeightedSum:
    """``sum_k w_k * loss_k`` over (weight, loss) pairs; losses may be regularizers."""

    def __init__(self, terms: Sequence[tuple[float, Loss]]):
        self.terms = list(terms)

    def target_type(self, prediction: TensorType) -> TensorType:
        """The first term's target type (the label loss's), else the prediction's."""
        for _, l in self.terms:
            if hasattr(l, "target_type"):
                return l.target_type(prediction)
        return prediction

    def extra_inputs(self, prediction: TensorType) -> dict[str, TensorType]:
        out: dict[str, TensorType] = {}
        for _, l in self.terms:
            out.update(getattr(l, "extra_inputs", lambda _: {})(prediction))
        return out

    def build(self, b: StepBuilder, prediction: str, target: str) -> str:
        total = None
        for w, loss in self.terms:
            term = loss.build(b, prediction, target)
            term = term if w == 1 else b.op("Mul", term, _c(b, w, prediction))
            total = term if total is None else b.op("Add", total, term)
        if total is None:
            raise InvalidModelError("WeightedSum has no terms")
        return total


class _Regularizer:
    """A penalty over parameters chosen by glob patterns (default: every trained parameter).

    The parameter names are bound before the step graph is built (:func:`bind_parameters`).
    """


    def __init__(self, coeff: float, params: Sequence[str] = ("*",)):
        self.coeff, self.patterns = float(coeff), list(params)
        self.names: list[str] = []

    def bind(self, trainable: Sequence[str]) -> None:
        self.names = [n for n in trainable if any(fnmatch.fnmatchcase(n, p) for p in self.patterns)]

    def _penalty(self, b: StepBuilder, p: str) -> str:
        raise NotImplementedError

    def build(self, b: StepBuilder, prediction: str, target: str) -> str:
        if not self.names:
            raise InvalidModelError(f"{type(self).__name__} matches no parameters {self.patterns}; "
                                    "were they bound (training.losses.bind_parameters)?")
        total = None
        for p in self.names:
            term = _total(b, self._penalty(b, p))
            total = term if total is None else b.op("Add", total, term)
        return b.op("Mul", total, _c(b, self.coeff, self.names[0]))


class L1Regularizer(_Regularizer):
    """``coeff * sum |w|``."""

    def _penalty(self, b: StepBuilder, p: str) -> str:
        return _abs(b, p)


class L2Regularizer(_Regularizer):
    """``coeff * sum w^2`` (note: the gradient is ``2 coeff w``; optimizers' weight decay is ``coeff w``)."""

    def _penalty(self, b: StepBuilder, p: str) -> str:
        return b.op("Mul", p, p)


class CustomLoss:
    """A loss written as a function emitting IR ops: ``fn(b, prediction, target) -> scalar name``.

    ``target``: the type of the target input given the prediction's (default: the prediction's).
    """

    def __init__(self, fn: Callable[[StepBuilder, str, str], str],
                 target: Callable[[TensorType], TensorType] | None = None):
        self.fn, self._target = fn, target

    def target_type(self, prediction: TensorType) -> TensorType:
        return self._target(prediction) if self._target else prediction

    def build(self, b: StepBuilder, prediction: str, target: str) -> str:
        return self.fn(b, prediction, target)


def bind_parameters(loss: Any, trainable: Sequence[str]) -> None:
    """Tell every regularizer inside ``loss`` (possibly nested in WeightedSums) the trained names."""
    if isinstance(loss, _Regularizer):
        loss.bind(trainable)
    for _, term in getattr(loss, "terms", []):
        bind_parameters(term, trainable)
