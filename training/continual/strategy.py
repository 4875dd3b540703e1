"""The contract of a continual-learning strategy, and the error of the continual package."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from training.errors import TrainingError
from training.protocols import Loss

if TYPE_CHECKING:
    from training.continual.learner import ContinualLearner

__all__ = ["ContinualError", "Strategy"]


class ContinualError(TrainingError):
    """A continual-learning setup or call is invalid (budget too small, tasks out of order, no data)."""




class Strategy:
    """What a continual-learning method adds to plain training; every hook is optional.

    ``loss_terms`` are emitted into the step graph when the learner builds it; the other hooks
    run around each step and at task boundaries. State kept outside the step graph is returned
    by ``state_dict`` as (arrays, JSON-able meta) and saved in the learner's checkpoint (which
    is the trainer's checkpoint: :meth:`training.trainer.Trainer.register_checkpoint_state`);
    ``check_state`` rejects a saved state before anything is restored.
    """

    name = "strategy"

    def loss_terms(self) -> list[tuple[float, Loss]]:
        return []

    def bind(self, learner: "ContinualLearner") -> None:
        """Called once the learner's trainer (and its step graph) exists."""

    def before_task(self, learner: "ContinualLearner") -> None:
        """Before the first step of a new task."""

    def mix(self, learner: "ContinualLearner", x: np.ndarray, y: np.ndarray,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The batch actually trained on, given the new samples."""
        return x, y

    def feeds(self, learner: "ContinualLearner", x: np.ndarray) -> dict[str, np.ndarray]:
        """Extra step-graph inputs for the (mixed) batch ``x``."""
        return {}

    def after_batch(self, learner: "ContinualLearner", x: np.ndarray, y: np.ndarray) -> None:
        """After a step, with the new samples only."""

    def after_task(self, learner: "ContinualLearner", x: np.ndarray | None, y: np.ndarray | None) -> None:
        """At the end of a task, with its data (or None in a stream without it)."""

    def state_dict(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """State kept outside the step graph: (arrays, JSON-able meta)."""
        return {}, {}

    def memory_bytes(self, learner: "ContinualLearner") -> dict[str, int]:
        """Bytes this strategy holds, measured from its arrays, by kind (for ``learner.memory_bytes``)."""
        return {}

    def check_state(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        """Raise :class:`~training.errors.CheckpointError` if a saved state does not fit this strategy."""

    def load_state_dict(self, learner: "ContinualLearner", arrays: Mapping[str, np.ndarray],
                        meta: Mapping[str, Any]) -> None:
        pass


