"""Fast Resize of float32 tensors: nearest as a gather, linear as two-tap blends, per axis.

Why: the reference resamples every axis by a float64 matrix product (one form for all modes),
which for nearest is a dense (out x in) matrix of ones and zeros: a YOLO-style neck's 2x upsampling
of 256x10x10 took 206 us, onnxruntime 45; for linear the same dense product plus the float64 copies
took 2.4 ms of a small UNet's 8.1 (a 2x bilinear upsampling of 2x32x32x32, torch's
``nn.Upsample``; onnxruntime ~0.37). Here the indices (and linear's two weights per output index)
come from the reference's own coordinate rule (:mod:`inference.ops.resize`), so every
``coordinate_transformation_mode`` and ``nearest_mode`` picks what it picks there; nearest's
``numpy.take`` copies whole rows (channels-last: whole pixels), linear blends two source rows then
two columns per output row. Also exact where the product is not: a NaN reaches only the outputs
that sample it (linear: whose two taps hold it, even at weight 0; the product spread it along the
axis, 0 * NaN).
"""
from __future__ import annotations

import functools
import math

import numba
import numpy as np

from inference.ir import Graph, Node
from inference.kernels._jit import parallel_chunks, threaded_kernel
from inference.kernels.arena_slot import new_output, new_scratch
from inference.ops.registry import register
from inference.ops.resize import _NEAREST, _original_coords, _output_geometry, resize

#: linear's coordinate modes (tf_crop_and_resize, with its extrapolation outside the box, stays
#: with the reference)
_LINEAR_COORDINATES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
                       "tf_half_pixel_for_nn")


def _applies(node: Node, graph: Graph) -> bool:
    a = node.attrs
    ctm = a.get("coordinate_transformation_mode", "half_pixel")
    mode = a.get("mode", "nearest")
    if mode == "linear":
        return ctm in _LINEAR_COORDINATES and not a.get("antialias", 0)
    return (mode == "nearest" and a.get("nearest_mode", "round_prefer_floor") in _NEAREST
            and ctm != "tf_crop_and_resize")


@register("Resize", since=11, kind="fast", applies=_applies)
def resize_fast(x, roi=None, scales=None, sizes=None, *, mode="nearest", coordinate_transformation_mode="half_pixel",
                nearest_mode="round_prefer_floor", axes=None, keep_aspect_ratio_policy="stretch", **rest):
    """Nearest (any dtype) or float32 linear without antialias; anything else through the reference."""
    linear = (mode == "linear" and x.dtype == np.float32 and not rest.get("antialias", 0)
              and coordinate_transformation_mode in _LINEAR_COORDINATES)
    if not (linear or mode == "nearest"):
        return resize(x, roi, scales, sizes, mode=mode, coordinate_transformation_mode=coordinate_transformation_mode,
                      nearest_mode=nearest_mode, axes=axes, keep_aspect_ratio_policy=keep_aspect_ratio_policy, **rest)
    rank = x.ndim
    axes = [a % rank for a in axes] if axes else list(range(rank))
    scales = None if scales is None or scales.size == 0 else scales.astype(np.float64).tolist()
    sizes = None if sizes is None or sizes.size == 0 else sizes.astype(np.int64).tolist()
    if scales is None and sizes is None:  # the reference names the problem
        return resize(x, roi, scales, sizes, mode=mode, axes=axes, **rest)
    out_lens, ratios, rois = _output_geometry(x.shape, axes, roi, scales, sizes, keep_aspect_ratio_policy, False)
    if linear:
        taps = {}
        for axis, out_len, scale, r in zip(axes, out_lens, ratios, rois):
            in_len = x.shape[axis]
            if not (out_len == in_len and scale == 1.0):
                taps[axis] = _linear_taps(in_len, out_len, scale, coordinate_transformation_mode, r,
                                          bool(rest.get("exclude_outside", 0)))
        return _resize_linear(x, taps)
    picks = {}
    for axis, out_len, scale, r in zip(axes, out_lens, ratios, rois):
        in_len = x.shape[axis]
        if out_len == in_len and scale == 1.0:
            continue
        coords = _original_coords(out_len, in_len, scale, coordinate_transformation_mode, r)
        picks[axis] = np.clip(_NEAREST[nearest_mode](coords), 0, in_len - 1).astype(np.int64)
    if x.ndim == 4 and x.dtype == np.float32 and set(picks) <= {1, 2} and picks:
        return _gather_middle(x, picks)
    if x.ndim == 4 and x.dtype == np.float32 and set(picks) <= {2, 3} and picks:
        return _gather_last_two(x, picks)
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


