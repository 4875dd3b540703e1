"""Nearest-neighbour Resize as a gather: each resized axis picks its input index per output index.

Why: the reference resamples every axis by a float64 matrix product (one form for all modes),
which for nearest is a dense (out x in) matrix of ones and zeros: a YOLO-style neck's 2x upsampling
of 256x10x10 took 206 us, onnxruntime 45. Here the indices come from the reference's own
coordinate rule (:mod:`inference.ops.resize`), so every ``coordinate_transformation_mode`` and
``nearest_mode`` picks what it picks there, and ``numpy.take`` copies whole rows (channels-last:
whole pixels). Also exact where the product is not: a NaN reaches only the outputs that sample it
(the product spread it along the axis, 0 * NaN).
"""
from __future__ import annotations

import numba
import numpy as np

from inference.ir import Graph, Node
from inference.kernels._jit import threaded_kernel
from inference.kernels.arena_slot import new_output
from inference.ops.registry import register
from inference.ops.resize import _NEAREST, _original_coords, _output_geometry, resize


def _applies(node: Node, graph: Graph) -> bool:
    a = node.attrs
    return (a.get("mode", "nearest") == "nearest" and a.get("nearest_mode", "round_prefer_floor") in _NEAREST
            and a.get("coordinate_transformation_mode", "half_pixel") != "tf_crop_and_resize")


@register("Resize", since=11, kind="fast", applies=_applies)
def resize_nearest(x, roi=None, scales=None, sizes=None, *, mode="nearest", coordinate_transformation_mode="half_pixel",
                   nearest_mode="round_prefer_floor", axes=None, keep_aspect_ratio_policy="stretch", **rest):
    rank = x.ndim
    axes = [a % rank for a in axes] if axes else list(range(rank))
    scales = None if scales is None or scales.size == 0 else scales.astype(np.float64).tolist()
    sizes = None if sizes is None or sizes.size == 0 else sizes.astype(np.int64).tolist()
    if scales is None and sizes is None:  # the reference names the problem
        return resize(x, roi, scales, sizes, mode=mode, axes=axes, **rest)
    out_lens, ratios, rois = _output_geometry(x.shape, axes, roi, scales, sizes, keep_aspect_ratio_policy, False)
    picks = {}
    for axis, out_len, scale, r in zip(axes, out_lens, ratios, rois):
        in_len = x.shape[axis]
        if out_len == in_len and scale == 1.0:
            continue
        coords = _original_coords(out_len, in_len, scale, coordinate_transformation_mode, r)
        picks[axis] = np.clip(_NEAREST[nearest_mode](coords), 0, in_len - 1).astype(np.int64)
    if x.ndim == 4 and x.dtype == np.float32 and set(picks) <= {1, 2} and picks:
        return _gather_middle(x, picks)
    y = x
    for axis, idx in picks.items():
        y = np.take(y, idx, axis=axis)
    return np.ascontiguousarray(y) if y is not x else y.copy()


@threaded_kernel()
def gather_pixels(x, rows, cols, y):
    """``y[n, p, q] = x[n, rows[p], cols[q]]`` (whole runs of the last axis), rows of ``y`` shared
    by the threads."""
    n, oh = y.shape[0], y.shape[1]
    for t in numba.prange(n * oh):
        i, p = t // oh, t % oh
        src = x[i, rows[p]]
        dst = y[i, p]
        for q in range(cols.size):
            d, s = dst[q], src[cols[q]]
            for k in range(d.size):  # an element loop: numba's slice assignment copied 3x slower
                d[k] = s[k]


def _gather_middle(x: np.ndarray, picks: dict) -> np.ndarray:
    """A channels-last image resized along its height and width in one pass, split over the
    threads, into the step's arena slot. Why: numpy's two takes (a copy per axis) ran 1.4-1.5x
    slower at one thread (2x nearest upsamplings, alone: 20x20x256 35 -> 24 us, 80x80x64 132 -> 86),
    and at two threads slower than at one (a YOLOv8-style neck's 124 -> 147 us: half of the input
    sat in the other core's cache, written there by the parallel convolution before it)."""
    rows = picks.get(1, np.arange(x.shape[1], dtype=np.int64))
    cols = picks.get(2, np.arange(x.shape[2], dtype=np.int64))
    y = new_output((x.shape[0], rows.size, cols.size, x.shape[3]))
    gather_pixels(np.ascontiguousarray(x), rows, cols, y)
    return y
