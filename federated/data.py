"""The data of a scenario: the offline data set, its test split, and each client's partition.

Loading is cached per process: on Flower's simulation engine one Ray actor serves many clients,
and reloading digits/MNIST for every message would dominate the round time.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from inference.errors import InputError
from inference.npz import read_npz

from .errors import ScenarioError
from .partition import partition
from .scenario import Scenario


@dataclass(frozen=True)
class Dataset:
    """Train and test arrays of one scenario (features float32, labels int64)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def _load_npz(path: str) -> Dataset:
    keys = ("x_train", "y_train", "x_test", "y_test")
    try:
        arrays = read_npz(path, keys, hint="an .npz data set needs x_train, y_train, x_test, y_test")
    except InputError as e:
        raise ScenarioError(str(e)) from e
    x_tr, y_tr, x_te, y_te = (arrays[k] for k in keys)
    return Dataset(x_tr.astype(np.float32), y_tr.astype(np.int64).ravel(),
                   x_te.astype(np.float32), y_te.astype(np.int64).ravel())


@lru_cache(maxsize=8)
def load_dataset(dataset: str, images: bool, test_fraction: float, seed: int) -> Dataset:
    """digits / mnist (shipped offline, stratified seeded split) or a user's .npz file."""
    from training.data import load_digits, load_mnist, train_test_split

    if dataset.endswith(".npz"):
        return _load_npz(dataset)
    if dataset == "digits":
        x, y = load_digits(images=images)
    elif dataset == "mnist":
        x, y = load_mnist(images=images)
    else:
        raise ScenarioError(f"unknown dataset {dataset!r}: use digits, mnist or a path to an .npz file")
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, seed=seed)
    return Dataset(x_tr, y_tr, x_te, y_te)


def scenario_dataset(sc: Scenario) -> Dataset:
    """The data set of a scenario, shaped for its model (images NCHW for a CNN, flat otherwise)."""
    images = sc.arch.startswith("cnn")
    ds = load_dataset(sc.dataset, images, sc.test_fraction, sc.data_seed)
    if images and ds.x_train.ndim == 2:
        side = int(round(np.sqrt(ds.x_train.shape[1])))
        if side * side != ds.x_train.shape[1]:
            raise ScenarioError(f"a CNN needs square images; features of size {ds.x_train.shape[1]}")
        ds = Dataset(ds.x_train.reshape(-1, 1, side, side), ds.y_train,
                     ds.x_test.reshape(-1, 1, side, side), ds.y_test)
    if not images and ds.x_train.ndim > 2:
        ds = Dataset(ds.x_train.reshape(len(ds.x_train), -1), ds.y_train,
                     ds.x_test.reshape(len(ds.x_test), -1), ds.y_test)
    return ds


@lru_cache(maxsize=8)
def _partitions(dataset: str, test_fraction: float, data_seed: int, scheme: str, num_clients: int,
                alpha: float, shards_per_client: int, seed: int, min_size: int) -> tuple[np.ndarray, ...]:
    ds = load_dataset(dataset, False, test_fraction, data_seed)
    return tuple(partition(ds.y_train, num_clients, scheme, seed=seed, alpha=alpha,
                           shards_per_client=shards_per_client, min_size=min_size))


def client_indices(sc: Scenario) -> tuple[np.ndarray, ...]:
    """Index arrays into the training set, one per client (seeded, identical in every process)."""
    return _partitions(sc.dataset, sc.test_fraction, sc.data_seed, sc.scheme, sc.num_clients,
                       sc.alpha, sc.shards_per_client, sc.partition_seed, sc.min_size)


def client_data(sc: Scenario, partition_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of one client."""
    if not 0 <= partition_id < sc.num_clients:
        raise ScenarioError(f"partition-id {partition_id} outside [0, {sc.num_clients})")
    ds = scenario_dataset(sc)
    idx = client_indices(sc)[partition_id]
    return ds.x_train[idx], ds.y_train[idx]
