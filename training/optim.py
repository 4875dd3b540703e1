"""Optimizers: each emits ONE fused in-place update op per parameter (``training.kernels.optim_kernels``).

The optimizer objects hold only hyper-parameters; every piece of state (moments, momentum,
step counters, accumulated gradients) is a buffer of the step graph made with ``b.state``, so
checkpoints save it with the parameters and nothing lives on the Python side.

Where the gradient tricks live:

- clipping by value: inside the fused kernel (``clip`` attribute), elementwise, before anything else;
- clipping by global norm: needs every gradient, so :meth:`FusedOptimizer.emit_updates` emits
  the norm in IR once (ReduceSumSquare, Sum, Sqrt) and hands each update a ``scale`` input;
- gradient accumulation: inside the fused kernel (``accum`` attribute and an ``acc`` buffer):
  ``accumulate - 1`` micro-steps only add their (clipped) gradient, the last applies the mean.
  With clipping by norm, each micro-batch's gradient is clipped on its own.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

import training.kernels.optim_kernels  # noqa: F401 - registers the fused update kernels
from inference.ir import TensorType
from training.errors import TrainingError
from training.protocols import TRAIN_DOMAIN, StepBuilder

__all__ = ["FusedOptimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "clip_norm_scale"]


def clip_norm_scale(b: StepBuilder, grads: Sequence[str], max_norm: float, dtype: Any = np.float32) -> str:
    """Emit ``min(1, max_norm / (||grads||_2 + 1e-6))`` over all gradients (as PyTorch's clip_grad_norm_)."""
    dtype = np.dtype(dtype)
    squares = [b.op("ReduceSumSquare", g, keepdims=0) for g in grads]
    total = squares[0] if len(squares) == 1 else b.op("Sum", *squares)
    norm = b.op("Add", b.op("Sqrt", total), b.const(np.asarray(1e-6, dtype), dtype))
    coef = b.op("Div", b.const(np.asarray(max_norm, dtype), dtype), norm)
    return b.op("Min", coef, b.const(np.asarray(1.0, dtype), dtype))


def _type(b: StepBuilder, name: str) -> TensorType:
    t = b.type_of(name)
    if not (isinstance(t, TensorType) and t.is_static()):
        raise TrainingError(f"optimizer state for {name!r} needs its static shape, got type {t}")
    return t


class FusedOptimizer:
    """Base of the optimizers: common options and the emission of the fused op."""

    op_type = ""

    def __init__(self, lr: float, *, clip_norm: float | None = None, clip_value: float | None = None,
                 accumulate: int = 1):
        if lr <= 0:
            raise TrainingError(f"learning rate must be positive, got {lr}")
        if accumulate < 1:
            raise TrainingError(f"accumulate must be >= 1, got {accumulate}")
        self.lr, self.clip_norm, self.clip_value, self.accumulate = float(lr), clip_norm, clip_value, int(accumulate)

    # -- what subclasses define ------------------------------------------------------------------
    def _buffers(self, b: StepBuilder, param: str, t: TensorType) -> list[str | None]:
        return []

    def _attrs(self) -> dict[str, Any]:
        return {}

    # -- emission --------------------------------------------------------------------------------
    def emit_updates(self, b: StepBuilder, pairs: Sequence[tuple[str, str]], lr: str) -> list[str]:
        """Update every (param, grad) pair; with ``clip_norm`` the gradients share one norm."""
        scale = None
        if self.clip_norm and pairs:
            scale = clip_norm_scale(b, [g for _, g in pairs], self.clip_norm, _type(b, pairs[0][0]).dtype)
        return [self._emit(b, p, g, lr, scale) for p, g in pairs]

    def emit_update(self, b: StepBuilder, param: str, grad: str, lr: str) -> str:
        if self.clip_norm:
            raise TrainingError("clip_norm needs every gradient at once: call emit_updates, not emit_update")
        return self._emit(b, param, grad, lr, None)

    def _zeros(self, b: StepBuilder, param: str, suffix: str, t: TensorType, dtype: Any = None) -> str:
        return b.state(f"{param}.{suffix}", np.zeros(t.shape, dtype or t.dtype))

    def _emit(self, b: StepBuilder, param: str, grad: str, lr: str, scale: str | None) -> str:
        t = _type(b, param)
        counter = b.state(f"{param}.counter", np.zeros(2, np.int64))
        acc = self._zeros(b, param, "grad_acc", t) if self.accumulate > 1 else None
        attrs = {**self._attrs(), "clip": float(self.clip_value or 0.0), "accum": self.accumulate}
        return b.op(self.op_type, param, grad, lr, counter, scale, acc, *self._buffers(b, param, t),
                    domain=TRAIN_DOMAIN, **attrs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lr={self.lr}, {self._attrs()})"


class SGD(FusedOptimizer):
    """SGD with momentum, dampening, Nesterov and L2 weight decay (PyTorch's semantics)."""

    op_type = "SGDUpdate"

    def __init__(self, lr: float = 0.01, momentum: float = 0.0, dampening: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0, **common: Any):
        super().__init__(lr, **common)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise TrainingError("Nesterov momentum needs momentum > 0 and dampening = 0")
        self.momentum, self.dampening, self.nesterov, self.weight_decay = momentum, dampening, nesterov, weight_decay

    def _buffers(self, b: StepBuilder, param: str, t: TensorType) -> list[str | None]:
        return [self._zeros(b, param, "momentum", t)] if self.momentum else []

    def _attrs(self) -> dict[str, Any]:
        return {"momentum": float(self.momentum), "dampening": float(self.dampening),
                "nesterov": int(self.nesterov), "weight_decay": float(self.weight_decay)}


class Adam(FusedOptimizer):
    """Adam with L2 weight decay; ``fp16_state`` keeps both moments in float16 (half the memory)."""

    op_type = "AdamUpdate"
    decoupled = False

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, fp16_state: bool = False, **common: Any):
        super().__init__(lr, **common)
        self.betas, self.eps, self.weight_decay, self.fp16_state = tuple(betas), eps, weight_decay, fp16_state

    def _buffers(self, b: StepBuilder, param: str, t: TensorType) -> list[str | None]:
        dtype = np.float16 if self.fp16_state else None
        return [self._zeros(b, param, "adam_m", t, dtype), self._zeros(b, param, "adam_v", t, dtype)]

    def _attrs(self) -> dict[str, Any]:
        return {"beta1": float(self.betas[0]), "beta2": float(self.betas[1]), "epsilon": float(self.eps),
                "weight_decay": float(self.weight_decay), "decoupled": int(self.decoupled)}


