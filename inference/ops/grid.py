"""GridSample and AffineGrid, plus :func:`sample`, the N-D point sampler DeformConv also uses."""
from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np

from inference.errors import KernelError
from inference.ops.registry import register
from inference.ops.resize import cubic_kernel

_PADDINGS = ("zeros", "border", "reflection")
_MODES = {"linear": "linear", "bilinear": "linear", "nearest": "nearest", "cubic": "cubic", "bicubic": "cubic"}


def _reflect(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Fold ``x`` into [lo, hi] by repeated reflection at the borders."""
    span = hi - lo
    if span <= 0:
        return np.full_like(x, lo)
    d = np.abs(x - lo)  # x < lo reflects like lo + (lo - x)
    flips = np.floor(d / span)
    r = d - flips * span
    return np.where(flips % 2 == 0, lo + r, hi - r)


def _taps(coord: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Integer tap positions (..., T) and their weights (..., T) along one axis."""
    if mode == "nearest":
        return np.rint(coord)[..., None], np.ones(coord.shape + (1,))
    base = np.floor(coord)[..., None]
    offsets = np.arange(2) if mode == "linear" else np.arange(-1, 3)
    taps = base + offsets
    t = coord[..., None] - taps
    weights = 1 - np.abs(t) if mode == "linear" else cubic_kernel(t, -0.75)
    return taps, weights


def sample(x: np.ndarray, coords: Sequence[np.ndarray], mode: str = "linear", padding_mode: str = "zeros",
           align_corners: bool = True) -> np.ndarray:
    """Interpolate ``x`` (B, C, *spatial) at pixel coordinates: ``coords[d]`` (B, *out) indexes
    spatial axis d. Returns (B, C, *out). Reflection folds into pixel centers when
    ``align_corners`` else into pixel edges."""
    spatial = x.shape[2:]
    bounds = [(0.0, s - 1.0) if align_corners else (-0.5, s - 0.5) for s in spatial]
    if padding_mode == "border":
        coords = [np.clip(c, 0, s - 1) for c, s in zip(coords, spatial)]
    elif padding_mode == "reflection":
        coords = [_reflect(c, lo, hi) for c, (lo, hi) in zip(coords, bounds)]
    per_axis = [_taps(c, mode) for c in coords]
    batch = np.arange(x.shape[0]).reshape((-1,) + (1,) * (coords[0].ndim - 1))
    out = 0.0
    for combo in itertools.product(*(range(t.shape[-1]) for t, _ in per_axis)):
        weight, index, inside = 1.0, [], True
        for (taps, weights), k, size, (lo, hi) in zip(per_axis, combo, spatial, bounds):
            tap = taps[..., k]
            weight = weight * weights[..., k]
            if padding_mode == "reflection":
                tap = _reflect(tap, lo, hi)
            inside = inside & (tap >= 0) & (tap <= size - 1)
            index.append(np.clip(tap, 0, size - 1).astype(np.intp))
        if padding_mode == "zeros":
            weight = weight * inside
        values = x[(batch, slice(None)) + tuple(index)]  # (B, *out, C)
        out = out + values * weight[..., None]
    return np.moveaxis(np.asarray(out), -1, 1)


@register("GridSample", since=16)
def grid_sample(x, grid, *, align_corners=0, mode="linear", padding_mode="zeros"):
    if mode not in _MODES:
        raise KernelError(f"GridSample: mode must be one of {sorted(_MODES)}, got {mode!r}")
    if padding_mode not in _PADDINGS:
        raise KernelError(f"GridSample: padding_mode must be one of {_PADDINGS}, got {padding_mode!r}")
    nd = x.ndim - 2
    if nd < 1 or grid.ndim != x.ndim or grid.shape[-1] != nd or grid.shape[0] != x.shape[0]:
        raise KernelError(f"GridSample: grid must be (N, *out, {nd}) for X {x.shape}, got {grid.shape}")
    spatial = x.shape[2:]
    coords = []
    for axis, size in enumerate(spatial):
        g = grid[..., nd - 1 - axis].astype(np.float64)  # grid holds (x, y, z): the last axis first
        coords.append((g + 1) / 2 * (size - 1) if align_corners else ((g + 1) * size - 1) / 2)
    return sample(x, coords, _MODES[mode], padding_mode, bool(align_corners)).astype(x.dtype)


def _base_positions(size: int, align_corners: int) -> np.ndarray:
    """Normalized [-1, 1] positions of ``size`` pixel centers."""
    if align_corners:
        return np.linspace(-1.0, 1.0, size) if size > 1 else np.zeros(1)
    return (np.arange(size) * 2.0 + 1.0) / size - 1.0


@register("AffineGrid", since=20)
def affine_grid(theta, size, *, align_corners=0):
    spatial = [int(s) for s in size[2:]]
    nd = len(spatial)
    if nd not in (2, 3) or theta.shape[1:] != (nd, nd + 1):
        raise KernelError(f"AffineGrid: theta must be (N, {nd}, {nd + 1}) for size {list(size)} "
                          f"(2-D or 3-D only), got {theta.shape}")
    axes = np.meshgrid(*(_base_positions(s, align_corners) for s in spatial), indexing="ij")
    # homogeneous (x, y[, z], 1) with x along the last spatial axis
    points = np.stack([axes[nd - 1 - i] for i in range(nd)] + [np.ones(spatial)], axis=-1)
    grid = np.einsum("...k,njk->n...j", points, theta.astype(np.float64))
    return grid.astype(theta.dtype)
