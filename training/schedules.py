"""Learning-rate schedules: pure functions of a counter, fed to the step graph as its ``lr`` input.

A schedule maps ``(base_lr, t)`` to a rate, where ``t`` counts optimizer steps, or epochs when
``by_epoch`` is set; the trainer asks once per step. Only :class:`ReduceOnPlateau` has state (fed
by :meth:`observe` after each validation), and it saves it through ``state_dict``.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

from training.errors import TrainingError

__all__ = ["Schedule", "Constant", "StepLR", "MultiStepLR", "ExponentialLR", "CosineLR", "LinearWarmup",
           "ReduceOnPlateau"]


class Schedule:
    """Base: ``schedule(base_lr, t) -> lr``; stateless unless it overrides the state methods."""

    by_epoch = False

    def __call__(self, base_lr: float, t: int) -> float:
        raise NotImplementedError

    def observe(self, metric: float) -> None:
        """A validation metric at the end of an epoch (only plateau schedules use it)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore for stateless schedules."""


class Constant(Schedule):
    def __call__(self, base_lr: float, t: int) -> float:
        return base_lr


class StepLR(Schedule):
    """``base * gamma ** (t // step_size)``."""

    def __init__(self, step_size: int, gamma: float = 0.1, by_epoch: bool = False):
        if step_size < 1:
            raise TrainingError(f"step_size must be >= 1, got {step_size}")
        self.step_size, self.gamma, self.by_epoch = step_size, gamma, by_epoch

    def __call__(self, base_lr: float, t: int) -> float:
        return base_lr * self.gamma ** (t // self.step_size)


class MultiStepLR(Schedule):
    """``base * gamma ** (number of milestones <= t)``."""

    def __init__(self, milestones: Sequence[int], gamma: float = 0.1, by_epoch: bool = False):
        self.milestones, self.gamma, self.by_epoch = sorted(milestones), gamma, by_epoch

    def __call__(self, base_lr: float, t: int) -> float:
        return base_lr * self.gamma ** sum(1 for m in self.milestones if m <= t)


class ExponentialLR(Schedule):
    """``base * gamma ** t``."""

    def __init__(self, gamma: float, by_epoch: bool = False):
        self.gamma, self.by_epoch = gamma, by_epoch

    def __call__(self, base_lr: float, t: int) -> float:
        return base_lr * self.gamma ** t


class CosineLR(Schedule):
    """Cosine annealing from ``base`` to ``min_lr`` over ``total`` steps, then ``min_lr``."""

    def __init__(self, total: int, min_lr: float = 0.0, by_epoch: bool = False):
        if total < 1:
            raise TrainingError(f"total must be >= 1, got {total}")
        self.total, self.min_lr, self.by_epoch = total, min_lr, by_epoch

    def __call__(self, base_lr: float, t: int) -> float:
        frac = min(t, self.total) / self.total
        return self.min_lr + (base_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * frac))


class LinearWarmup(Schedule):
    """Ramp linearly from ``start_factor * lr`` to the wrapped schedule's rate over ``warmup`` counts;
    the wrapped schedule then runs with its own counter starting at 0."""

    def __init__(self, warmup: int, after: Schedule | None = None, start_factor: float = 0.0):
        self.warmup, self.after, self.start_factor = warmup, after or Constant(), start_factor
        self.by_epoch = self.after.by_epoch

    def __call__(self, base_lr: float, t: int) -> float:
        if t < self.warmup:
            return base_lr * (self.start_factor + (1.0 - self.start_factor) * t / self.warmup)
        return self.after(base_lr, t - self.warmup)

    def observe(self, metric: float) -> None:
        self.after.observe(metric)

    def state_dict(self) -> dict[str, Any]:
        return self.after.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.after.load_state_dict(state)


class ReduceOnPlateau(Schedule):
    """Multiply the rate by ``factor`` when the observed metric has not improved for ``patience``
    epochs (by more than ``threshold``, relative), then wait ``cooldown`` epochs; never below ``min_lr``."""

    def __init__(self, factor: float = 0.1, patience: int = 10, mode: str = "min", threshold: float = 1e-4,
                 cooldown: int = 0, min_lr: float = 0.0):
        if mode not in ("min", "max"):
            raise TrainingError(f"mode must be 'min' or 'max', got {mode!r}")
        if not 0.0 < factor < 1.0:
            raise TrainingError(f"factor must be in (0, 1), got {factor}")
        self.factor, self.patience, self.mode, self.threshold = factor, patience, mode, threshold
        self.cooldown, self.min_lr = cooldown, min_lr
        self.scale, self.best, self.bad, self.wait = 1.0, None, 0, 0

    def _better(self, metric: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "min":
            return metric < self.best * (1.0 - self.threshold)
        return metric > self.best * (1.0 + self.threshold)

    def observe(self, metric: float) -> None:
        if self._better(metric):
            self.best, self.bad = float(metric), 0
        else:
            self.bad += 1
        if self.wait > 0:
            self.wait -= 1
            self.bad = 0
        elif self.bad > self.patience:
            self.scale *= self.factor
            self.wait, self.bad = self.cooldown, 0

    def __call__(self, base_lr: float, t: int) -> float:
        return max(base_lr * self.scale, self.min_lr)

    def state_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "best": self.best, "bad": self.bad, "wait": self.wait}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scale, self.best, self.bad, self.wait = state["scale"], state["best"], state["bad"], state["wait"]
