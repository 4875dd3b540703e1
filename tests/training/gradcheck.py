"""Finite-difference checks of gradient rules, for every rule module's tests.

``check_rule(fn, feeds, wrt)`` builds a tiny graph (``fn(builder, *input names)`` emits the op
under test), reduces its float outputs to the scalar ``sum(y * w)`` with fixed random ``w`` (so
every output element gets a distinct weight), and compares ``training.autograd.gradients`` with
central differences in float64.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import onnx

from inference.builder import GraphBuilder
from inference.ir import Model, Node, TensorType, Value
from inference.session import Session
from training.autograd import gradients

BuildFn = Callable[..., Any]  # (GraphBuilder, *input names) -> output name or list of names
_FLOATS = (np.float16, np.float32, np.float64)


def build_model(model_or_fn: Model | BuildFn, feeds: Mapping[str, np.ndarray], opset: int = 17) -> Model:
    """The model under test: given as is, or built by ``fn`` over inputs typed like ``feeds``."""
    if isinstance(model_or_fn, Model):
        return copy.deepcopy(model_or_fn)
    b = GraphBuilder("gradcheck", opset=opset)
    names = [b.input(k, np.asarray(v).dtype, np.asarray(v).shape) for k, v in feeds.items()]
    outs = model_or_fn(b, *names)
    for o in [outs] if isinstance(outs, str) else outs:
        b.output(o)
    model = b.build()
    for node in model.graph.nodes:  # ops of our own domains (training ops, test ops) at version 1
        model.opset_imports.setdefault(node.domain, 1)
    return model


def with_weighted_loss(model: Model, feeds: Mapping[str, np.ndarray], outputs: Sequence[int] | None = None,
                       seed: int = 0, loss: str = "loss") -> Model:
    """Append loss = sum_i ReduceSum(y_i * w_i) (as float64) over the chosen float outputs."""
    g = model.graph
    values = Session(model).run(feeds)
    picked = [i for i, v in enumerate(values) if isinstance(v, np.ndarray) and v.dtype in _FLOATS]
    if outputs is not None:
        picked = [i for i in outputs if i in picked]
    assert picked, "the graph under test has no float output to differentiate"
    rng = np.random.default_rng(seed)
    parts = []
    for i in picked:
        y, v = g.outputs[i].name, values[i]
        w = f"gc_w{i}"
        g.initializers[w] = rng.normal(size=v.shape).astype(v.dtype)
        g.nodes.append(Node("Mul", [y, w], [f"gc_yw{i}"], name=f"gc_mul{i}"))
        g.nodes.append(Node("ReduceSum", [f"gc_yw{i}"], [f"gc_s{i}"], {"keepdims": 0}, name=f"gc_sum{i}"))
        g.nodes.append(Node("Cast", [f"gc_s{i}"], [f"gc_d{i}"], {"to": onnx.TensorProto.DOUBLE}, name=f"gc_cast{i}"))
        parts.append(f"gc_d{i}")
    g.nodes.append(Node("Sum", parts, [loss], name="gc_loss"))
    g.outputs = [Value(loss, TensorType(onnx.TensorProto.DOUBLE, ()))]
    g.value_info.clear()
    return model


def numeric_gradients(model: Model, feeds: Mapping[str, np.ndarray], wrt: Sequence[str], of: str = "loss",
                      eps: float = 1e-6) -> dict[str, np.ndarray]:
    """Central differences of the scalar ``of`` with respect to feeds or initializers in ``wrt``."""
    session = Session(model)
    feeds = {k: np.array(v, copy=True) for k, v in feeds.items()}

    def f() -> float:
        return float(session.run(feeds, [of])[0])

    out = {}
    for name in wrt:
        x = feeds[name] if name in feeds else model.graph.initializers[name]
        grad = np.zeros(x.shape, np.float64)
        for idx in np.ndindex(*x.shape):
            keep = x[idx]
            x[idx] = keep + eps
            hi = f()
            x[idx] = keep - eps
            lo = f()
            x[idx] = keep
            grad[idx] = (hi - lo) / (2 * eps)
        out[name] = grad
    return out


def check_rule(model_or_fn: Model | BuildFn, feeds: Mapping[str, Any], wrt: Sequence[str],
               atol: float = 1e-6, rtol: float = 1e-5, *, opset: int = 17, outputs: Sequence[int] | None = None,
               eps: float = 1e-6, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Assert autograd's gradients equal central differences; returns {name: (analytic, numeric)}.

    ``feeds`` should be float64 (integer feeds, e.g. indices, are fine and not differentiated);
    ``outputs`` picks which outputs enter the loss (default: every float output).
    """
    feeds = {k: np.asarray(v) for k, v in feeds.items()}
    model = with_weighted_loss(build_model(model_or_fn, feeds, opset), feeds, outputs, seed)
    analytic = gradients(model, feeds, of="loss", wrt=list(wrt))
    numeric = numeric_gradients(model, feeds, wrt, eps=eps)
    result = {}
    for name in wrt:
        got, want = np.asarray(analytic[name], np.float64), numeric[name]
        assert got.shape == want.shape, f"d loss/d {name}: shape {got.shape}, expected {want.shape}"
        err = np.abs(got - want)
        assert np.all(err <= atol + rtol * np.abs(want)), (
            f"d loss/d {name}: max abs error {err.max():.3g} at {np.unravel_index(err.argmax(), err.shape)}"
            f"\nanalytic={got.ravel()[:8]}\nnumeric={want.ravel()[:8]}")
        result[name] = (got, want)
    return result
