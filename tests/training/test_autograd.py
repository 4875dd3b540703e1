"""The autograd walk: which nodes it visits, what it emits, how it fails."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from inference.builder import GraphBuilder
from inference.ir import TensorType
from inference.ops.registry import register
from inference.schema import FormalParam, OpSchema, register_schema
from training.autograd import GraphEmitter, compute_gradients, gradients
from training.errors import MissingGradientRuleError, TrainingError
from training.grads import grad_rule

TEST_DOMAIN = "edgelearn.autograd_test"


@register("Twice", since=1, domain=TEST_DOMAIN)
def _twice(x):
    return 2 * x


@register("Bogus", since=1, domain=TEST_DOMAIN)
def _bogus(x):
    return x.copy()


@register("Square", since=1, domain=TEST_DOMAIN)
def _square(x):
    return x * x


@grad_rule("Square", domain=TEST_DOMAIN)
def _square_rule_off_by_factor_two(b, node, dys):
    return [b.op("Mul", dys[0], node.inputs[0])]  # wrong on purpose: d(x^2)/dx is 2x


for _op in ("Twice", "Bogus", "Square"):
    register_schema(OpSchema(_op, TEST_DOMAIN, 1, (FormalParam("x"),), (FormalParam("y"),), {},
                             lambda node, types: [types[0]]))


@grad_rule("Bogus", domain=TEST_DOMAIN)
def _bogus_rule(b, node, dys):
    return [b.op("ReduceSum", dys[0], keepdims=0)]  # wrong: a scalar for a matrix


def two_layer(prefix_op: tuple[str, str] | None = None, batch="N"):
    """x -> [prefix op] -> Gemm(w1) -> Relu -> Gemm(w2) -> ReduceSum -> loss."""
    rng = np.random.default_rng(0)
    b = GraphBuilder("net", opset=17)
    h = b.input("x", np.float64, [batch, 3])
    if prefix_op:
        h = b.op(prefix_op[0], h, domain=prefix_op[1], name="prefix_node")
    h = b.op("Relu", b.op("Gemm", h, b.const(rng.normal(size=(3, 4)), "w1"), b.const(rng.normal(size=4), "b1")))
    y = b.op("Gemm", h, b.const(rng.normal(size=(4, 2)), "w2"), b.const(rng.normal(size=2), "b2"))
    b.output(b.op("ReduceSum", b.op("Mul", y, y), keepdims=0, outputs=["loss"]))
    return b.build()


def new_nodes(model, before: int):
    return model.graph.nodes[before:]


def test_frozen_prefix_emits_no_backward_nodes():
    model = two_layer(prefix_op=("Twice", TEST_DOMAIN))  # Twice has no rule: visiting it would fail
    n0 = len(model.graph.nodes)
    full = compute_gradients(copy.deepcopy(two_layer()), "loss", ["w1", "w2"])
    assert set(full) == {"w1", "w2"}
    grads = compute_gradients(model, "loss", ["w2", "b2"])
    emitted = new_nodes(model, n0)
    assert set(grads) == {"w2", "b2"}
    assert not any(n.op_type == "ReluGrad" for n in emitted)  # no Relu backward
    assert not any("w1" in n.inputs for n in emitted)
    assert len(emitted) <= 8


def test_missing_rule_names_op_and_node():
    model = two_layer(prefix_op=("Twice", TEST_DOMAIN))
    with pytest.raises(MissingGradientRuleError, match=r"edgelearn.autograd_test::Twice.*prefix_node"):
        compute_gradients(model, "loss", ["x"])


def test_rule_returning_a_wrongly_shaped_gradient_is_caught():
    model = two_layer(prefix_op=("Bogus", TEST_DOMAIN), batch=5)
    with pytest.raises(TrainingError, match="Bogus"):
        compute_gradients(model, "loss", ["x"])


def test_unknown_names_and_unreachable_values():
    model = two_layer()
    with pytest.raises(TrainingError, match="no value named"):
        compute_gradients(copy.deepcopy(model), "nope", ["w1"])
    with pytest.raises(TrainingError, match="no value named"):
        compute_gradients(copy.deepcopy(model), "loss", ["w9"])
    m = copy.deepcopy(model)
    m.graph.initializers["unused"] = np.ones(3)
    with pytest.raises(TrainingError, match="does not depend"):
        compute_gradients(copy.deepcopy(m), "loss", ["unused", "w1"])
    assert set(compute_gradients(m, "loss", ["unused", "w1"], strict=False)) == {"w1"}


def numpy_two_layer_grads(model, x):
    p = model.graph.initializers
    z1 = x @ p["w1"] + p["b1"]
    h = np.maximum(z1, 0)
    y = h @ p["w2"] + p["b2"]
    dy = 2 * y
    dh = dy @ p["w2"].T * (z1 > 0)
    return {"w2": h.T @ dy, "b2": dy.sum(0), "w1": x.T @ dh, "b1": dh.sum(0), "x": dh @ p["w1"].T}


@pytest.mark.parametrize("batch", [1, 5])
def test_gradients_with_symbolic_batch_match_numpy(batch):
    model = two_layer()
    x = np.random.default_rng(batch).normal(size=(batch, 3))
    got = gradients(model, {"x": x}, of="loss", wrt=["w1", "b1", "w2", "b2", "x"])
    want = numpy_two_layer_grads(model, x)
    for name, value in want.items():
        assert np.allclose(got[name], value, atol=1e-10), name


def test_gradients_leave_the_model_untouched():
    model = two_layer()
    n, inits = len(model.graph.nodes), set(model.graph.initializers)
    gradients(model, {"x": np.ones((2, 3))}, of="loss", wrt=["w1"])
    assert len(model.graph.nodes) == n and set(model.graph.initializers) == inits


def test_fan_out_gradients_are_summed():
    b = GraphBuilder("fan", opset=17)
    x = b.input("x", np.float64, [3])
    b.output(b.op("ReduceSum", b.op("Mul", b.op("Sin", x), b.op("Exp", x)), keepdims=0, outputs=["loss"]))
    model = b.build()
    with pytest.raises(MissingGradientRuleError, match="Sin"):
        compute_gradients(copy.deepcopy(model), "loss", ["x"])
    b = GraphBuilder("fan", opset=17)
    x = b.input("x", np.float64, [3])
    b.output(b.op("ReduceSum", b.op("Mul", b.op("Tanh", x), b.op("Exp", x)), keepdims=0, outputs=["loss"]))
    model = b.build()
    n0 = len(model.graph.nodes)
    compute_gradients(model, "loss", ["x"])
    assert sum(n.op_type == "Sum" for n in new_nodes(model, n0)) == 1
    xv = np.array([0.1, -0.5, 2.0])
    got = gradients(model, {"x": xv}, of="loss", wrt=["x"])["x"]
    want = (1 - np.tanh(xv) ** 2) * np.exp(xv) + np.tanh(xv) * np.exp(xv)
    assert np.allclose(got, want)


def test_integer_shape_paths_are_not_walked():
    """Reshape(h, Shape(h)) and ConstantOfShape(Shape(x)) read x without being differentiable paths."""
    b = GraphBuilder("shape", opset=17)
    x = b.input("x", np.float64, ["N", 4])
    ones = b.op("ConstantOfShape", b.op("Shape", x), value=np.ones(1, np.float64))
    h = b.op("Reshape", b.op("Mul", x, x), b.op("Shape", x))
    b.output(b.op("ReduceSum", b.op("Add", h, ones), keepdims=0, outputs=["loss"]))
    xv = np.arange(8.0).reshape(2, 4)
    assert np.allclose(gradients(b.build(), {"x": xv}, of="loss", wrt=["x"])["x"], 2 * xv)


def test_non_scalar_output_is_seeded_with_ones():
    b = GraphBuilder("vec", opset=17)
    x = b.input("x", np.float64, ["N"])
    b.output(b.op("Mul", x, x, outputs=["y"]))
    xv = np.array([1.0, -2.0, 3.0])
    assert np.allclose(gradients(b.build(), {"x": xv}, of="y", wrt=["x"])["x"], 2 * xv)


def test_emitter_names_types_and_reductions():
    model = two_layer()
    em = GraphEmitter(model)
    y = em.op("Add", "x", em.const(np.ones((1, 3))))
    assert em.type_of(y) == TensorType(11, ("N", 3))
    assert len({em.fresh("a") for _ in range(50)}) == 50
    n0 = len(model.graph.nodes)
    r = em.reduce_to_shape_of(em.op("Mul", "x", em.const(np.ones(3))), em.const(np.ones(3)))
    assert [n.op_type for n in new_nodes(model, n0)][-1] == "ReduceSum"
    assert em.type_of(r).shape == (3,)
    sym = GraphEmitter(two_layer())
    sym.graph.inputs.append(type(sym.graph.inputs[0])("m", TensorType(11, ("M", 1))))
    d = sym.reduce_to_shape_of(sym.op("Add", "x", "m"), "m")
    assert sym.graph.nodes[-1].op_type == "SumToShape" and sym.type_of(d).shape == ("M", 1)


def test_gradcheck_catches_a_wrong_rule():
    from tests.training.gradcheck import check_rule

    x = {"x": np.array([[0.5, -1.0, 2.0]])}
    with pytest.raises(AssertionError, match="d loss/d x"):
        check_rule(lambda b, v: b.op("Square", v, domain=TEST_DOMAIN), x, ["x"])
    check_rule(lambda b, v: b.op("Mul", v, v), x, ["x"])  # the correct rule passes
