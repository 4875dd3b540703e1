"""Resize and Upsample as separable resampling: one (out x in) weight matrix per resized axis.

Nearest, N-linear and N-cubic interpolation are all tensor products of 1-D filters, so each axis
is resampled by a matrix product with weights built from the ONNX coordinate transformation,
the rounding / filter of the mode, antialias stretching and exclude_outside renormalization.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from inference.errors import KernelError
from inference.ops.registry import register

_NEAREST = {
    "round_prefer_floor": lambda c: np.ceil(c - 0.5),
    "round_prefer_ceil": lambda c: np.floor(c + 0.5),
    "floor": np.floor,
    "ceil": np.ceil,
}
_MODES = ("nearest", "linear", "cubic")


@dataclass(frozen=True)
class _Options:
    mode: str = "nearest"
    coordinate_transformation_mode: str = "half_pixel"
    nearest_mode: str = "round_prefer_floor"
    cubic_coeff_a: float = -0.75
    exclude_outside: int = 0
    antialias: int = 0


def _original_coords(out_len: int, in_len: int, scale: float, ctm: str, roi: tuple[float, float]) -> np.ndarray:
    """Input-space coordinate of every output index along one axis.

    As in ONNX, align_corners uses the fractional resized length ``in_len * scale``.
    """
    x = np.arange(out_len, dtype=np.float64)
    if ctm == "half_pixel":
        return (x + 0.5) / scale - 0.5
    if ctm == "half_pixel_symmetric":
        adjustment = out_len / (in_len * scale)
        offset = in_len / 2 * (1 - adjustment)
        return offset + (x + 0.5) / scale - 0.5
    if ctm == "pytorch_half_pixel":
        return (x + 0.5) / scale - 0.5 if out_len > 1 else np.zeros_like(x)
    if ctm == "align_corners":
        resized = in_len * scale
        return x * (in_len - 1) / (resized - 1) if resized > 1 else np.zeros_like(x)
    if ctm == "asymmetric":
        return x / scale
    if ctm == "tf_half_pixel_for_nn":
        return (x + 0.5) / scale
    if ctm == "tf_crop_and_resize":
        start, end = roi
        if out_len == 1:
            return np.full_like(x, 0.5 * (start + end) * (in_len - 1))
        return start * (in_len - 1) + x * (end - start) * (in_len - 1) / (out_len - 1)
    raise KernelError(f"Resize: unknown coordinate_transformation_mode {ctm!r}")


def cubic_kernel(t: np.ndarray, a: float) -> np.ndarray:
    """Keys cubic convolution kernel with coefficient ``a``."""
    t = np.abs(t)
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def _filter_weights(coords: np.ndarray, in_len: int, scale: float, opts: _Options) -> np.ndarray:
    """(out, in) weights of linear or cubic filtering, stretched by 1/scale when antialiasing."""
    radius = 1 if opts.mode == "linear" else 2
    s = min(scale, 1.0) if opts.antialias else 1.0
    start = math.floor(-radius / s) + 1
    offsets = np.arange(start, 2 - start)
    base = np.floor(coords)
    args = (offsets[None, :] - (coords - base)[:, None]) * s
    w = np.clip(1 - np.abs(args), 0, 1) if opts.mode == "linear" else cubic_kernel(args, opts.cubic_coeff_a)
    taps = base[:, None].astype(np.int64) + offsets[None, :]
    if opts.exclude_outside:
        w = np.where((taps >= 0) & (taps < in_len), w, 0.0)
    w = w / w.sum(axis=1, keepdims=True)
    weights = np.zeros((len(coords), in_len))
    rows = np.broadcast_to(np.arange(len(coords))[:, None], taps.shape)
    np.add.at(weights, (rows, np.clip(taps, 0, in_len - 1)), w)  # outside taps repeat the edge
    return weights


def _axis_weights(in_len: int, out_len: int, scale: float, roi: tuple[float, float], opts: _Options
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(out, in) resampling matrix of one axis and the mask of outputs sampled outside the input."""
    coords = _original_coords(out_len, in_len, scale, opts.coordinate_transformation_mode, roi)
    outside = (coords < 0) | (coords > in_len - 1)
    if opts.mode == "nearest":
        if opts.nearest_mode not in _NEAREST:
            raise KernelError(f"Resize: unknown nearest_mode {opts.nearest_mode!r}")
        idx = np.clip(_NEAREST[opts.nearest_mode](coords), 0, in_len - 1).astype(np.int64)
        weights = np.zeros((out_len, in_len))
        weights[np.arange(out_len), idx] = 1.0
    else:
        weights = _filter_weights(coords, in_len, scale, opts)
    return weights, outside


