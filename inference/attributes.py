"""ONNX attributes to and from the plain Python values kernels receive."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import onnx
from onnx import AttributeProto, helper, numpy_helper

_A = AttributeProto


def attr_to_python(attr: AttributeProto, graph_importer: Callable[[onnx.GraphProto], Any] | None = None) -> Any:
    """Decode one attribute: ints, floats, str (utf-8), lists, ndarrays, subgraphs (via importer)."""
    t = attr.type
    if t == _A.FLOAT:
        return float(attr.f)
    if t == _A.INT:
        return int(attr.i)
    if t == _A.STRING:
        return attr.s.decode("utf-8", errors="replace")
    if t == _A.TENSOR:
        return numpy_helper.to_array(attr.t)
    if t == _A.SPARSE_TENSOR:
        return sparse_to_dense(attr.sparse_tensor)
    if t == _A.GRAPH:
        return graph_importer(attr.g) if graph_importer else attr.g
    if t == _A.FLOATS:
        return [float(v) for v in attr.floats]
    if t == _A.INTS:
        return [int(v) for v in attr.ints]
    if t == _A.STRINGS:
        return [s.decode("utf-8", errors="replace") for s in attr.strings]
    if t == _A.TENSORS:
        return [numpy_helper.to_array(v) for v in attr.tensors]
    if t == _A.GRAPHS:
        return [graph_importer(g) if graph_importer else g for g in attr.graphs]
    if t == _A.TYPE_PROTO:
        return attr.tp
    if t == _A.TYPE_PROTOS:
        return list(attr.type_protos)
    raise ValueError(f"attribute {attr.name!r} has unsupported type {t}")


def sparse_to_dense(sp: onnx.SparseTensorProto) -> np.ndarray:
    """A dense array from an ONNX sparse tensor (linear or coordinate indices)."""
    values = numpy_helper.to_array(sp.values)
    idx = numpy_helper.to_array(sp.indices)
    dims = tuple(sp.dims)
    dense = np.zeros(dims, dtype=values.dtype)
    if idx.ndim == 1:
        dense.reshape(-1)[idx] = values
    else:
        dense[tuple(idx.T)] = values
    return dense


def python_to_attr(name: str, value: Any, attr_type: int | None = None,
                   graph_exporter: Callable[[Any], onnx.GraphProto] | None = None) -> AttributeProto:
    """Encode a Python value back to an AttributeProto, keeping the original type when known."""
    if attr_type == _A.GRAPH or (attr_type is None and hasattr(value, "nodes")):
        return helper.make_attribute(name, graph_exporter(value), attr_type=_A.GRAPH)
    if attr_type == _A.GRAPHS:
        return helper.make_attribute(name, [graph_exporter(g) for g in value], attr_type=_A.GRAPHS)
    if attr_type == _A.SPARSE_TENSOR:
        attr_type = _A.TENSOR
    if isinstance(value, np.ndarray) and attr_type in (None, _A.TENSOR):
        return helper.make_attribute(name, numpy_helper.from_array(value), attr_type=_A.TENSOR)
    if attr_type == _A.TENSORS:
        return helper.make_attribute(name, [numpy_helper.from_array(v) for v in value], attr_type=_A.TENSORS)
    return helper.make_attribute(name, value, attr_type=attr_type)
