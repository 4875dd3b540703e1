"""Calibration: the real range of each activation a static int8 model quantizes, from sample data.

Three ways to turn observed values into a range, because the best one depends on the tensor:

* ``minmax``: the observed min and max. Exact for bounded tensors, but one outlier stretches the
  scale and costs every other value resolution.
* ``percentile``: clip |x| at a percentile (99.99 by default) of its histogram.
* ``entropy``: TensorRT's KL rule: the clipping threshold whose 128-level quantized histogram is
  closest (Kullback-Leibler) to the clipped reference histogram.

Histogram calibrators keep a fixed-size histogram of |x| per tensor and widen it by merging
bins by powers of two when a batch exceeds the current range, so memory stays constant however
many batches are seen (activations of a CNN on a few hundred images would not fit otherwise).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Mapping, Protocol

import numpy as np

from inference.errors import EdgelearnError
from inference.ir import Model, Value
from inference.session import Session

NUM_BINS = 2048


class CalibrationError(EdgelearnError):
    """Calibration cannot proceed: unknown method, no data, or a tensor never observed."""


class Calibrator(Protocol):
    def update(self, name: str, values: np.ndarray) -> None: ...

    def range(self, name: str) -> tuple[float, float]: ...


class MinMaxCalibrator:
    """Running min and max of each tensor."""

    def __init__(self) -> None:
        self._lo: dict[str, float] = {}
        self._hi: dict[str, float] = {}

    def update(self, name: str, values: np.ndarray) -> None:
        if values.size == 0:
            return
        lo, hi = float(values.min()), float(values.max())
        self._lo[name] = min(lo, self._lo.get(name, lo))
        self._hi[name] = max(hi, self._hi.get(name, hi))

    def range(self, name: str) -> tuple[float, float]:
        if name not in self._lo:
            raise CalibrationError(f"tensor {name!r} was never observed during calibration")
        return self._lo[name], self._hi[name]


class _AbsHistogram:
    """Histogram of |x| over [0, edge) with NUM_BINS bins; edge doubles (bins merge) as needed."""

    def __init__(self) -> None:
        self.counts = np.zeros(NUM_BINS, np.float64)
        self.edge = 0.0

    def add(self, a: np.ndarray) -> None:
        amax = float(a.max(initial=0.0))
        if self.edge == 0.0:
            self.edge = amax if amax > 0 else 1e-8
        if amax >= self.edge:
            factor = 2 ** math.ceil(math.log2(amax / self.edge * (1 + 1e-7)))
            factor = max(int(factor), 2)
            if factor >= NUM_BINS:
                merged = np.zeros(NUM_BINS)
                merged[0] = self.counts.sum()
            else:
                merged = np.zeros(NUM_BINS)
                merged[:NUM_BINS // factor] = self.counts.reshape(-1, factor).sum(axis=1)
            self.counts, self.edge = merged, self.edge * factor
        self.counts += np.histogram(a, bins=NUM_BINS, range=(0.0, self.edge))[0]

    @property
    def bin_width(self) -> float:
        return self.edge / NUM_BINS


class _HistogramCalibrator:
    """Shared bookkeeping of the histogram methods: min, max and |x| histogram per tensor."""

    def __init__(self) -> None:
        self._minmax = MinMaxCalibrator()
        self._hist: dict[str, _AbsHistogram] = {}

    def update(self, name: str, values: np.ndarray) -> None:
        if values.size == 0:
            return
        self._minmax.update(name, values)
        self._hist.setdefault(name, _AbsHistogram()).add(np.abs(values.astype(np.float32, copy=False)).ravel())

    def threshold(self, hist: _AbsHistogram) -> float:
        raise NotImplementedError

    def range(self, name: str) -> tuple[float, float]:
        lo, hi = self._minmax.range(name)
        t = self.threshold(self._hist[name])
        return max(lo, -t), min(hi, t)


class PercentileCalibrator(_HistogramCalibrator):
    """Clip |x| at ``percentile`` percent of the observed values."""

    def __init__(self, percentile: float = 99.99) -> None:
        if not 0 < percentile <= 100:
            raise CalibrationError(f"percentile must be in (0, 100], got {percentile}")
        super().__init__()
        self.percentile = percentile

    def threshold(self, hist: _AbsHistogram) -> float:
        cdf = np.cumsum(hist.counts)
        idx = int(np.searchsorted(cdf, cdf[-1] * self.percentile / 100.0))
        return (min(idx, NUM_BINS - 1) + 1) * hist.bin_width


class EntropyCalibrator(_HistogramCalibrator):
    """TensorRT's entropy calibration: minimise KL(reference || quantized) over thresholds."""

    def __init__(self, num_quant_bins: int = 128, stride: int = 16) -> None:
        super().__init__()
        self.num_quant_bins, self.stride = num_quant_bins, stride

    def threshold(self, hist: _AbsHistogram) -> float:
        return (kl_threshold_bin(hist.counts, self.num_quant_bins, self.stride) + 0.5) * hist.bin_width


def kl_threshold_bin(counts: np.ndarray, num_quant_bins: int = 128, stride: int = 16) -> int:
    """Index of the last histogram bin kept by the KL-optimal clipping threshold."""
    nbins = len(counts)
    nz = np.nonzero(counts)[0]
    if len(nz) == 0:
        return nbins - 1
    last = int(nz[-1]) + 1
    if last <= num_quant_bins:
        return last - 1  # fewer occupied bins than levels: nothing to clip
    best_kl, best_i = math.inf, last - 1
    for i in list(range(num_quant_bins, last, stride)) + [last]:
        ref = counts[:i].copy()
        ref[-1] += counts[i:].sum()  # outliers collapse into the last kept bin
        sliced = counts[:i]
        nonzero = sliced > 0
        group = (np.arange(i) * num_quant_bins) // i
        sums = np.bincount(group, weights=sliced, minlength=num_quant_bins)
        cnts = np.bincount(group, weights=nonzero, minlength=num_quant_bins)
        q = np.where(nonzero, sums[group] / np.maximum(cnts[group], 1), 0.0)
        p = ref / ref.sum()
        qs = q.sum()
        if qs == 0:
            continue
        q = q / qs
        mask = p > 0
        kl = float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], 1e-12))))
        if kl < best_kl:
            best_kl, best_i = kl, i - 1
    return best_i


CALIBRATORS = {"minmax": MinMaxCalibrator, "percentile": PercentileCalibrator, "entropy": EntropyCalibrator}


def make_calibrator(method: str, **options) -> Calibrator:
    """A calibrator by name: ``minmax``, ``percentile`` (option ``percentile``) or ``entropy``."""
    if method not in CALIBRATORS:
        raise CalibrationError(f"unknown calibration method {method!r}; known: {sorted(CALIBRATORS)}")
    return CALIBRATORS[method](**options)


def observe(model: Model, names: list[str], batches: Iterable[Mapping[str, np.ndarray]],
            calibrator: Calibrator) -> int:
    """Run ``model`` on every batch and feed the values of ``names`` to ``calibrator``.

    The graph is run with those names as extra outputs (so the session keeps them instead of
    freeing them); returns the number of batches seen.
    """
    g = model.graph
    extra = [Value(n) for n in names if n not in g.output_names]
    probe = dataclasses.replace(model, graph=dataclasses.replace(g, outputs=list(g.outputs) + extra))
    session = Session(probe)
    seen = 0
    for feeds in batches:
        values = session.run(dict(feeds), output_names=names)
        for name, v in zip(names, values):
            calibrator.update(name, np.asarray(v))
        seen += 1
    if not seen:
        raise CalibrationError("the calibration set is empty")
    return seen
