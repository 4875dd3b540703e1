"""Stochastic uniform quantization per bucket (QSGD-style, unbiased).

Each bucket of `bucket` consecutive values gets its own grid of 2**bits levels spanning
[lo, hi] of that bucket (lo/hi stored as float32, rounded outward so every value lies inside).
A value between two levels rounds up with probability equal to its distance from the lower one,
so E[decode] = x and |error| < step = (hi - lo) / (2**bits - 1). A min/max grid costs one more
float per bucket than QSGD's norm scaling but has a step at most half as large, which buys more
accuracy than the 4 bytes cost at bucket sizes in the hundreds.

Body of a block of m values: lo f32[nb], hi f32[nb], packed codes (ceil(m*bits/8) bytes),
nb = ceil(m / bucket) (one bucket when bucket == 0).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .bits import pack_codes, read_codes
from .errors import PayloadError
from .wire import Reader


class Quantized(NamedTuple):
    lo: np.ndarray  # float32 [nb]
    hi: np.ndarray  # float32 [nb]
    codes: np.ndarray  # uint8 [m]


def _buckets(m: int, bucket: int) -> tuple[int, int]:
    # A bucket larger than the block is one bucket; clamping also keeps a corrupt header's
    # bucket field from sizing any allocation.
    size = bucket if 0 < bucket < m else max(m, 1)
    return -(-m // size), size


def quantize(x: np.ndarray, bits: int, bucket: int, rng: np.random.Generator) -> Quantized:
    """Stochastically round the 1-D array x onto per-bucket grids."""
    m = x.size
    levels = (1 << bits) - 1
    nb, size = _buckets(m, bucket)
    if m == 0:
        return Quantized(np.zeros(0, np.float32), np.zeros(0, np.float32), np.zeros(0, np.uint8))
    x = x.astype(np.float64, copy=False)
    pad = nb * size - m
    xb = (np.pad(x, (0, pad), mode="edge") if pad else x).reshape(nb, size)
    lo64, hi64 = xb.min(axis=1), xb.max(axis=1)
    lo = lo64.astype(np.float32)
    hi = hi64.astype(np.float32)
    # Round the stored bounds outward so the float32 grid still covers every value.
    lo = np.where(lo > lo64, np.nextafter(lo, np.float32(-np.inf)), lo)
    hi = np.where(hi < hi64, np.nextafter(hi, np.float32(np.inf)), hi)
    step = (hi.astype(np.float64) - lo) / levels
    safe = np.where(step > 0, step, 1.0)
    u = (xb - lo[:, None]) / safe[:, None]
    floor = np.floor(u)
    q = floor + (rng.random(u.shape) < (u - floor))
    np.clip(q, 0, levels, out=q)
    return Quantized(lo, hi, q.astype(np.uint8).ravel()[:m])


def dequantize(qz: Quantized, bits: int, bucket: int) -> np.ndarray:
    """Values of the codes as float64 (the exact arithmetic the decoder uses)."""
    m = qz.codes.size
    if m == 0:
        return np.zeros(0, np.float64)
    nb, size = _buckets(m, bucket)
    step = (qz.hi.astype(np.float64) - qz.lo) / ((1 << bits) - 1)
    pad = nb * size - m
    codes = np.pad(qz.codes, (0, pad)) if pad else qz.codes
    vals = qz.lo.astype(np.float64)[:, None] + codes.reshape(nb, size) * step[:, None]
    return vals.ravel()[:m]


def quantized_bytes(qz: Quantized, bits: int) -> bytes:
    return qz.lo.astype("<f4").tobytes() + qz.hi.astype("<f4").tobytes() + pack_codes(qz.codes, bits)


def read_quantized(r: Reader, m: int, bits: int, bucket: int, what: str) -> Quantized:
    nb, _ = _buckets(m, bucket)
    if m == 0:
        nb = 0
    lo = r.floats(nb, "<f4", f"{what} bucket minima")
    hi = r.floats(nb, "<f4", f"{what} bucket maxima")
    if (lo > hi).any():
        b = int(np.flatnonzero(lo > hi)[0])
        raise PayloadError(f"{what}: bucket {b} has min {lo[b]} > max {hi[b]}")
    codes = read_codes(r, m, bits, f"{what} codes")
    return Quantized(lo, hi, codes)
