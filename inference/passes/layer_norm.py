"""Layer normalization written out in primitive ops -> one LayerNormalization node.

Before opset 17 ONNX had no LayerNormalization, so PyTorch's exporter (and Keras', and most BERT
checkpoints in the wild) writes ``nn.LayerNorm`` as nine nodes::

    m = ReduceMean(x, axes=[-1])      d = Sub(x, m)         v = ReduceMean(Pow(d, 2), axes=[-1])
    y = Div(d, Sqrt(Add(v, eps)))     [y = Mul(y, gamma)]   [y = Add(y, beta)]

each a pass over the tensor in numpy. The fused node is one pass of the row kernel
(:func:`inference.kernels.norm.layer_norm_rows`). At opset 17 and later it is the standard op; in
older models it goes in our domain (``edgelearn::LayerNormalization``, the same attributes and
kernels), so the saved graph stays valid for its declared opset.

Matched only where each intermediate is read by the chain alone and is no graph output; the
squared deviation may also be ``Mul(d, d)``; ``axes`` may be an attribute or (opset 18) an input,
and must be the trailing axes of ``x``.
"""
from __future__ import annotations

import numpy as np

from inference.ir import Graph, Model, Node, TensorType
from inference.kernels.fused import DOMAIN
from inference.passes._rewrite import (constant_value, drop_unused_initializers, fresh_name, fuse_nodes, next_plain,
                                      other_input, readers, single_reader)

#: the first opset whose default domain has LayerNormalization
STANDARD_SINCE = 17


def fuse_layer_norm(model: Model) -> bool:
    g, changed = model.graph, False
    for mean in [n for n in g.nodes if n.op_type == "ReduceMean" and n.domain == ""]:
        if mean not in g.nodes:
            continue
        found = _match(g, mean)
        if found is None:
            continue
        axis, epsilon, gamma, beta, chain = found
        x = mean.inputs[0]
        if gamma is None:
            gamma = fresh_name(g, f"{chain[-1].outputs[0]}__scale")
            g.initializers[gamma] = np.ones(_normalized_shape(g, x, axis), _dtype(g, x))
        standard = model.opset_imports.get("", 1) >= STANDARD_SINCE
        fused = Node("LayerNormalization", [x, gamma] + ([beta] if beta else []), list(chain[-1].outputs),
                     {"axis": axis, "epsilon": epsilon}, "" if standard else DOMAIN, chain[-1].name or chain[-1].outputs[0])
        fuse_nodes(g, chain[-1], fused, chain[:-1])
        if not standard:
            model.opset_imports.setdefault(DOMAIN, 1)
        changed = True
    if changed:
        drop_unused_initializers(g)
    return changed


def _match(g: Graph, mean: Node) -> tuple[int, float, str | None, str | None, list[Node]] | None:
    """(axis, epsilon, gamma, beta, the chain's nodes in order) for the chain starting at ``mean``."""
    x = mean.inputs[0]
    rank = _rank(g, x)
    axes = _trailing_axes(g, mean, rank)
    if axes is None or not _is_float(g, x):
        return None
    sub = single_reader(g, mean.outputs[0])
    if sub is None or sub.op_type != "Sub" or sub.inputs != [x, mean.outputs[0]]:
        return None
    d = sub.outputs[0]
    uses = readers(g, d)
    if d in g.output_names or len(uses) != 2:
        return None
    square = next((n for n in uses if n.op_type in ("Pow", "Mul")), None)
    div = next((n for n in uses if n.op_type == "Div"), None)
    if square is None or div is None or not _squares(g, square, d):
        return None
    var = next_plain(g, square, "ReduceMean")
    if var is None or _trailing_axes(g, var, rank) != axes:
        return None
    add = next_plain(g, var, "Add")
    eps_name = None if add is None else other_input(add, var.outputs[0])
    eps = None if eps_name is None else constant_value(g, eps_name)
    if eps is None or eps.size != 1:
        return None
    sqrt = next_plain(g, add, "Sqrt")
    if sqrt is None or next_plain(g, sqrt, "Div") is not div or div.inputs != [d, sqrt.outputs[0]]:
        return None
    chain = [mean, sub, square, var, add, sqrt, div]
    shape = _normalized_shape(g, x, -len(axes)) if rank is not None else None
    gamma = beta = None
    mul = next_plain(g, div, "Mul")
    if mul is not None and _affine(g, other_input(mul, div.outputs[0]), shape):
        gamma = other_input(mul, div.outputs[0])
        chain.append(mul)
    last = chain[-1]
    plus = next_plain(g, last, "Add")
    if plus is not None and _affine(g, other_input(plus, last.outputs[0]), shape):
        beta = other_input(plus, last.outputs[0])
        chain.append(plus)
    if gamma is None and shape is None:
        return None  # a unit scale needs the normalized shape
    return -len(axes), float(eps.reshape(())), _shaped(g, gamma, shape), _shaped(g, beta, shape), chain


