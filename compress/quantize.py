"""Post-training int8 quantization: static (calibrated) and dynamic, written as QDQ in our IR.

Why QDQ (QuantizeLinear -> DequantizeLinear pairs around float ops) rather than QLinear ops: the
graph keeps its float ops, so every runtime reads it (onnxruntime runs the exported file as is),
the float reference kernels give its exact meaning, and our runtime recovers the int8 ops by
pattern (:func:`inference.passes.qdq_fusion.fuse_qdq`) to run the VNNI kernels.

What is quantized: the constant weights of Conv, MatMul and Gemm (symmetric int8, per output
channel or per tensor), their biases (int32 at scale x_scale * w_scale, as onnxruntime's QDQ
format stores them) and the activations they read. Static mode gives each such activation one
fixed scale from calibration (asymmetric uint8 or symmetric int8) and makes *every* reader go
through the same DequantizeLinear, so a Conv -> Relu -> Conv chain is int8 from end to end once
fused. Dynamic mode (for MatMul/Gemm-heavy models: transformers, MLPs) computes the activation's
scale at run time with DynamicQuantizeLinear and needs no calibration data.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence, Union

import numpy as np

from compress.calibrate import make_calibrator, observe
from inference.errors import EdgelearnError
from inference.ir import Graph, Model, Node, TensorType
from inference.ops.quantize import saturate_cast
from inference.passes._rewrite import constant_value, drop_unused_initializers
from inference.session import Session

CalibrationData = Union[np.ndarray, Mapping[str, np.ndarray], Iterable[Mapping[str, np.ndarray]]]
QUANTIZABLE = ("Conv", "MatMul", "Gemm")
ACTIVATION_TYPES = {"uint8": np.uint8, "int8": np.int8}


class QuantizationError(EdgelearnError):
    """The model or the options cannot be quantized as asked (and the message says why)."""


@dataclass
class QuantConfig:
    """Options of :func:`quantize_static` (``calibration``: ``minmax``, ``percentile``, ``entropy``;
    ``activations``: ``uint8`` asymmetric or ``int8`` symmetric; ``exclude``: node names or output
    names kept in float32; ``keep_fp32``: also keep that many of the most sensitive layers)."""

    calibration: str = "minmax"
    percentile: float = 99.99
    per_channel: bool = True
    activations: str = "uint8"
    op_types: tuple[str, ...] = QUANTIZABLE
    exclude: tuple[str, ...] = ()
    keep_fp32: int = 0
    batch_size: int = 32
    max_batches: int | None = None

    def validate(self) -> None:
        if self.activations not in ACTIVATION_TYPES:
            raise QuantizationError(f"activations must be one of {sorted(ACTIVATION_TYPES)}, got {self.activations!r}")
        unknown = set(self.op_types) - set(QUANTIZABLE)
        if unknown:
            raise QuantizationError(f"cannot quantize op types {sorted(unknown)}; supported: {QUANTIZABLE}")
        if self.keep_fp32 < 0 or self.batch_size < 1:
            raise QuantizationError("keep_fp32 must be >= 0 and batch_size >= 1")


@dataclass
class LayerSensitivity:
    """Output error when only this layer is quantized: relative L2 error of the model's outputs."""

    node: str
    op_type: str
    error: float


@dataclass
class QuantTarget:
    """A node whose weight is quantized, and the weight's output-channel axis (per-channel scales)."""

    node: Node
    weight_axis: int


# -- model preparation and selection -----------------------------------------------------------
def clone(model: Model) -> Model:
    """A copy whose graph (nodes, lists, dicts) can be rewritten; arrays are shared, never mutated."""
    g = model.graph
    nodes = [dataclasses.replace(n, inputs=list(n.inputs), outputs=list(n.outputs), attrs=dict(n.attrs))
             for n in g.nodes]
    graph = dataclasses.replace(g, nodes=nodes, inputs=list(g.inputs),
                                outputs=[dataclasses.replace(v) for v in g.outputs],
                                initializers=dict(g.initializers), value_info=dict(g.value_info))
    return dataclasses.replace(model, graph=graph, opset_imports=dict(model.opset_imports),
                               metadata=dict(model.metadata))


