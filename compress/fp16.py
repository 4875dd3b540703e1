"""fp16 weight storage: half the file, computed in float32.

Each float32 initializer is stored as float16 and read through a ``Cast(to=FLOAT)``, so the graph
still computes in float32 and every runtime reads it. Why not compute in fp16: this CPU class
has no fast fp16 arithmetic path in numpy/OpenBLAS (numpy's float16 matmul is emulated and far
slower than sgemm), so fp16 here is a storage format. At load time constant folding turns each
Cast(fp16 weight) back into a float32 initializer (once), so inference pays nothing per run;
onnxruntime folds them the same way.

``keep_io_types=False`` also makes the model's float32 inputs and outputs float16 (with Casts at
the boundary), for callers that hand over fp16 data.
"""
from __future__ import annotations

import json

import numpy as np

from compress.quantize import clone
from inference.errors import EdgelearnError
from inference.ir import Model, Node, TensorType, Value

FP16_MAX = float(np.finfo(np.float16).max)
_FLOAT, _FLOAT16 = 1, 10


class Fp16Error(EdgelearnError):
    """The model cannot be converted as asked."""


def _convertible(arr: np.ndarray, min_elements: int) -> bool:
    """float32, big enough to matter, and representable: finite values within fp16's range."""
    if arr.dtype != np.float32 or arr.size < min_elements:
        return False
    finite = arr[np.isfinite(arr)]
    return finite.size == 0 or float(np.abs(finite).max()) <= FP16_MAX


def convert_fp16(model: Model, keep_io_types: bool = True, min_elements: int = 16, strict: bool = True) -> Model:
    """A copy of ``model`` whose float32 weights (of at least ``min_elements`` values, within
    fp16's range) are stored as float16. Quantization scales stay float32 (they are tiny and their
    precision sets the int8 grid). ``strict``: a model with no such weight is an error (else the
    copy is returned unchanged, as after int8 quantization of every layer)."""
    if min_elements < 1:
        raise Fp16Error(f"min_elements must be >= 1, got {min_elements}")
    m = clone(model)
    g = m.graph
    qparams = {n.inputs[1] for n in g.nodes
               if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.inputs) > 1}
    overridable = set(g.input_names)
    casts: list[Node] = []
    converted = 0
    for name in list(g.initializers):
        arr = g.initializers[name]
        if name in qparams or name in overridable or not _convertible(arr, min_elements):
            continue
        half = f"{name}_fp16"
        g.initializers[half] = arr.astype(np.float16)
        del g.initializers[name]
        casts.append(Node("Cast", [half], [name], {"to": _FLOAT}, "", f"{name}_Cast"))
        converted += 1
    if not converted and keep_io_types and strict:
        raise Fp16Error("the model has no float32 weight to store as fp16")
    g.nodes = casts + g.nodes
    if not keep_io_types:
        _fp16_io(m)
    g.toposort()
    g.value_info.clear()  # the runtime infers types again (the fp16 tensors are new)
    m.metadata["edgelearn.fp16"] = json.dumps({"weights": converted, "keep_io_types": keep_io_types})
    return m


def _fp16_io(m: Model) -> None:
    """Make float32 graph inputs/outputs float16, casting at the boundary; names stay the same."""
    g = m.graph
    for v in g.feed_inputs():
        if isinstance(v.type, TensorType) and v.type.elem_type == _FLOAT:
            inner = f"{v.name}_fp32"
            for n in g.nodes:
                n.inputs = [inner if i == v.name else i for i in n.inputs]
            g.nodes.insert(0, Node("Cast", [v.name], [inner], {"to": _FLOAT}, "", f"{v.name}_Cast"))
            g.value_info[inner] = Value(inner, v.type)
            v.type = TensorType(_FLOAT16, v.type.shape)
    for i, v in enumerate(g.outputs):
        t = v.type if v.type is not None else g.type_of(v.name)
        if isinstance(t, TensorType) and t.elem_type == _FLOAT:
            inner = f"{v.name}_fp32"
            for n in g.nodes:
                n.outputs = [inner if o == v.name else o for o in n.outputs]
                n.inputs = [inner if x == v.name else x for x in n.inputs]
            g.value_info.pop(v.name, None)
            g.value_info[inner] = Value(inner, t)
            g.nodes.append(Node("Cast", [inner], [v.name], {"to": _FLOAT16}, "", f"{v.name}_Cast"))
            g.outputs[i] = Value(v.name, TensorType(_FLOAT16, t.shape))
