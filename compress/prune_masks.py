"""Unstructured magnitude pruning: which weights to zero, as boolean masks over IR initializers.

Only the weight matrices of Conv/ConvTranspose/Gemm/MatMul are pruned: biases and
BatchNormalization parameters are a tiny share of the parameters and cutting them costs accuracy
for nothing. ``scope="layer"`` zeroes the same fraction of every layer; ``scope="global"`` ranks
all weights together under one threshold, so layers with many small weights lose more (Han et
al. 2015). Both remove *exactly* ``round(ratio * n)`` weights (ties broken by position), so the
sparsity asked for is the sparsity obtained.
"""
from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Mapping, MutableMapping, Sequence

import numpy as np

from inference.errors import EdgelearnError
from inference.ir import Model

__all__ = ["PruningError", "SCOPES", "check_ratio", "prunable_weights", "magnitude_masks", "apply_masks", "sparsity"]

SCOPES = ("layer", "global")
_WEIGHT_INPUTS = {"Conv": (1,), "ConvTranspose": (1,), "Gemm": (0, 1), "MatMul": (0, 1)}


class PruningError(EdgelearnError):
    """The model or the options cannot be pruned as asked (the message names the node or tensor)."""


def prunable_weights(model: Model, exclude: Sequence[str] = ()) -> list[str]:
    """Names of the float weight initializers (rank >= 2) read by Conv/ConvTranspose/Gemm/MatMul,
    in graph order; ``exclude`` holds names or glob patterns of weights or nodes to leave dense."""
    g = model.graph
    names: list[str] = []
    for node in g.nodes:
        if node.domain not in ("", "ai.onnx") or node.op_type not in _WEIGHT_INPUTS:
            continue
        if any(fnmatchcase(node.name, p) for p in exclude):
            continue
        for k in _WEIGHT_INPUTS[node.op_type]:
            name = node.inputs[k] if k < len(node.inputs) else ""
            arr = g.initializers.get(name)
            if arr is None or arr.dtype.kind != "f" or arr.ndim < 2 or name in names:
                continue
            if not any(fnmatchcase(name, p) for p in exclude):
                names.append(name)
    return names


def check_ratio(ratio: float) -> float:
    if not 0.0 <= float(ratio) < 1.0:
        raise PruningError(f"pruning ratio must be in [0, 1), got {ratio}")
    return float(ratio)


def _smallest(values: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask keeping all but the ``k`` smallest entries of a flat array (exact count)."""
    keep = np.ones(values.size, dtype=bool)
    if k > 0:
        keep[np.argpartition(values, k - 1, kind="introselect")[:k]] = False
    return keep


def magnitude_masks(arrays: Mapping[str, np.ndarray] | Model, ratio: float, scope: str = "layer",
                    names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Boolean masks (True = keep) zeroing the ``ratio`` smallest-magnitude weights.

    ``arrays``: a model (its :func:`prunable_weights` are used) or a name -> array mapping, e.g.
    a Trainer's live parameters. ``names`` restricts the weights considered.
    """
    ratio = check_ratio(ratio)
    if scope not in SCOPES:
        raise PruningError(f"scope must be one of {SCOPES}, got {scope!r}")
    if isinstance(arrays, Model):
        names = list(names) if names is not None else prunable_weights(arrays)
        arrays = arrays.graph.initializers
    names = list(arrays) if names is None else list(names)
    missing = [n for n in names if n not in arrays]
    if missing:
        raise PruningError(f"no weights named {missing[:5]} to prune (have {list(arrays)[:8]}...)")
    if not names:
        raise PruningError("no prunable weights (Conv/ConvTranspose/Gemm/MatMul float initializers) found")
    mags = {n: np.abs(np.asarray(arrays[n], dtype=np.float64)).ravel() for n in names}
    if scope == "layer":
        return {n: _smallest(m, int(round(ratio * m.size))).reshape(np.shape(arrays[n])) for n, m in mags.items()}
    flat = np.concatenate(list(mags.values()))
    keep = _smallest(flat, int(round(ratio * flat.size)))
    out, start = {}, 0
    for n, m in mags.items():
        out[n] = keep[start:start + m.size].reshape(np.shape(arrays[n]))
        start += m.size
    return out


def apply_masks(arrays: MutableMapping[str, np.ndarray], masks: Mapping[str, np.ndarray]) -> None:
    """Zero the masked-out weights in place (the arrays stay the same objects, as live views need)."""
    for name, mask in masks.items():
        arr = arrays.get(name)
        if arr is None:
            raise PruningError(f"mask for {name!r}, but there is no such array")
        if arr.shape != mask.shape:
            raise PruningError(f"mask for {name!r} has shape {mask.shape}, the array {arr.shape}")
        np.multiply(arr, mask, out=arr)


def sparsity(arrays: Mapping[str, np.ndarray] | Model, names: Sequence[str] | None = None) -> dict[str, float]:
    """Fraction of exact zeros per weight, plus ``"total"`` over all of them."""
    if isinstance(arrays, Model):
        names = list(names) if names is not None else prunable_weights(arrays)
        arrays = arrays.graph.initializers
    names = list(arrays) if names is None else list(names)
    zeros = {n: int(np.count_nonzero(arrays[n] == 0)) for n in names}
    out = {n: zeros[n] / max(arrays[n].size, 1) for n in names}
    out["total"] = sum(zeros.values()) / max(sum(arrays[n].size for n in names), 1)
    return out
