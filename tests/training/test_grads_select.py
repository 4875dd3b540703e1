"""Rules of the piecewise and selecting ops (Abs, Max, Min, Where, Pad reflect/edge/wrap) against
central finite differences in float64, and their behaviour at kinks and ties."""
from __future__ import annotations

import numpy as np
import pytest

from inference.builder import GraphBuilder
from inference.errors import KernelError
from tests.training.gradcheck import check_rule
from tests.training.test_grads_core import away_from_zero, i64, symbolic_model
from training.autograd import gradients


@pytest.fixture
def rng():
    return np.random.default_rng(7)


# --- Abs ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("opset", [8, 17])  # opset 8 has no Sign: (x > 0) - (x < 0)
def test_abs(opset, rng):
    check_rule(lambda b, x: b.op("Abs", x), {"x": away_from_zero(rng.normal(size=(3, 5)))}, ["x"], opset=opset)


def _grads(fn, feeds, wrt, opset=17):
    """Gradients of sum(fn(...)) (every output element weighted 1)."""
    b = GraphBuilder("kink", opset=opset)
    names = [b.input(k, v.dtype, v.shape) for k, v in feeds.items()]
    b.output(b.op("ReduceSum", fn(b, *names), keepdims=0))
    model = b.build()
    return gradients(model, feeds, of=model.graph.outputs[0].name, wrt=wrt)


def test_abs_subgradient_at_zero_is_zero():
    g = _grads(lambda b, x: b.op("Abs", x), {"x": np.array([-2.0, 0.0, 3.0])}, ["x"])
    np.testing.assert_array_equal(g["x"], [-1.0, 0.0, 1.0])


# --- Max / Min ------------------------------------------------------------------------------------

SHAPES = [[(3, 4), (3, 4)], [(3, 4), (4,)], [(2, 1, 4), (3, 1)], [(2, 3), (), (3,)], [(3, 4)]]


@pytest.mark.parametrize("op", ["Max", "Min"])
@pytest.mark.parametrize("shapes", SHAPES, ids=lambda s: "-".join("x".join(map(str, d)) or "scalar" for d in s))
def test_max_min_broadcasting(op, shapes, rng):
    feeds = {f"x{i}": rng.normal(size=s) for i, s in enumerate(shapes)}  # continuous values: no ties
    check_rule(lambda b, *xs: b.op(op, *xs), feeds, list(feeds))


def test_max_min_symbolic_shapes(rng):
    feeds = {"x": rng.normal(size=(2, 3)), "y": rng.normal(size=(2, 1))}
    check_rule(symbolic_model(lambda b, x, y: b.op("Max", x, y), feeds), feeds, ["x", "y"])


@pytest.mark.parametrize("op", ["Max", "Min"])
def test_ties_split_the_gradient_evenly(op):
    x = np.array([1.0, 2.0, 3.0])
    y = np.array([1.0, 0.0, 3.0])
    z = np.array([1.0, 5.0, -1.0])
    g = _grads(lambda b, *xs: b.op(op, *xs), {"x": x, "y": y, "z": z}, ["x", "y", "z"])
    total = g["x"] + g["y"] + g["z"]
    np.testing.assert_allclose(total, 1.0)  # the inputs' gradients always sum to dy
    np.testing.assert_allclose(g["x"][0], 1 / 3)  # a three-way tie
    if op == "Max":  # [1,1,1] -> thirds; 5 wins; x and y tie at 3
        np.testing.assert_allclose(g["z"], [1 / 3, 1, 0])
        np.testing.assert_allclose(g["x"], [1 / 3, 0, 0.5])
    else:  # [1,1,1] -> thirds; y = 0 wins; z = -1 wins
        np.testing.assert_allclose(g["y"], [1 / 3, 1, 0])
        np.testing.assert_allclose(g["z"], [1 / 3, 0, 1])


# --- Where ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sc,sx,sy", [((3, 4), (3, 4), (3, 4)), ((3, 1), (4,), (3, 4)), ((4,), (2, 1, 4), ()),
                                      ((2, 3), (1,), (3,))])
def test_where_broadcasting(sc, sx, sy, rng):
    feeds = {"c": rng.random(sc) > 0.5, "x": rng.normal(size=sx), "y": rng.normal(size=sy)}
    check_rule(lambda b, c, x, y: b.op("Where", c, x, y), feeds, ["x", "y"])


def test_where_only_one_branch_needed(rng):
    feeds = {"c": rng.random((3, 4)) > 0.5, "x": rng.normal(size=(3, 4))}
    check_rule(lambda b, c, x: b.op("Where", c, x, b.const(np.float64(2.0))), feeds, ["x"])


# --- Pad reflect / edge / wrap ------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["reflect", "edge", "wrap"])
@pytest.mark.parametrize("pads", [(1, 0, 2, 1), (0, 2, 1, 0), (2, 3, 2, 3), (-1, 1, 1, -2)])
def test_pad_modes(mode, pads, rng):
    check_rule(lambda b, x: b.op("Pad", x, b.const(i64(*pads)), mode=mode), {"x": rng.normal(size=(4, 5))}, ["x"],
               opset=19 if mode == "wrap" else 13)


def test_pad_reflect_wider_than_the_input_reflects_again(rng):
    """numpy (hence our Pad) reflects repeatedly when a pad is wider than the axis."""
    check_rule(lambda b, x: b.op("Pad", x, b.const(i64(0, 5, 0, 4)), mode="reflect"), {"x": rng.normal(size=(2, 3))},
               ["x"], opset=13)


def test_pad_modes_axes_input_4d(rng):
    check_rule(lambda b, x: b.op("Pad", x, b.const(i64(1, 2, 2, 1)), None, b.const(i64(2, -1)), mode="reflect"),
               {"x": rng.normal(size=(2, 2, 4, 5))}, ["x"], opset=18)


def test_pad_edge_attribute_old_opset(rng):  # pads as an attribute (the harness needs opset >= 6)
    check_rule(lambda b, x: b.op("Pad", x, mode="edge", pads=[1, 0, 0, 2]), {"x": rng.normal(size=(2, 3))},
               ["x"], opset=9)


def test_pad_reflect_symbolic_shapes(rng):
    feeds = {"x": rng.normal(size=(3, 4))}
    check_rule(symbolic_model(lambda b, x: b.op("Pad", x, b.const(i64(1, 2, 2, 1)), mode="reflect"), feeds),
               feeds, ["x"])


def test_pad_grad_kernel_rejects_what_it_cannot_fold():
    from training.kernels.shape_grads import pad_grad

    with pytest.raises(KernelError, match="mode 'constant'"):
        pad_grad(np.zeros((3, 3)), i64(2, 2), i64(1, 0, 0, 1), mode="constant")
    with pytest.raises(KernelError, match=r"shape \[3, 4\] does not match the padded shape \[3, 3\]"):
        pad_grad(np.zeros((3, 4)), i64(2, 2), i64(1, 0, 0, 1), mode="edge")