def prepare(model: Model) -> Model:
    """A clone with the float graph simplified first: constants folded, MatMul+Add as Gemm,
    BatchNorm folded into the Conv or Gemm before it (one weight to quantize instead of a layer and
    a float BN), Pad into Conv."""
    from inference.passes.constant_folding import fold_constants
    from inference.passes.conv_bn import fold_conv_batchnorm
    from inference.passes.eliminate import eliminate_dead_nodes, eliminate_identity
    from inference.passes.matmul_add import fuse_matmul_add
    from inference.passes.pad_conv import fold_pad_into_conv
    from inference.shape_inference import infer_shapes

    m = clone(model)
    infer_shapes(m)
    for p in (fold_constants, eliminate_identity, eliminate_dead_nodes, fuse_matmul_add, fold_conv_batchnorm,
              fold_pad_into_conv, eliminate_dead_nodes):
        p(m)
    return m


def _weight_axis(g: Graph, node: Node) -> int | None:
    """Output-channel axis of the node's constant float weight, None if the node does not qualify."""
    if node.domain != "" or len(node.inputs) < 2:
        return None
    w = constant_value(g, node.inputs[1])
    xt = g.type_of(node.inputs[0])
    if w is None or w.dtype != np.float32 or constant_value(g, node.inputs[0]) is not None:
        return None
    if isinstance(xt, TensorType) and xt.elem_type != 1:
        return None
    if node.op_type == "Conv":
        return 0 if w.ndim >= 3 else None
    if w.ndim != 2:
        return None
    if node.op_type == "MatMul":
        return 1
    a = node.attrs
    if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0:
        return None
    if len(node.inputs) > 2 and node.inputs[2]:
        c = constant_value(g, node.inputs[2])
        n_out = w.shape[0] if a.get("transB", 0) else w.shape[1]
        if c is None or a.get("beta", 1.0) != 1.0 or c.size != n_out:
            return None
    return 0 if a.get("transB", 0) else 1


def quantizable(model: Model, op_types: Sequence[str] = QUANTIZABLE, exclude: Sequence[str] = ()) -> list[QuantTarget]:
    """The nodes static/dynamic quantization would rewrite, in graph order."""
    g, out = model.graph, []
    skip = set(exclude)
    for node in g.nodes:
        if node.op_type not in op_types or node.label() in skip or node.outputs[0] in skip:
            continue
        axis = _weight_axis(g, node)
        if axis is not None:
            out.append(QuantTarget(node, axis))
    return out


# -- parameters ----------------------------------------------------------------------------------
def weight_params(w: np.ndarray, axis: int, per_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 weights in [-127, 127] and their float32 scale (per ``axis`` or scalar)."""
    if per_channel:
        other = tuple(i for i in range(w.ndim) if i != axis)
        amax = np.abs(w).max(axis=other)
    else:
        amax = np.asarray(np.abs(w).max())
    scale = (amax / 127.0).astype(np.float32)
    scale = np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)  # an all-zero channel
    shape = [1] * w.ndim
    if per_channel:
        shape[axis] = -1
    q = saturate_cast(w / scale.reshape(shape), np.int8)
    return np.clip(q, -127, 127).astype(np.int8), scale


def activation_params(lo: float, hi: float, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Scale and zero point of a range: asymmetric uint8 (range stretched to include 0) or
    symmetric int8 (zero point 0)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if dtype == "int8":
        scale = np.float32(max(-lo, hi) / 127.0)
        return np.asarray(scale if scale > 0 else 1.0, np.float32), np.asarray(0, np.int8)
    scale = np.float32((hi - lo) / 255.0)
    if scale <= 0:
        return np.asarray(1.0, np.float32), np.asarray(0, np.uint8)
    zp = saturate_cast(np.asarray(-lo / scale), np.uint8)
    return np.asarray(scale, np.float32), zp


def bias_params(b: np.ndarray, x_scale: np.ndarray, w_scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A bias as int32 (flattened) and its float32 scale x_scale * w_scale, per output channel."""
    b = b.reshape(-1)
    scale = (np.float32(x_scale) * np.broadcast_to(w_scale, b.shape)).astype(np.float32)
    scale = np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)
    return saturate_cast(b.astype(np.float64) / scale, np.int32), scale