class AdamW(Adam):
    """Adam with decoupled weight decay (``p *= 1 - lr * wd`` before the Adam step)."""

    decoupled = True

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01, fp16_state: bool = False, **common: Any):
        super().__init__(lr, betas, eps, weight_decay, fp16_state, **common)


class RMSprop(FusedOptimizer):
    """RMSprop, optionally centered and with momentum (PyTorch's semantics)."""

    op_type = "RMSpropUpdate"

    def __init__(self, lr: float = 0.01, alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0,
                 momentum: float = 0.0, centered: bool = False, **common: Any):
        super().__init__(lr, **common)
        self.alpha, self.eps, self.weight_decay, self.momentum, self.centered = alpha, eps, weight_decay, momentum, centered

    def _buffers(self, b: StepBuilder, param: str, t: TensorType) -> list[str | None]:
        return [self._zeros(b, param, "square_avg", t),
                self._zeros(b, param, "momentum", t) if self.momentum else None,
                self._zeros(b, param, "grad_avg", t) if self.centered else None]

    def _attrs(self) -> dict[str, Any]:
        return {"alpha": float(self.alpha), "epsilon": float(self.eps), "weight_decay": float(self.weight_decay),
                "momentum": float(self.momentum), "centered": int(self.centered)}


class Adagrad(FusedOptimizer):
    """Adagrad with learning-rate decay and an initial accumulator value (PyTorch's semantics)."""

    op_type = "AdagradUpdate"

    def __init__(self, lr: float = 0.01, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10, **common: Any):
        super().__init__(lr, **common)
        self.lr_decay, self.weight_decay, self.initial, self.eps = lr_decay, weight_decay, initial_accumulator_value, eps

    def _buffers(self, b: StepBuilder, param: str, t: TensorType) -> list[str | None]:
        return [b.state(f"{param}.adagrad_sum", np.full(t.shape, self.initial, t.dtype))]

    def _attrs(self) -> dict[str, Any]:
        return {"lr_decay": float(self.lr_decay), "epsilon": float(self.eps), "weight_decay": float(self.weight_decay)}
