"""The standard continual-learning scores of an accuracy matrix (Lopez-Paz & Ranzato 2017; Chaudhry et al. 2018)."""
from __future__ import annotations

import numpy as np

__all__ = ["average_accuracy", "average_forgetting"]


def average_accuracy(acc: np.ndarray) -> float:
    """Mean accuracy over all tasks after the last one; ``acc[i, j]``: task j's accuracy after task i."""
    return float(np.mean(np.asarray(acc)[-1]))


def average_forgetting(acc: np.ndarray) -> float:
    """Mean over all but the last task of (best accuracy before the end - final accuracy)."""
    acc = np.asarray(acc)
    t = len(acc)
    if t < 2:
        return 0.0
    return float(np.mean([acc[j:t - 1, j].max() - acc[-1, j] for j in range(t - 1)]))