# -- calibration data -----------------------------------------------------------------------------
def batches_of(model: Model, data: CalibrationData, batch_size: int = 32,
               max_batches: int | None = None) -> list[dict[str, np.ndarray]]:
    """Feed dicts from an array (single-input models), a dict of arrays, or an iterable of dicts.

    Arrays are cut along axis 0 into batches (of the model's fixed batch size if it has one).
    """
    feeds = model.graph.feed_inputs()
    if isinstance(data, np.ndarray):
        if len(feeds) != 1:
            raise QuantizationError(f"the model has {len(feeds)} inputs: give a dict name -> array")
        data = {feeds[0].name: data}
    if isinstance(data, Mapping):
        unknown = set(data) - {v.name for v in feeds}
        if unknown:
            raise QuantizationError(f"calibration data names {sorted(unknown)} are not model inputs")
        n = len(next(iter(data.values())))
        t = feeds[0].type
        fixed = isinstance(t, TensorType) and bool(t.shape) and isinstance(t.shape[0], int)
        if fixed:
            batch_size = t.shape[0]
        out = []
        for start in range(0, n - batch_size + 1 if fixed else n, batch_size):
            out.append({k: np.asarray(v[start:start + batch_size]).astype(_dtype_of(model, k))
                        for k, v in data.items()})
    else:
        out = [dict(d) for d in data]
    if max_batches is not None:
        out = out[:max_batches]
    if not out:
        raise QuantizationError("the calibration data holds no samples")
    return out


def _dtype_of(model: Model, name: str) -> np.dtype:
    t = model.graph.type_of(name)
    return t.dtype if isinstance(t, TensorType) else np.dtype(np.float32)


# -- the rewrite -------------------------------------------------------------------------------
class _Rewriter:
    """Inserts the Q/DQ nodes and quantized initializers into a prepared clone."""

    def __init__(self, model: Model):
        self.m, self.g = model, model.graph
        self.new: list[Node] = []
        self.dq_of: dict[str, str] = {}
        self.x_scale: dict[str, str] = {}

    def _init(self, base: str, value: np.ndarray) -> str:
        name, i = base, 0
        while name in self.g.initializers:
            i += 1
            name = f"{base}_{i}"
        self.g.initializers[name] = value
        return name

    def _node(self, op: str, inputs: list[str], outputs: list[str], **attrs: Any) -> None:
        self.new.append(Node(op, inputs, outputs, attrs, ""))  # unnamed: names cost file bytes

    def activation_static(self, x: str, lo: float, hi: float, dtype: str) -> str:
        if x not in self.dq_of:
            scale, zp = activation_params(lo, hi, dtype)
            s, z = self._init(f"{x}_scale", scale), self._init(f"{x}_zero_point", zp)
            self._node("QuantizeLinear", [x, s, z], [f"{x}_quantized"])
            self._node("DequantizeLinear", [f"{x}_quantized", s, z], [f"{x}_dequantized"])
            self.dq_of[x], self.x_scale[x] = f"{x}_dequantized", s
            for n in self.g.nodes:  # every reader sees the same quantized value (so chains fuse)
                n.inputs = [self.dq_of[x] if i == x else i for i in n.inputs]
        return self.dq_of[x]

    def share_through_maxpool(self) -> None:
        """A MaxPool whose output is quantized gets the same Q/DQ on its input: max commutes with
        a monotonic quantizer, so the pool can run on the 8-bit tensor (and the producer can
        requantize its output in place of writing float32)."""
        for n in list(self.g.nodes):
            if n.op_type != "MaxPool" or n.domain != "" or len([o for o in n.outputs if o]) != 1:
                continue
            x, t = n.outputs[0], n.inputs[0]
            if x not in self.x_scale or t in self.dq_of or t in self.g.input_names or t in self.g.initializers:
                continue
            s = self.x_scale[x]
            z = next(i.inputs[2] for i in self.new if i.op_type == "QuantizeLinear" and i.inputs[0] == x)
            self._node("QuantizeLinear", [t, s, z], [f"{t}_quantized"])
            self._node("DequantizeLinear", [f"{t}_quantized", s, z], [f"{t}_dequantized"])
            self.dq_of[t], self.x_scale[t] = f"{t}_dequantized", s
            for reader in self.g.nodes:
                reader.inputs = [self.dq_of[t] if i == t else i for i in reader.inputs]

    def activation_dynamic(self, node: Node) -> None:
        x = node.inputs[0]
        if x not in self.dq_of:
            q, s, z = f"{x}_quantized", f"{x}_scale", f"{x}_zero_point"
            self._node("DynamicQuantizeLinear", [x], [q, s, z])
            self._node("DequantizeLinear", [q, s, z], [f"{x}_dequantized"])
            self.dq_of[x] = f"{x}_dequantized"
        node.inputs[0] = self.dq_of[x]

    def weight(self, node: Node, axis: int, per_channel: bool) -> np.ndarray:
        w = self.g.initializers[node.inputs[1]]
        q, scale = weight_params(w, axis, per_channel)
        base = node.inputs[1]
        qn, sn = self._init(f"{base}_quantized", q), self._init(f"{base}_scale", scale)
        out = f"{base}_dequantized_{node.outputs[0]}"  # symmetric: the zero point is the default 0
        self._node("DequantizeLinear", [qn, sn], [out], **({"axis": axis} if per_channel else {}))
        node.inputs[1] = out
        return scale

    def bias(self, node: Node, x_scale: np.ndarray, w_scale: np.ndarray) -> None:
        """Bias as int32 at scale x_scale * w_scale (zero point 0): what int8 kernels add exactly."""
        q, scale = bias_params(self.g.initializers[node.inputs[2]], x_scale, w_scale)
        qn, sn = self._init(f"{node.inputs[2]}_quantized", q), self._init(f"{node.inputs[2]}_scale", scale)
        out = f"{node.inputs[2]}_dequantized_{node.outputs[0]}"
        self._node("DequantizeLinear", [qn, sn], [out], axis=0)
        node.inputs[2] = out

    def finish(self) -> None:
        self.g.nodes.extend(self.new)
        self.g.toposort()
        drop_unused_initializers(self.g)
        self.g.value_info.clear()  # stale for the rewired tensors; the runtime infers types again


