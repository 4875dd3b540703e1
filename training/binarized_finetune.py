"""Fine-tuning with binary weights: latent float32 weights, straight-through estimator, then packing.

Post-hoc binarization (``compress.binarize``) loses a lot of accuracy on small nets; training
a few epochs with the binarization *in* the forward pass recovers most of it (BinaryConnect /
BWN). The chosen layers read their weight through ``edgelearn.train::BinarizeWeightSTE(w; axis)``,
whose forward is exactly what :func:`compress.binarize.binarize` will store (its functions are
called: packing then decoding, so training and conversion cannot drift apart) and whose gradient
is the straight-through estimator ``dw = dy``: sign() has a zero derivative almost everywhere, so
the latent float weight gets the binary weight's gradient and may cross zero to flip the sign.

It lives in ``training`` (it drives ``training.Trainer`` and registers a gradient rule) and
uses ``compress.binarize``'s storage scheme, the direction imports go (training -> compress).
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Sequence

import numpy as np

from compress.binarize import (BinarizationError, binarize, binarize_weight, fresh_name, route_weights,
                               select_layers, layer_name)
from compress.quantize import prepare
from inference.errors import KernelError
from inference.ir import Model, Node
from inference.kernels.binarized import decode
from inference.ops.registry import register
from inference.schema import FormalParam, OpSchema, register_schema
from training.grads.registry import GradBuilder, grad_rule
from training.protocols import TRAIN_DOMAIN

STE_OP = "BinarizeWeightSTE"
STE_METADATA_KEY = "edgelearn.binarize_ste"


def _same_as_first(node: Node, types: list) -> list:
    return [types[0] if types else None]


register_schema(OpSchema(STE_OP, TRAIN_DOMAIN, 1, (FormalParam("w"),), (FormalParam("y"),), {"axis": 0},
                         _same_as_first))


@register(STE_OP, since=1, domain=TRAIN_DOMAIN)
def binarize_weight_ste(w: np.ndarray, *, axis: int = 0) -> np.ndarray:
    """``sign(w) * mean|w|`` per channel on ``axis``: the weight the packed model will hold."""
    try:
        bits, alpha = binarize_weight(w, axis)
    except BinarizationError as e:
        raise KernelError(str(e)) from None
    return decode(bits, alpha, w.shape, axis % w.ndim).astype(w.dtype, copy=False)


@grad_rule(STE_OP, domain=TRAIN_DOMAIN)
def _binarize_weight_ste_grad(b: GradBuilder, node: Node, dys: Sequence[str | None]) -> list[str | None]:
    """Straight through: the latent weight receives the binary weight's gradient unchanged."""
    return [dys[0]]


def with_ste(model: Model, layers: Sequence[str] | None = None, skip_first_last: bool = True) -> Model:
    """A trainable copy of ``model`` whose chosen layers (as :func:`compress.binarize.select_layers`)
    compute with binarized weights and keep latent float32 ones."""
    m = prepare(model)
    targets = select_layers(m, layers, skip_first_last)
    if not targets:
        raise BinarizationError("no layer to binarize for fine-tuning")

    def emit(w_name: str, w: np.ndarray, axis: int) -> Node:
        return Node(STE_OP, [w_name], [fresh_name(m, f"{w_name}_ste")], {"axis": int(axis)}, TRAIN_DOMAIN)

    names = [layer_name(t.node) for t in targets]
    route_weights(m, targets, emit)
    m.opset_imports.setdefault(TRAIN_DOMAIN, 1)
    m.metadata[STE_METADATA_KEY] = json.dumps(names)
    return m


def pack_trained(model: Model) -> Model:
    """The packed binary model from a :func:`with_ste` model after training: the STE nodes are
    dropped (each layer reads its latent weight again) and those layers are binarized."""
    if STE_METADATA_KEY not in model.metadata:
        raise BinarizationError(f"the model has no {STE_METADATA_KEY!r} metadata: build it with with_ste()")
    names = json.loads(model.metadata[STE_METADATA_KEY])
    m = prepare(model)
    g = m.graph
    for node in [n for n in g.nodes if n.domain == TRAIN_DOMAIN and n.op_type == STE_OP]:
        for reader in g.nodes:
            reader.inputs = [node.inputs[0] if i == node.outputs[0] else i for i in reader.inputs]
        g.nodes.remove(node)
    m.opset_imports.pop(TRAIN_DOMAIN, None)
    m.metadata.pop(STE_METADATA_KEY)
    return binarize(m, layers=names)


def finetune_binarized(model: Model, x: np.ndarray, y: np.ndarray, epochs: int = 2, *, lr: float = 1e-3,
                       batch_size: int = 64, layers: Sequence[str] | None = None, skip_first_last: bool = True,
                       validation: tuple[np.ndarray, np.ndarray] | None = None,
                       **trainer_options: Any) -> tuple[Model, dict[str, list[float]]]:
    """Fine-tune ``model`` (a classifier; cross-entropy, Adam) with the chosen layers binarized,
    and return the packed binary model with the training history."""
    import training as T

    ste = with_ste(model, layers, skip_first_last)
    trainer = T.Trainer(ste, loss=T.CrossEntropyLoss(), optimizer=T.Adam(lr=lr), **trainer_options)
    history = trainer.fit(x, y, epochs=epochs, batch_size=batch_size, validation=validation)
    with tempfile.TemporaryDirectory() as tmp:  # the trained latent weights live in the trainer until export
        trained = trainer.export(os.path.join(tmp, "binary_ste.onnx"))
    trained.metadata[STE_METADATA_KEY] = ste.metadata[STE_METADATA_KEY]
    return pack_trained(trained), history


__all__ = ["STE_OP", "with_ste", "pack_trained", "finetune_binarized"]