@threaded_kernel()
def gather_plane_rows(x, rows, cols, y):
    """``y[i, p, q] = x[i, rows[p], cols[q]]`` for planes ``x`` (n, h, w) and ``y`` (n, oh, ow), an
    output row per parallel step: a row that picks the same source row as the one before it is a
    copy of that output row (a 2x upsampling gathers each row once)."""
    n, oh = y.shape[0], y.shape[1]
    runs = -(-oh // 8)  # 8 output rows per step: a repeated row's source is in the step
    for t in numba.prange(n * runs):
        i, p0 = t // runs, (t % runs) * 8
        for p in range(p0, min(oh, p0 + 8)):
            dst = y[i, p]
            if p > p0 and rows[p] == rows[p - 1]:
                prev = y[i, p - 1]
                for q in range(cols.size):
                    dst[q] = prev[q]
            else:
                src = x[i, rows[p]]
                for q in range(cols.size):
                    dst[q] = src[cols[q]]


def _gather_last_two(x: np.ndarray, picks: dict) -> np.ndarray:
    """An NCHW image resized along its height and width in numba, into the step's arena slot. Why:
    numpy's two takes could not be replayed (a YOLO neck's upsampling outside a channels-last
    region kept the model step by step); as planes of one-value pixels through
    :func:`gather_pixels` it ran 1.0-2.4x numpy's time, this row gather 0.26-0.7x (2x upsamplings of
    64x80x80, 128x20x20, 8x32x40x40 and 3x37x29, one thread)."""
    n, c, h, w = x.shape
    rows = picks.get(2, np.arange(h, dtype=np.int64))
    cols = picks.get(3, np.arange(w, dtype=np.int64))
    y = new_output((n, c, rows.size, cols.size))
    gather_plane_rows(np.ascontiguousarray(x).reshape(n * c, h, w), rows, cols, y.reshape(n * c, rows.size, cols.size))
    return y


# -- linear --------------------------------------------------------------------------------------
#: an axis's taps: per output index the first and second input index (int64) and their weights (float32)
Taps = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
#: the taps of an axis of length 1 left as it is
_ONE = (np.zeros(1, np.int64), np.zeros(1, np.int64), np.ones(1, np.float32), np.zeros(1, np.float32))


@functools.lru_cache(maxsize=256)
def _linear_taps(in_len: int, out_len: int, scale: float, ctm: str, roi: tuple[float, float],
                 exclude_outside: bool) -> Taps:
    """Per output index along one axis, the two input indices linear blends and their weights, as
    the reference's filter builds them (``inference.ops.resize._filter_weights`` without
    antialias): taps at floor(c) and floor(c) + 1 clamped to the axis (an outside tap repeats the
    edge), or with ``exclude_outside`` dropped and the other renormalised. Cached: a model resizes
    the same few shapes on every run (shared arrays: read only)."""
    coords = _original_coords(out_len, in_len, scale, ctm, roi)
    base = np.floor(coords)
    frac = coords - base
    base = base.astype(np.int64)
    w = np.stack([1 - frac, frac])
    taps = np.stack([base, base + 1])
    if exclude_outside:
        w = np.where((taps >= 0) & (taps < in_len), w, 0.0)
        w = w / w.sum(axis=0)
    taps = np.clip(taps, 0, in_len - 1)
    return taps[0].copy(), taps[1].copy(), w[0].astype(np.float32), w[1].astype(np.float32)


def _resize_linear(x: np.ndarray, taps: dict) -> np.ndarray:
    """Resize float32 ``x`` along the axes of ``taps``, two adjacent axes per pass (an image's
    height and width in one, NCHW or channels-last alike; a volume's depth in a pass of its own),
    the last pass into the step's arena slot, the others into scratch."""
    y = np.ascontiguousarray(x)
    todo = sorted(taps)
    if not todo:
        out = new_output(y.shape)
        out[...] = y
        return out
    while todo:
        a = todo.pop(0)
        shape = y.shape
        outer = math.prod(shape[:a])
        if todo and todo[0] == a + 1:  # rows and columns: (outer, H, W, inner)
            rows, cols = taps[a], taps[todo.pop(0)]
            h, w, inner = shape[a], shape[a + 1], math.prod(shape[a + 2:])
            out_shape = shape[:a] + (rows[0].size, cols[0].size) + shape[a + 2:]
        elif a == y.ndim - 1:  # the last axis alone: columns of one row
            rows, cols = _ONE, taps[a]
            h, w, inner = 1, shape[a], 1
            out_shape = shape[:a] + (cols[0].size,)
        else:  # one axis alone: rows of whatever follows it, one column
            rows, cols = taps[a], _ONE
            h, w, inner = shape[a], 1, math.prod(shape[a + 1:])
            out_shape = shape[:a] + (rows[0].size,) + shape[a + 1:]
        out = new_scratch(out_shape) if todo else new_output(out_shape)
        if out.size:
            n = outer * rows[0].size
            lerp_rows(y.reshape(outer, h, w * inner), *rows, *cols, inner, parallel_chunks(n),
                      out.reshape(outer, rows[0].size, cols[0].size * inner))
        y = out
    return y


@threaded_kernel()
def lerp_rows(x, r0, r1, v0, v1, c0, c1, u0, u1, inner, chunks, y):
    """``y[i, p, q, k] = v0[p] (u0[q] x[i, r0[p], c0[q], k] + u1[q] x[i, r0[p], c1[q], k]) + v1[p] (...
    r1[p] ...)`` with ``x`` (outer, H, W * inner) and ``y`` (outer, OH, OW * inner): per output row
    the two source rows blended into a scratch row (contiguous, vectorised), then its columns picked
    and blended; ``chunks`` runs of output rows shared by the threads, a scratch row per run."""
    oh = y.shape[1]
    total = y.shape[0] * oh
    width = x.shape[2]
    for c in numba.prange(chunks):
        row = np.empty(width, np.float32)
        for t in range(c * total // chunks, (c + 1) * total // chunks):
            i, p = t // oh, t % oh
            a, b = x[i, r0[p]], x[i, r1[p]]
            f, g = v0[p], v1[p]
            for k in range(width):
                row[k] = f * a[k] + g * b[k]
            dst = y[i, p]
            if inner == 1:
                for q in range(c0.size):
                    dst[q] = u0[q] * row[c0[q]] + u1[q] * row[c1[q]]
            else:
                for q in range(c0.size):
                    s, e, d = c0[q] * inner, c1[q] * inner, q * inner
                    f, g = u0[q], u1[q]
                    for k in range(inner):
                        dst[d + k] = f * row[s + k] + g * row[e + k]
