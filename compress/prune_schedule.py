"""Pruning during training: the gradual sparsity schedule and the Trainer callbacks that keep masks.

The callbacks follow ``training.Trainer``'s callback protocol (``on_step_end`` /
``on_epoch_end``) by duck typing: ``compress`` sits below ``training`` in the import order, so
it does not import it. After every optimizer step they multiply the trained parameters by their
masks in place. That costs one elementwise pass over the pruned weights per step (far below the
step itself) and is exact for every optimizer: momentum or Adam moments may keep pushing a
pruned weight, but it is zeroed again before any forward pass reads it.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from compress.prune_masks import SCOPES, PruningError, apply_masks, magnitude_masks, prunable_weights

__all__ = ["PolynomialSparsity", "KeepMasks", "GradualPruning", "finetune", "prune_and_finetune"]


class PolynomialSparsity:
    """Zhu & Gupta (2017): ``s_t = s_f + (s_i - s_f) (1 - (t - t0) / (t1 - t0)) ** power``.

    Sparsity grows fast while the network has redundant weights and slowly near the target.
    ``t`` is the Trainer's optimizer-step counter; the value changes only every ``frequency``
    steps (pruning every step leaves no time to recover); 0 before ``begin_step``, ``final`` from
    ``end_step`` on.
    """

    def __init__(self, final: float, begin_step: int, end_step: int, initial: float = 0.0,
                 frequency: int = 1, power: float = 3.0):
        if not 0.0 <= initial <= final < 1.0:
            raise PruningError(f"need 0 <= initial ({initial}) <= final ({final}) < 1")
        if not 0 <= begin_step < end_step:
            raise PruningError(f"need 0 <= begin_step ({begin_step}) < end_step ({end_step})")
        if frequency < 1:
            raise PruningError(f"frequency must be >= 1, got {frequency}")
        self.final, self.initial, self.power = float(final), float(initial), float(power)
        self.begin, self.end, self.frequency = int(begin_step), int(end_step), int(frequency)

    def __call__(self, step: int) -> float:
        if step < self.begin:
            return 0.0
        if step >= self.end:
            return self.final
        t = self.begin + (step - self.begin) // self.frequency * self.frequency
        frac = (t - self.begin) / (self.end - self.begin)
        return self.final + (self.initial - self.final) * (1.0 - frac) ** self.power


class KeepMasks:
    """Trainer callback: re-zero the pruned weights after every optimizer step.

    Masks of parameters the Trainer does not train are only checked (once): frozen weights never
    change, so they must already be pruned in the model the Trainer was built on.
    """

    def __init__(self, masks: Mapping[str, np.ndarray]):
        self.masks: dict[str, np.ndarray] = dict(masks)
        self._checked = False

    def _check(self, trainer: Any) -> None:
        arrays = trainer.forward.graph.initializers
        live = trainer.graph.parameters()
        for name, mask in self.masks.items():
            if name not in arrays:
                raise PruningError(f"mask for {name!r}, which is not a parameter of the trained model")
            if name not in live and np.any(arrays[name][~mask]):
                raise PruningError(f"{name!r} is frozen in this Trainer but not pruned: apply the masks to the "
                                   "model before building the Trainer, or train that parameter")
        self._checked = True

    def on_step_end(self, trainer: Any, step: int, loss: float) -> None:
        if not self._checked:
            self._check(trainer)
        live = trainer.graph.parameters()
        apply_masks(live, {n: m for n, m in self.masks.items() if n in live})

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict[str, float]) -> None:
        """Nothing: the masks were applied after the epoch's last step."""


class GradualPruning(KeepMasks):
    """Trainer callback: prune the trained weights by magnitude to ``schedule(step)`` as training
    goes, then keep them pruned. Masks are recomputed from the live magnitudes whenever the target
    changes; pruned weights are zero, hence the smallest, so a weight once pruned stays pruned and
    a run resumed from a checkpoint rebuilds the same masks (no state to save)."""

    def __init__(self, schedule: PolynomialSparsity, scope: str = "layer", names: Sequence[str] | None = None,
                 exclude: Sequence[str] = ()):
        if scope not in SCOPES:
            raise PruningError(f"scope must be one of {SCOPES}, got {scope!r}")
        super().__init__({})
        self.schedule, self.scope, self.exclude = schedule, scope, tuple(exclude)
        self.names = None if names is None else list(names)
        self.current: float | None = None

    def _resolve(self, trainer: Any) -> list[str]:
        live = trainer.graph.parameters()
        if self.names is None:
            return [n for n in prunable_weights(trainer.forward, self.exclude) if n in live]
        frozen = [n for n in self.names if n not in live]
        if frozen:
            raise PruningError(f"cannot prune {frozen} gradually: they are not trained by this Trainer")
        return self.names

    def on_step_end(self, trainer: Any, step: int, loss: float) -> None:
        if self.names is None or self.current is None:
            self.names = self._resolve(trainer)
        target = self.schedule(step)
        if target != self.current:
            self.masks = magnitude_masks(trainer.graph.parameters(), target, self.scope, self.names)
            self.current = target
        super().on_step_end(trainer, step, loss)


def finetune(trainer: Any, x: np.ndarray, y: np.ndarray, masks: Mapping[str, np.ndarray], epochs: int = 1,
             callbacks: Sequence[Any] = (), **fit_kwargs: Any) -> dict[str, list[float]]:
    """Fine-tune a pruned model with ``trainer`` (a ``training.Trainer``) keeping ``masks`` at zero;
    returns the fit history. The masks are applied to the live weights before the first step."""
    keeper = KeepMasks(masks)
    keeper._check(trainer)
    live = trainer.graph.parameters()
    apply_masks(live, {n: m for n, m in masks.items() if n in live})
    return trainer.fit(x, y, epochs=epochs, callbacks=[keeper, *callbacks], **fit_kwargs)


def prune_and_finetune(trainer: Any, x: np.ndarray, y: np.ndarray, ratio: float, scope: str = "layer",
                       epochs: int = 1, exclude: Sequence[str] = (), **fit_kwargs: Any) -> dict[str, np.ndarray]:
    """Prune the weights ``trainer`` trains, in place, to ``ratio`` by magnitude, then fine-tune them with
    the masks kept; returns the masks. One-shot; :class:`GradualPruning` spreads the cut over training."""
    live = trainer.graph.parameters()
    names = [n for n in prunable_weights(trainer.forward, exclude) if n in live]
    masks = magnitude_masks(live, ratio, scope, names)
    finetune(trainer, x, y, masks, epochs, **fit_kwargs)
    return masks
