"""Detection ops: RoiAlign (separable bilinear sampling per RoI) and greedy NonMaxSuppression."""
from __future__ import annotations

import math

import numpy as np

from inference.errors import KernelError
from inference.ops.registry import register


# --- RoiAlign --------------------------------------------------------------------------------

def _sample_axis(start: float, bin_size: float, bins: int, grid: int, size: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear taps of the ``bins * grid`` sample points along one axis of a RoI:
    (low index, high index, low weight, high weight), zero weights for points off the map."""
    steps = (np.arange(grid) + 0.5) * bin_size / grid
    pos = (start + np.arange(bins)[:, None] * bin_size + steps[None, :]).reshape(-1)
    valid = (pos >= -1.0) & (pos <= size)
    pos = np.maximum(pos, 0.0)
    low = np.floor(pos).astype(np.int64)
    at_edge = low >= size - 1
    low = np.where(at_edge, size - 1, low)
    high = np.where(at_edge, size - 1, low + 1)
    pos = np.where(at_edge, low, pos)
    frac = pos - low
    return low, high, (1 - frac) * valid, frac * valid


def _roi_align_one(img: np.ndarray, roi: np.ndarray, out_h: int, out_w: int, sampling_ratio: int,
                   scale: float, half_pixel: bool, mode: str) -> np.ndarray:
    """Pooled (C, out_h, out_w) features of one RoI [x1, y1, x2, y2] over ``img`` (C, H, W)."""
    offset = 0.5 if half_pixel else 0.0
    x1, y1, x2, y2 = (float(v) * scale - offset for v in roi)
    roi_w, roi_h = x2 - x1, y2 - y1
    if not half_pixel:  # legacy mode: force malformed RoIs to be 1x1
        roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
    grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / out_h)
    grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / out_w)
    yl, yh, wyl, wyh = _sample_axis(y1, roi_h / out_h, out_h, grid_h, img.shape[1])
    xl, xh, wxl, wxh = _sample_axis(x1, roi_w / out_w, out_w, grid_w, img.shape[2])
    c = img.shape[0]
    if mode == "avg":
        # bilinear sampling is separable: average = Wy @ img @ Wx^T
        wy = np.zeros((out_h * grid_h, img.shape[1]))
        wx = np.zeros((out_w * grid_w, img.shape[2]))
        rows_y, rows_x = np.arange(len(yl)), np.arange(len(xl))
        np.add.at(wy, (rows_y, yl), wyl)
        np.add.at(wy, (rows_y, yh), wyh)
        np.add.at(wx, (rows_x, xl), wxl)
        np.add.at(wx, (rows_x, xh), wxh)
        wy = wy.reshape(out_h, grid_h, -1).mean(axis=1)
        wx = wx.reshape(out_w, grid_w, -1).mean(axis=1)
        return np.einsum("ph,chw,qw->cpq", wy, img, wx)
    # max mode: the maximum over samples of each weighted corner term
    terms = [img[:, ys][:, :, xs] * (wy[:, None] * wx[None, :])
             for ys, wy in ((yl, wyl), (yh, wyh)) for xs, wx in ((xl, wxl), (xh, wxh))]
    best = np.maximum.reduce(terms)
    return best.reshape(c, out_h, grid_h, out_w, grid_w).max(axis=(2, 4))


def _roi_align(x, rois, batch_indices, *, coordinate_transformation_mode, mode, output_height,
               output_width, sampling_ratio, spatial_scale) -> np.ndarray:
    if mode not in ("avg", "max"):
        raise KernelError(f"RoiAlign: mode must be 'avg' or 'max', got {mode!r}")
    if coordinate_transformation_mode not in ("half_pixel", "output_half_pixel"):
        raise KernelError("RoiAlign: coordinate_transformation_mode must be 'half_pixel' or "
                          f"'output_half_pixel', got {coordinate_transformation_mode!r}")
    if x.ndim != 4 or rois.ndim != 2 or rois.shape[1] != 4 or batch_indices.shape != rois.shape[:1]:
        raise KernelError(f"RoiAlign: expected X (N, C, H, W), rois (R, 4), batch_indices (R,), got "
                          f"{x.shape}, {rois.shape}, {batch_indices.shape}")
    half_pixel = coordinate_transformation_mode == "half_pixel"
    y = np.zeros((rois.shape[0], x.shape[1], output_height, output_width), dtype=np.float64)
    for r in range(rois.shape[0]):  # one small separable computation per RoI
        y[r] = _roi_align_one(x[int(batch_indices[r])].astype(np.float64), rois[r], output_height,
                              output_width, sampling_ratio, spatial_scale, half_pixel, mode)
    return y.astype(x.dtype)


@register("RoiAlign", since=10)
def roi_align_10(x, rois, batch_indices, *, mode="avg", output_height=1, output_width=1,
                 sampling_ratio=0, spatial_scale=1.0):
    return _roi_align(x, rois, batch_indices, coordinate_transformation_mode="output_half_pixel",
                      mode=mode, output_height=output_height, output_width=output_width,
                      sampling_ratio=sampling_ratio, spatial_scale=spatial_scale)


@register("RoiAlign", since=16)
def roi_align(x, rois, batch_indices, *, coordinate_transformation_mode="half_pixel", mode="avg",
              output_height=1, output_width=1, sampling_ratio=0, spatial_scale=1.0):
    return _roi_align(x, rois, batch_indices, coordinate_transformation_mode=coordinate_transformation_mode,
                      mode=mode, output_height=output_height, output_width=output_width,
                      sampling_ratio=sampling_ratio, spatial_scale=spatial_scale)


# --- NonMaxSuppression -----------------------------------------------------------------------

def _corners(boxes: np.ndarray, center_point_box: int) -> np.ndarray:
    """Boxes as (y_min, x_min, y_max, x_max) whatever the input format."""
    if center_point_box:
        xc, yc, w, h = np.moveaxis(boxes, -1, 0)
        return np.stack([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], axis=-1)
    y1, x1, y2, x2 = np.moveaxis(boxes, -1, 0)
    return np.stack([np.minimum(y1, y2), np.minimum(x1, x2), np.maximum(y1, y2), np.maximum(x1, x2)], axis=-1)


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Intersection over union of one corner box with each of ``others``."""
    top_left = np.maximum(box[:2], others[:, :2])
    bottom_right = np.minimum(box[2:], others[:, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=1)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    union = area(box) + area(others) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _greedy_nms(boxes: np.ndarray, scores: np.ndarray, limit: int, iou_threshold: float,
                score_threshold: float | None) -> list[int]:
    """Indices kept for one (batch, class): best first, dropping boxes overlapping a kept one."""
    order = np.argsort(-scores, kind="stable")
    if score_threshold is not None:
        order = order[scores[order] > score_threshold]
    kept: list[int] = []
    while order.size and len(kept) < limit:
        best, order = order[0], order[1:]
        kept.append(int(best))
        order = order[_iou(boxes[best], boxes[order]) <= iou_threshold]
    return kept


@register("NonMaxSuppression", since=10)
def non_max_suppression(boxes, scores, max_output_boxes_per_class=None, iou_threshold=None,
                        score_threshold=None, *, center_point_box=0):
    if boxes.ndim != 3 or boxes.shape[2] != 4 or scores.ndim != 3 or scores.shape[0] != boxes.shape[0] \
            or scores.shape[2] != boxes.shape[1]:
        raise KernelError(f"NonMaxSuppression: expected boxes (N, B, 4) and scores (N, classes, B), "
                          f"got {boxes.shape} and {scores.shape}")
    limit = int(max_output_boxes_per_class.reshape(-1)[0]) if max_output_boxes_per_class is not None \
        and max_output_boxes_per_class.size else 0
    iou_t = float(iou_threshold.reshape(-1)[0]) if iou_threshold is not None and iou_threshold.size else 0.0
    score_t = float(score_threshold.reshape(-1)[0]) if score_threshold is not None and score_threshold.size else None
    corners = _corners(boxes.astype(np.float64), center_point_box)
    selected = [(b, c, i) for b in range(scores.shape[0]) for c in range(scores.shape[1])
                for i in _greedy_nms(corners[b], scores[b, c], limit, iou_t, score_t)]
    return np.array(selected, dtype=np.int64).reshape(-1, 3)