def _trailing_axes(g: Graph, node: Node, rank: int | None) -> tuple[int, ...] | None:
    """``node``'s reduced axes counted from the end (-k..-1), if they are trailing and kept."""
    if node.attrs.get("keepdims", 1) != 1 or node.attrs.get("noop_with_empty_axes", 0):
        return None
    axes = node.attrs.get("axes")
    if len(node.inputs) > 1 and node.inputs[1]:
        value = constant_value(g, node.inputs[1])
        axes = None if value is None else [int(a) for a in value.ravel()]
    if not axes:
        return None
    if rank is None:
        normalized = sorted(axes) if all(a < 0 for a in axes) else None
    else:
        normalized = sorted(a - rank if a >= 0 else a for a in axes)
    if not normalized or normalized != list(range(-len(normalized), 0)):
        return None
    return tuple(normalized)


def _squares(g: Graph, node: Node, d: str) -> bool:
    if node.op_type == "Mul":
        return node.inputs == [d, d]
    exponent = constant_value(g, node.inputs[1]) if node.inputs[0] == d and len(node.inputs) == 2 else None
    return exponent is not None and exponent.size == 1 and float(exponent.reshape(())) == 2.0


def _affine(g: Graph, name: str | None, shape: tuple[int, ...] | None) -> bool:
    """Whether ``name`` is a constant scale or shift over the normalized axes alone."""
    value = None if name is None else constant_value(g, name)
    if value is None or value.dtype.kind != "f":
        return False
    trimmed = value.shape[next((i for i, s in enumerate(value.shape) if s != 1), len(value.shape)):]
    return shape is not None and tuple(trimmed) == shape


def _shaped(g: Graph, name: str | None, shape: tuple[int, ...] | None) -> str | None:
    """``name``, or a copy of it with the normalized shape (the op's scale and bias have no leading
    ones, which the broadcasting Mul and Add allowed)."""
    if name is None or g.initializers[name].shape == shape:
        return name
    copy = fresh_name(g, f"{name}__normalized")
    g.initializers[copy] = g.initializers[name].reshape(shape)
    return copy


def _rank(g: Graph, name: str) -> int | None:
    t = g.type_of(name)
    return t.rank if isinstance(t, TensorType) else None


def _is_float(g: Graph, name: str) -> bool:
    t = g.type_of(name)
    return isinstance(t, TensorType) and t.dtype.kind == "f"


def _dtype(g: Graph, name: str) -> np.dtype:
    return g.type_of(name).dtype


def _normalized_shape(g: Graph, name: str, axis: int) -> tuple[int, ...] | None:
    t = g.type_of(name)
    dims = t.shape[axis:] if isinstance(t, TensorType) and t.shape is not None else None
    return tuple(dims) if dims is not None and all(isinstance(d, int) for d in dims) else None
