"""Binary weights (BWN / XNOR-Net style): ``W ~ sign(W) * alpha`` per output channel, bit-packed.

``alpha_c = mean |W_c|`` is the scale that minimises ``||W_c - alpha * sign(W_c)||^2`` for a fixed
sign pattern (Rastegari et al. 2016), so it is the post-hoc optimum, no calibration data needed.
Each chosen weight is stored as ``np.packbits`` bits (1 bit per weight) plus one float32 per
channel and decoded by ``edgelearn::BinarizedWeight`` (:mod:`inference.kernels.binarized`) in
front of the unchanged Conv/Gemm/MatMul: one op serves every layer type and layout (groups,
transB, MatMul's (K, N)), and the consuming op keeps its fast kernel and fusions.

By default the first and the last layer stay float32, as is usual: the first sees raw pixels
through few weights, the last maps features to classes, and both cost a large share of accuracy
for a small share of the weights. :func:`to_fp32` decodes back to a plain ONNX graph (the same
``sign * alpha`` weights as float32 initializers) that any runtime, onnxruntime included, can run.

Because the binarization is per channel, folding a BatchNorm into the conv first (``prepare``)
gives the same signs and ``|gamma|``-scaled alphas as binarizing before the BatchNorm.
"""
from __future__ import annotations

import fnmatch
import json
from typing import Callable, Sequence

import numpy as np

from compress.quantize import QUANTIZABLE, QuantTarget, clone, prepare, quantizable
from inference.errors import EdgelearnError
from inference.ir import Model, Node, Value
from inference.kernels.binarized import DOMAIN, OP_TYPE, decode
from inference.passes._rewrite import drop_unused_initializers
from inference.passes._rewrite import fresh_name as graph_fresh_name

METADATA_KEY = "edgelearn.binarization"


class BinarizationError(EdgelearnError):
    """The model or the layer selection cannot be binarized as asked (the message names the node)."""