def _check_opset(model: Model, per_channel: bool) -> None:
    opset = model.opset_imports.get("", 1)
    need = 13 if per_channel else 11
    if opset < need:
        raise QuantizationError(
            f"the model is opset {opset}: {'per-channel weights need' if per_channel else 'QDQ needs'} opset "
            f">= {need} (per-axis DequantizeLinear)" + ("; try per_channel=False" if per_channel else ""))


def _rewrite_static(m: Model, targets: list[QuantTarget], ranges: Mapping[str, tuple[float, float]],
                    cfg: QuantConfig) -> None:
    r = _Rewriter(m)
    for x in [t.node.inputs[0] for t in targets]:  # read first: rewriting renames shared inputs
        r.activation_static(x, *ranges[x], cfg.activations)
    r.share_through_maxpool()
    for t in targets:
        w_scale = r.weight(t.node, t.weight_axis, cfg.per_channel)
        if len(t.node.inputs) > 2 and t.node.inputs[2]:
            x = next(k for k, v in r.dq_of.items() if v == t.node.inputs[0])
            r.bias(t.node, m.graph.initializers[r.x_scale[x]], w_scale)
    r.finish()


def calibrate_ranges(prepared: Model, targets: list[QuantTarget], batches: list[dict], cfg: QuantConfig) -> dict:
    """The activation range of each target's input over ``batches``, by ``cfg``'s calibrator
    (shared with QAT, whose fake-quant ranges start from the same calibration)."""
    names = list(dict.fromkeys(t.node.inputs[0] for t in targets))
    options = {"percentile": cfg.percentile} if cfg.calibration == "percentile" else {}
    cal = make_calibrator(cfg.calibration, **options)
    observe(prepared, names, batches, cal)
    return {n: cal.range(n) for n in names}


def _stamp(m: Model, info: dict) -> None:
    m.metadata["edgelearn.quantization"] = json.dumps(info, sort_keys=True)
    m.producer_name = "edgelearn"


def quantize_static(model: Model, calibration_data: CalibrationData, config: QuantConfig | None = None,
                    **options: Any) -> Model:
    """int8 QDQ copy of ``model`` calibrated on ``calibration_data`` (``options`` override ``config``)."""
    cfg = dataclasses.replace(config or QuantConfig(), **options)
    cfg.validate()
    _check_opset(model, cfg.per_channel)
    prepared = prepare(model)
    batches = batches_of(prepared, calibration_data, cfg.batch_size, cfg.max_batches)
    exclude = list(cfg.exclude)
    targets = quantizable(prepared, cfg.op_types, exclude)
    if not targets:
        raise QuantizationError(f"no {'/'.join(cfg.op_types)} node with a constant float32 weight to quantize")
    ranges = calibrate_ranges(prepared, targets, batches, cfg)
    if cfg.keep_fp32:
        report = _sensitivity(prepared, targets, ranges, batches[:4], cfg)
        exclude += [s.node for s in report[:cfg.keep_fp32]]
        targets = quantizable(prepared, cfg.op_types, exclude)
    _rewrite_static(prepared, targets, ranges, cfg)
    _stamp(prepared, {"mode": "static", "calibration": cfg.calibration, "per_channel": cfg.per_channel,
                      "activations": cfg.activations, "fp32_layers": exclude})
    return prepared


