"""Quantization-aware training: fine-tune a model through the int8 rounding it will be run with.

    qat = prepare_qat(model, x_calib)                   # fake-quant weights and activations
    trainer = Trainer(qat, CrossEntropyLoss(), Adam(lr=1e-4))
    trainer.fit(x, y, epochs=2)
    int8 = convert_qat(trainer.forward)                 # the QDQ model post-training quantization makes

:func:`prepare_qat` makes exactly the choices :func:`compress.quantize.quantize_static` makes,
through its functions: the same graph preparation (BatchNorm folded into Conv, MatMul+Add as
Gemm), the same layers, the same calibration of the activations those layers read. Each such
activation gets a ``FakeQuantize`` node (every reader sees the rounded value, as in the QDQ
model) whose range stays **fixed** at the calibrated one: the converted model uses the very
scales the fine-tune adapted to. Each weight gets a ``FakeQuantizeWeight`` node whose symmetric
int8 scale is **recomputed from the current weight on every step**, as conversion will compute
it from the final weight. Each constant bias gets a ``FakeQuantizeBias`` node: conversion stores it
as int32 at scale x_scale * w_scale, a step that per-tensor weights with one wide filter (a
depthwise conv after BatchNorm folding) make as large as an activation step. The ops and their
straight-through gradients: :mod:`training.kernels.fake_quant`, :mod:`training.grads.quant`.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np

from compress.quantize import (CalibrationData, QuantConfig, QuantizationError, calibrate_ranges, batches_of, clone,
                               prepare, quantizable, quantize_with_ranges)
from inference.ir import Model, Node
from training.kernels.fake_quant import ACTIVATION_DTYPES
from training.protocols import TRAIN_DOMAIN

__all__ = ["prepare_qat", "convert_qat", "fake_quant_ranges"]

METADATA_KEY = "edgelearn.qat"
FAKE_QUANT_OPS = ("FakeQuantize", "FakeQuantizeWeight", "FakeQuantizeBias")


def prepare_qat(model: Model, calibration_data: CalibrationData, config: QuantConfig | None = None,
                **options: Any) -> Model:
    """A copy of ``model`` with fake quantization on the weights, biases and inputs of its Conv/MatMul/Gemm
    layers, ready for :class:`training.Trainer`. ``config``/``options``: those of
    :func:`compress.quantize.quantize_static` (``keep_fp32`` aside: name the layers in ``exclude``)."""
    cfg = dataclasses.replace(config or QuantConfig(), **options)
    cfg.validate()
    if cfg.keep_fp32:
        raise QuantizationError("prepare_qat does not rank layers by sensitivity: run "
                                "compress.quantize.sensitivity_report and pass the layers to keep in exclude=")
    m = prepare(model)
    batches = batches_of(m, calibration_data, cfg.batch_size, cfg.max_batches)
    targets = quantizable(m, cfg.op_types, cfg.exclude)
    if not targets:
        raise QuantizationError(f"model {model.graph.name!r} has no {'/'.join(cfg.op_types)} node with a "
                                "constant float32 weight to quantize")
    # float32 ranges: what an exported node attribute holds, so a saved QAT model converts the same
    calibrated = calibrate_ranges(m, targets, batches, cfg)
    ranges = {x: (float(np.float32(lo)), float(np.float32(hi))) for x, (lo, hi) in calibrated.items()}
    quantize_with_ranges(m, ranges, cfg)  # fail now (opset, layers) rather than after the fine-tune
    g = m.graph
    taken = {o for n in g.nodes for o in n.outputs} | set(g.initializers) | set(g.input_names)
    fresh = _namer(taken)
    new: list[Node] = []
    layer_input = [t.node.inputs[0] for t in targets]  # read before the rewiring below renames them
    for x, (lo, hi) in ranges.items():
        y = fresh(f"{x}_fakequant")
        for reader in g.nodes:  # every reader sees the rounded value, as every reader of a DQ does
            reader.inputs = [y if i == x else i for i in reader.inputs]
        new.append(Node("FakeQuantize", [x], [y], {"lo": lo, "hi": hi, "dtype": cfg.activations}, TRAIN_DOMAIN,
                        fresh(f"{x}_FakeQuantize")))
    for t, x in zip(targets, layer_input):
        w, weight_attrs = t.node.inputs[1], {"axis": t.weight_axis, "per_channel": int(cfg.per_channel)}
        y = fresh(f"{w}_fakequant")
        new.append(Node("FakeQuantizeWeight", [w], [y], dict(weight_attrs), TRAIN_DOMAIN,
                        fresh(f"{w}_FakeQuantizeWeight")))
        t.node.inputs[1] = y
        b = t.node.input_at(2)
        if b in g.initializers:  # the biases post-training quantization stores as int32
            lo, hi = ranges[x]
            y = fresh(f"{b}_fakequant")
            attrs = {"lo": lo, "hi": hi, "dtype": cfg.activations, **weight_attrs}
            new.append(Node("FakeQuantizeBias", [b, w], [y], attrs, TRAIN_DOMAIN, fresh(f"{b}_FakeQuantizeBias")))
            t.node.inputs[2] = y
    g.nodes.extend(new)
    g.toposort()
    g.value_info.clear()  # rewired tensors: the runtime infers the types again
    m.opset_imports[TRAIN_DOMAIN] = 1
    m.metadata[METADATA_KEY] = json.dumps({"calibration": cfg.calibration, "per_channel": cfg.per_channel,
                                           "activations": cfg.activations}, sort_keys=True)
    return m


def fake_quant_ranges(model: Model) -> dict[str, tuple[float, float]]:
    """{activation: (lo, hi)} of the model's FakeQuantize nodes (the ranges conversion uses)."""
    return {n.inputs[0]: (float(n.attrs["lo"]), float(n.attrs["hi"])) for n in model.graph.nodes
            if n.domain == TRAIN_DOMAIN and n.op_type == "FakeQuantize"}


