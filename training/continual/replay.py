"""Experience replay: a byte-budgeted, compressed buffer of past samples mixed into every batch."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from training.continual.strategy import ContinualError, Strategy
from training.errors import CheckpointError

__all__ = ["ReplayBuffer", "Replay"]


class ReplayBuffer:
    """Samples of past data within a budget in BYTES, stored compressed.

    ``codec``: ``"uint8"`` keeps each sample as bytes plus its own (min, scale) in float32 (any
    input range, 1/4 of float32), ``"fp16"`` as float16, ``"fp32"`` uncompressed. The capacity is
    ``budget_bytes // bytes_per_sample`` and all storage is allocated up front, so the memory used
    is the budget (``nbytes``) from the first sample on. ``policy``: ``"reservoir"`` (every sample
    seen has the same chance to be kept) or ``"class_balanced"`` (CBRS, Chrysakis & Moens 2020: a
    new sample replaces one of the currently largest class, so rare classes are not crowded out).
    """

    CODECS = {"uint8": np.uint8, "fp16": np.float16, "fp32": np.float32}

    def __init__(self, budget_bytes: int, sample_shape: Sequence[int], codec: str = "uint8",
                 policy: str = "reservoir", seed: int = 0):
        if codec not in self.CODECS:
            raise ContinualError(f"unknown replay codec {codec!r}; known: {sorted(self.CODECS)}")
        if policy not in ("reservoir", "class_balanced"):
            raise ContinualError(f"unknown replay policy {policy!r}; known: reservoir, class_balanced")
        self.sample_shape, self.codec, self.policy, self.seed = tuple(int(d) for d in sample_shape), codec, policy, seed
        self.capacity = int(budget_bytes) // self.bytes_per_sample(self.sample_shape, codec)
        if self.capacity < 1:
            raise ContinualError(f"a replay budget of {budget_bytes} bytes holds no {codec} sample of shape "
                                 f"{self.sample_shape} ({self.bytes_per_sample(self.sample_shape, codec)} bytes each)")
        self.data = np.zeros((self.capacity, *self.sample_shape), self.CODECS[codec])
        self.affine = np.zeros((self.capacity if codec == "uint8" else 0, 2), np.float32)
        self.labels = np.zeros(self.capacity, np.int32)
        self.size = 0          # samples held
        self.seen = 0          # samples offered so far
        self.seen_per_class: dict[int, int] = {}

    @classmethod
    def bytes_per_sample(cls, sample_shape: Sequence[int], codec: str = "uint8") -> int:
        """Storage of one sample: payload, per-sample affine (uint8 only) and an int32 label."""
        payload = int(np.prod(sample_shape)) * np.dtype(cls.CODECS[codec]).itemsize
        return payload + (8 if codec == "uint8" else 0) + 4

    @classmethod
    def for_samples(cls, n: int, sample_shape: Sequence[int], codec: str = "uint8", **kw: Any) -> "ReplayBuffer":
        """A buffer whose byte budget holds exactly ``n`` samples."""
        return cls(n * cls.bytes_per_sample(sample_shape, codec), sample_shape, codec, **kw)

    @property
    def nbytes(self) -> int:
        """Bytes actually allocated (measured from the arrays, not computed from the budget)."""
        return self.data.nbytes + self.affine.nbytes + self.labels.nbytes

    def __len__(self) -> int:
        return self.size

    # -- writing ---------------------------------------------------------------------------------
    def _store(self, slot: int, x: np.ndarray, y: int) -> None:
        if self.codec == "uint8":
            lo, hi = float(x.min()), float(x.max())
            scale = (hi - lo) / 255.0 or 1.0
            self.data[slot] = np.clip(np.rint((x - lo) / scale), 0, 255)
            self.affine[slot] = (lo, scale)
        else:
            self.data[slot] = x
        self.labels[slot] = y

    def _slot(self, y: int, rng: np.random.Generator) -> int | None:
        """Where the sample just seen goes (None: dropped)."""
        if self.size < self.capacity:
            self.size += 1
            return self.size - 1
        if self.policy == "reservoir":
            j = int(rng.integers(0, self.seen))
            return j if j < self.capacity else None
        counts = np.bincount(self.labels[:self.size], minlength=max(y + 1, int(self.labels.max()) + 1))
        largest = np.flatnonzero(counts == counts.max())
        if y not in largest:  # take a place from one of the largest classes
            victims = np.flatnonzero(np.isin(self.labels, largest))
            return int(victims[rng.integers(0, len(victims))])
        if rng.random() < counts[y] / self.seen_per_class[y]:  # reservoir within the class
            own = np.flatnonzero(self.labels == y)
            return int(own[rng.integers(0, len(own))])
        return None

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        """Offer a batch of samples; the draws depend only on ``seed`` and how many were seen."""
        x = np.asarray(x, np.float32).reshape((-1, *self.sample_shape))
        y = np.asarray(y).reshape(-1)
        rng = np.random.default_rng([self.seed, self.seen])
        for xi, yi in zip(x, y):
            yi = int(yi)
            self.seen += 1
            self.seen_per_class[yi] = self.seen_per_class.get(yi, 0) + 1
            slot = self._slot(yi, rng)
            if slot is not None:
                self._store(slot, xi, yi)

    # -- reading ---------------------------------------------------------------------------------
    def decode(self, idx: np.ndarray) -> np.ndarray:
        x = self.data[idx].astype(np.float32)
        if self.codec == "uint8":
            a = self.affine[idx].reshape((-1,) + (1,) * len(self.sample_shape) + (2,))
            x = x * a[..., 1] + a[..., 0]
        return x

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` samples drawn with replacement (decoded to float32) and their int64 labels."""
        idx = rng.integers(0, self.size, n)
        return self.decode(idx), self.labels[idx].astype(np.int64)

    def contents(self) -> tuple[np.ndarray, np.ndarray]:
        """Everything held, decoded."""
        idx = np.arange(self.size)
        return self.decode(idx), self.labels[idx].astype(np.int64)

    def class_counts(self) -> dict[int, int]:
        vals, counts = np.unique(self.labels[:self.size], return_counts=True)
        return {int(v): int(c) for v, c in zip(vals, counts)}

    # -- state -----------------------------------------------------------------------------------
    def state_dict(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return ({"data": self.data, "affine": self.affine, "labels": self.labels},
                {"size": self.size, "seen": self.seen, "seen_per_class": {str(k): v for k, v in self.seen_per_class.items()},
                 "capacity": self.capacity, "codec": self.codec})

    def check_state(self, meta: Mapping[str, Any]) -> None:
        """Raise CheckpointError unless a saved state has this buffer's capacity and codec."""
        if meta["capacity"] != self.capacity or meta["codec"] != self.codec:
            raise CheckpointError(f"the checkpoint's replay buffer ({meta['capacity']} x {meta['codec']}) differs "
                                  f"from this one ({self.capacity} x {self.codec})")

    def load_state_dict(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        self.check_state(meta)
        np.copyto(self.data, arrays["data"])
        np.copyto(self.affine, arrays["affine"])
        np.copyto(self.labels, arrays["labels"])
        self.size, self.seen = int(meta["size"]), int(meta["seen"])
        self.seen_per_class = {int(k): int(v) for k, v in meta["seen_per_class"].items()}


class Replay(Strategy):
    """Experience replay: each batch of new samples is joined by ``ratio`` times as many from the buffer."""

    name = "replay"

    def __init__(self, buffer: ReplayBuffer, ratio: float = 1.0):
        self.buffer, self.ratio = buffer, float(ratio)

    def mix(self, learner, x, y, rng):
        n = int(round(len(x) * self.ratio))
        if not len(self.buffer) or n < 1:
            return x, y
        xr, yr = self.buffer.sample(n, rng)
        return np.concatenate([x, xr.reshape((-1, *x.shape[1:]))]), np.concatenate([y, yr.astype(y.dtype)])

    def after_batch(self, learner, x, y):
        self.buffer.add(x, y)

    def state_dict(self):
        return self.buffer.state_dict()

    def memory_bytes(self, learner):
        return {"replay": self.buffer.nbytes}

    def check_state(self, arrays, meta):
        self.buffer.check_state(meta)

    def load_state_dict(self, learner, arrays, meta):
        self.buffer.load_state_dict(arrays, meta)