def _output_geometry(shape, axes, roi, scales, sizes, policy: str, crop: bool
                     ) -> tuple[list[int], list[float], list[tuple[float, float]]]:
    """Per resized axis: output length, scale and roi (start, end)."""
    rank = len(shape)
    n = len(axes)
    if roi is not None and roi.size:
        roi = roi.astype(np.float64).reshape(-1)
        if roi.size == 2 * rank and n != rank:
            roi = np.concatenate([roi[:rank][axes], roi[rank:][axes]])
        rois = [(float(roi[i]), float(roi[i + n])) for i in range(n)]
    else:
        rois = [(0.0, 1.0)] * n
    in_lens = [shape[a] for a in axes]
    if sizes is not None:
        if len(sizes) != n:
            raise KernelError(f"Resize: sizes has {len(sizes)} values for {n} resized axes")
        ratios = [s / i for s, i in zip(sizes, in_lens)]
        if policy in ("not_larger", "not_smaller"):
            common = min(ratios) if policy == "not_larger" else max(ratios)
            ratios = [common] * n
            out = [int(math.floor(common * i + 0.5)) for i in in_lens]
        elif policy == "stretch":
            out = [int(s) for s in sizes]
        else:
            raise KernelError(f"Resize: unknown keep_aspect_ratio_policy {policy!r}")
        return out, ratios, rois
    if scales is None:
        raise KernelError("Resize: one of scales or sizes must be given")
    if len(scales) != n or min(scales) <= 0:
        raise KernelError(f"Resize: scales must hold {n} positive values, got {list(scales)}")
    out = [int(math.floor(i * (e - s if crop else 1.0) * sc))
           for i, sc, (s, e) in zip(in_lens, scales, rois)]
    return out, [float(s) for s in scales], rois


def _resize(x: np.ndarray, roi, scales, sizes, opts: _Options, axes=None,
            keep_aspect_ratio_policy: str = "stretch", extrapolation_value: float = 0.0) -> np.ndarray:
    if opts.mode not in _MODES:
        raise KernelError(f"Resize: mode must be one of {_MODES}, got {opts.mode!r}")
    rank = x.ndim
    axes = [a % rank for a in axes] if axes else list(range(rank))
    scales = None if scales is None or scales.size == 0 else scales.astype(np.float64).tolist()
    sizes = None if sizes is None or sizes.size == 0 else sizes.astype(np.int64).tolist()
    crop = opts.coordinate_transformation_mode == "tf_crop_and_resize"
    out_lens, ratios, rois = _output_geometry(x.shape, axes, roi, scales, sizes, keep_aspect_ratio_policy, crop)
    y = x.astype(np.float64)
    outside = np.zeros((1,) * rank, dtype=bool)
    for axis, out_len, scale, r in zip(axes, out_lens, ratios, rois):
        if out_len == x.shape[axis] and scale == 1.0 and not crop:
            continue
        weights, out_mask = _axis_weights(x.shape[axis], out_len, scale, r, opts)
        y = np.moveaxis(np.tensordot(weights, y, axes=([1], [axis])), 0, axis)
        mask_shape = [1] * rank
        mask_shape[axis] = out_len
        outside = outside | out_mask.reshape(mask_shape)
    if crop:
        y = np.where(outside, extrapolation_value, y)
    if np.issubdtype(x.dtype, np.integer):
        info = np.iinfo(x.dtype)
        y = np.clip(np.rint(y), info.min, info.max)
    return y.astype(x.dtype)


@register("Resize", since=10)
def resize_10(x, scales, *, mode="nearest"):
    """Opset 10: scales only, asymmetric coordinates, nearest rounds down."""
    return _resize(x, None, scales, None, _Options(mode, "asymmetric", "floor"))


@register("Resize", since=11)
def resize(x, roi=None, scales=None, sizes=None, *, mode="nearest", coordinate_transformation_mode="half_pixel",
           nearest_mode="round_prefer_floor", cubic_coeff_a=-0.75, exclude_outside=0, antialias=0,
           extrapolation_value=0.0, axes=None, keep_aspect_ratio_policy="stretch"):
    opts = _Options(mode, coordinate_transformation_mode, nearest_mode, cubic_coeff_a, exclude_outside, antialias)
    return _resize(x, roi, scales, sizes, opts, axes, keep_aspect_ratio_policy, extrapolation_value)


@register("Upsample", since=7)
def upsample_7(x, *, scales=None, mode="nearest", width_scale=None, height_scale=None):
    if scales is None:
        raise KernelError("Upsample: attribute scales is required")
    return resize_10(x, np.asarray(scales, dtype=np.float32), mode=mode)


@register("Upsample", since=9)
def upsample(x, scales, *, mode="nearest"):
    return resize_10(x, scales, mode=mode)