def quantize_with_ranges(model: Model, ranges: Mapping[str, tuple[float, float]], config: QuantConfig | None = None,
                         **options: Any) -> Model:
    """int8 QDQ copy of ``model`` with the activation ranges given instead of calibrated: the
    ranges a quantization-aware fine-tune trained with (``training.qat``) or of an earlier
    calibration. ``ranges`` maps each quantized layer's input to its (lo, hi)."""
    cfg = dataclasses.replace(config or QuantConfig(), **options)
    cfg.validate()
    _check_opset(model, cfg.per_channel)
    prepared = prepare(model)
    targets = quantizable(prepared, cfg.op_types, cfg.exclude)
    if not targets:
        raise QuantizationError(f"no {'/'.join(cfg.op_types)} node with a constant float32 weight to quantize")
    missing = sorted({t.node.inputs[0] for t in targets} - set(ranges))
    if missing:
        raise QuantizationError(f"no activation range given for {missing} (inputs of quantized layers)")
    _rewrite_static(prepared, targets, ranges, cfg)
    _stamp(prepared, {"mode": "static", "calibration": "given ranges", "per_channel": cfg.per_channel,
                      "activations": cfg.activations, "fp32_layers": list(cfg.exclude)})
    return prepared


def quantize_dynamic(model: Model, per_channel: bool = True, op_types: Sequence[str] = ("MatMul", "Gemm"),
                     exclude: Sequence[str] = ()) -> Model:
    """int8 weights + activations quantized at run time (DynamicQuantizeLinear, uint8): no calibration."""
    _check_opset(model, per_channel)
    prepared = prepare(model)
    targets = quantizable(prepared, op_types, exclude)
    if not targets:
        raise QuantizationError(f"no {'/'.join(op_types)} node with a constant float32 weight to quantize")
    r = _Rewriter(prepared)
    for t in targets:
        r.activation_dynamic(t.node)
        r.weight(t.node, t.weight_axis, per_channel)
    r.finish()
    _stamp(prepared, {"mode": "dynamic", "per_channel": per_channel, "fp32_layers": list(exclude)})
    return prepared


# -- sensitivity ----------------------------------------------------------------------------------
def _outputs(model: Model, batches: list[dict]) -> np.ndarray:
    s = Session(model)
    return np.concatenate([np.concatenate([np.asarray(o, np.float64).ravel() for o in s.run(b)]) for b in batches])


def _sensitivity(prepared: Model, targets: list[QuantTarget], ranges: dict, batches: list[dict],
                 cfg: QuantConfig) -> list[LayerSensitivity]:
    ref = _outputs(prepared, batches)
    norm = float(np.linalg.norm(ref)) or 1.0
    report = []
    for t in targets:
        m = clone(prepared)  # same node order: the clone of t.node sits at the same index
        idx = next(i for i, n in enumerate(prepared.graph.nodes) if n is t.node)
        _rewrite_static(m, [QuantTarget(m.graph.nodes[idx], t.weight_axis)], ranges, cfg)
        err = float(np.linalg.norm(_outputs(m, batches) - ref)) / norm
        report.append(LayerSensitivity(t.node.label(), t.node.op_type, err))
    return sorted(report, key=lambda s: -s.error)


def sensitivity_report(model: Model, calibration_data: CalibrationData, config: QuantConfig | None = None,
                       max_batches: int = 4, **options: Any) -> list[LayerSensitivity]:
    """Per-layer sensitivity, most sensitive first: each layer quantized alone (the others float),
    the relative L2 error of the model's outputs on up to ``max_batches`` calibration batches."""
    cfg = dataclasses.replace(config or QuantConfig(), **options)
    cfg.validate()
    _check_opset(model, cfg.per_channel)
    prepared = prepare(model)
    batches = batches_of(prepared, calibration_data, cfg.batch_size, cfg.max_batches)
    targets = quantizable(prepared, cfg.op_types, cfg.exclude)
    ranges = calibrate_ranges(prepared, targets, batches, cfg)
    return _sensitivity(prepared, targets, ranges, batches[:max_batches], cfg)


def model_bytes(model: Model, value_info: bool = False) -> int:
    """Size of the model as an ONNX file (protobuf bytes); by default without the intermediate
    ``value_info`` (shape annotations a runtime recomputes), so models compare by content."""
    from inference.onnx_export import model_to_proto

    proto = model_to_proto(model)
    if not value_info:
        del proto.graph.value_info[:]
    return proto.ByteSize()


__all__ = ["QuantConfig", "QuantizationError", "LayerSensitivity", "quantize_static", "quantize_dynamic",
           "quantize_with_ranges",
           "sensitivity_report", "weight_params", "activation_params", "bias_params", "batches_of", "prepare", "clone",
           "quantizable", "model_bytes", "QuantTarget", "calibrate_ranges"]