def binarize_weight(w: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Packed sign bits (uint8, 1 for ``w >= 0``) of ``w`` and its float32 ``mean |w|`` per ``axis``."""
    w = np.asarray(w)
    if w.ndim == 0 or not -w.ndim <= axis < w.ndim:
        raise BinarizationError(f"axis {axis} is out of range for a weight of shape {list(w.shape)}")
    if not np.issubdtype(w.dtype, np.floating) or not np.all(np.isfinite(w)):
        raise BinarizationError(f"a weight to binarize must be finite floats, got {w.dtype}")
    other = tuple(i for i in range(w.ndim) if i != axis % w.ndim)
    alpha = np.abs(w).mean(axis=other, dtype=np.float64).astype(np.float32)
    return np.packbits((w >= 0).reshape(-1)), alpha


def layer_name(node: Node) -> str:
    """How the metadata and the STE fine-tuning name a layer: its node name, else its output."""
    return node.name or node.outputs[0]


def _matches(node: Node, patterns: Sequence[str]) -> bool:
    keys = {node.label(), node.name, node.outputs[0]} - {""}
    return any(fnmatch.fnmatchcase(k, p) for k in keys for p in patterns)


def select_layers(model: Model, layers: Sequence[str] | None = None, skip_first_last: bool = True) -> list[QuantTarget]:
    """The layers :func:`binarize` rewrites, in graph order: those matching ``layers`` (node names,
    output names or globs), or by default every Conv/Gemm/MatMul with a constant float32 weight
    except the first and the last. A pattern matching nothing, or matching a node that cannot be
    binarized, is an error naming it (a silent no-op would report a float model as binary)."""
    candidates = quantizable(model, QUANTIZABLE)
    if layers is None:
        return candidates[1:-1] if skip_first_last else candidates
    if isinstance(layers, str):
        layers = [layers]
    chosen = [t for t in candidates if _matches(t.node, layers)]
    ok = {id(t.node) for t in candidates}
    for p in layers:
        hits = [n for n in model.graph.nodes if _matches(n, [p])]
        if not hits:
            raise BinarizationError(f"layer pattern {p!r} matches no node; binarizable layers: "
                                    f"{[layer_name(t.node) for t in candidates]}")
        if not any(id(n) in ok for n in hits):
            n = hits[0]
            raise BinarizationError(
                f"node {n.label()} ({n.domain or 'ai.onnx'}::{n.op_type}) cannot be binarized: only "
                f"{'/'.join(QUANTIZABLE)} nodes with a constant float32 weight (a plain Gemm: no transA, "
                "alpha 1) can be")
    return chosen


def binarize(model: Model, layers: Sequence[str] | None = None, skip_first_last: bool = True) -> Model:
    """A copy of ``model`` with the chosen layers' weights binarized (see :func:`select_layers`).

    The graph is simplified first (BatchNorm folded into Conv, MatMul+Add as Gemm), as for int8.
    """
    m = prepare(model)
    targets = select_layers(m, layers, skip_first_last)
    if not targets:
        raise BinarizationError("no layer to binarize: the model has "
                                f"{len(quantizable(m, QUANTIZABLE))} Conv/Gemm/MatMul layer(s) with a constant "
                                "float32 weight" + (" and the first and last stay float32 by default"
                                                    if layers is None and skip_first_last else ""))

    def emit(w_name: str, w: np.ndarray, axis: int) -> Node:
        bits, alpha = binarize_weight(w, axis)
        b_name, a_name = fresh_name(m, f"{w_name}_bits"), fresh_name(m, f"{w_name}_alpha")
        m.graph.initializers[b_name], m.graph.initializers[a_name] = bits, alpha
        return Node(OP_TYPE, [b_name, a_name], [fresh_name(m, f"{w_name}_binarized")],
                    {"shape": [int(d) for d in w.shape], "axis": int(axis)}, DOMAIN)

    route_weights(m, targets, emit)
    m.opset_imports.setdefault(DOMAIN, 1)
    m.metadata[METADATA_KEY] = json.dumps({"layers": [layer_name(t.node) for t in targets],
                                           "scale": "mean_abs_per_channel"}, sort_keys=True)
    m.producer_name = "edgelearn"
    return m


def route_weights(m: Model, targets: Sequence[QuantTarget], emit: Callable[[str, np.ndarray, int], Node]) -> None:
    """Make each target layer read its weight through the node ``emit(weight name, weight, axis)``
    returns (one node per weight and axis, so a shared weight is stored once), then drop the
    initializers nobody reads any more."""
    g = m.graph
    g.value_info.clear()  # recomputed by the runtime
    routed: dict[tuple[str, int], str] = {}
    for t in targets:
        key = (t.node.inputs[1], t.weight_axis)
        if key not in routed:
            node = emit(key[0], g.initializers[key[0]], t.weight_axis)
            g.nodes.append(node)
            routed[key] = node.outputs[0]
            # the weight's type, kept in the file: onnx's shape inference (run when a model is
            # loaded) does not know our ops and would lose every shape downstream of them
            g.value_info[routed[key]] = Value(routed[key], g.type_of(key[0]))
        t.node.inputs[1] = routed[key]
    g.toposort()
    drop_unused_initializers(g)


def fresh_name(m: Model, base: str) -> str:
    """``base``, or ``base_<i>`` if a value of the graph already has that name."""
    return graph_fresh_name(m.graph, base, sep="_")


def binarized_layers(model: Model) -> list[str]:
    """Names of the layers :func:`binarize` binarized (from the model's metadata; [] if none)."""
    info = model.metadata.get(METADATA_KEY)
    return list(json.loads(info)["layers"]) if info else []


def to_fp32(model: Model) -> Model:
    """A plain-ONNX copy: each ``BinarizedWeight`` replaced by its decoded float32 initializer
    (exactly the weights our runtime multiplies by), for runtimes that do not know our domain."""
    m = clone(model)
    g = m.graph
    for node in [n for n in g.nodes if n.domain == DOMAIN and n.op_type == OP_TYPE]:
        try:
            bits, alpha = (g.initializers[i] for i in node.inputs[:2])
        except KeyError as e:
            raise BinarizationError(f"node {node.label()} ({DOMAIN}::{OP_TYPE}) reads {e.args[0]!r}, "
                                    "which is not an initializer: cannot decode it at export") from None
        try:
            g.initializers[node.outputs[0]] = decode(bits, alpha, node.attrs.get("shape"), node.attrs.get("axis", 0))
        except EdgelearnError as e:
            raise BinarizationError(f"node {node.label()} ({DOMAIN}::{OP_TYPE}): {e}") from None
        g.nodes.remove(node)
    drop_unused_initializers(g)
    if not any(n.domain == DOMAIN for n in g.nodes):
        m.opset_imports.pop(DOMAIN, None)
    m.metadata.pop(METADATA_KEY, None)
    return m


__all__ = ["BinarizationError", "binarize", "binarize_weight", "select_layers", "binarized_layers", "to_fp32"]