def convert_qat(model: Model) -> Model:
    """The int8 QDQ model of a QAT-trained ``model`` (e.g. ``trainer.forward``): the fake-quant nodes
    come out and :func:`compress.quantize.quantize_with_ranges` writes the same QDQ format as
    post-training quantization, with the ranges the fine-tune used and the final weights."""
    m = clone(model)
    g = m.graph
    fq = [n for n in g.nodes if n.domain == TRAIN_DOMAIN and n.op_type in FAKE_QUANT_OPS]
    if not fq:
        raise QuantizationError(f"model {g.name!r} has no FakeQuantize node: prepare it with training.qat.prepare_qat")
    dtypes = {n.attrs.get("dtype", "uint8") for n in fq if n.op_type == "FakeQuantize"}
    per_channel = {bool(n.attrs.get("per_channel", 1)) for n in fq if n.op_type == "FakeQuantizeWeight"}
    if len(dtypes) > 1 or len(per_channel) > 1 or not dtypes <= set(ACTIVATION_DTYPES):
        raise QuantizationError(f"model {g.name!r} mixes fake-quant settings (activations {sorted(dtypes)}, "
                                f"per-channel {sorted(per_channel)}); one QDQ conversion needs one setting")
    ranges = fake_quant_ranges(m)
    back = {n.outputs[0]: n.inputs[0] for n in fq}
    g.nodes = [n for n in g.nodes if n not in fq]
    for n in g.nodes:
        n.inputs = [back.get(i, i) for i in n.inputs]
    bad = [v.name for v in g.outputs if v.name in back]
    if bad:
        raise QuantizationError(f"graph outputs {bad} are fake-quant outputs; convert cannot keep them")
    weights = set(back[n.outputs[0]] for n in fq if n.op_type == "FakeQuantizeWeight")
    exclude = tuple(t.node.label() for t in quantizable(m) if t.node.inputs[1] not in weights)
    m.opset_imports.pop(TRAIN_DOMAIN, None)
    m.metadata.pop(METADATA_KEY, None)
    cfg = QuantConfig(per_channel=per_channel.pop() if per_channel else True,
                      activations=dtypes.pop() if dtypes else "uint8", exclude=exclude)
    return quantize_with_ranges(m, ranges, cfg)


def _namer(taken: set[str]):
    def fresh(base: str) -> str:
        name, i = base, 0
        while name in taken:
            i += 1
            name = f"{base}_{i}"
        taken.add(name)
        return name

    return fresh
