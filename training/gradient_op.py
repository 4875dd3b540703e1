"""ONNX's ``ai.onnx.preview.training::Gradient`` op, expanded into backward IR by our autograd.

Registered as a graph pass of the inference pipeline, so a model holding Gradient nodes runs
through the Predictor once ``training`` is imported: each Gradient node is replaced by the
backward nodes of its ``y`` with respect to its ``xs``.
"""
from __future__ import annotations

from inference.ir import Model, Node
from inference.passes import Pass, register_pass
from training.autograd import compute_gradients

GRADIENT_DOMAIN = "ai.onnx.preview.training"


def expand_gradient_ops(model: Model) -> bool:
    g = model.graph
    targets = [n for n in g.nodes if n.op_type == "Gradient" and n.domain == GRADIENT_DOMAIN]
    for node in targets:
        g.nodes.remove(node)
        xs, y = list(node.attrs["xs"]), node.attrs["y"]
        grads = compute_gradients(model, y, xs)
        for x, out in zip(xs, node.outputs):
            if out:
                g.nodes.append(Node("Identity", [grads[x]], [out], name=f"{node.label()}/{x}"))
    if targets:
        g.toposort()
    return bool(targets)


register_pass(Pass("expand_gradient_ops", expand_gradient_ops))
