"""Every core gradient rule against central finite differences in float64."""
from __future__ import annotations

import numpy as np
import pytest

from inference.builder import GraphBuilder
from tests.training.gradcheck import check_rule


@pytest.fixture
def rng():
    return np.random.default_rng(42)


def away_from_zero(a: np.ndarray, gap: float = 0.2) -> np.ndarray:
    """Values at least ``gap`` from 0, so kinks and poles stay out of the FD stencil."""
    return np.where(a >= 0, a + gap, a - gap)


def i64(*v):
    return np.asarray(v, np.int64)


# --- arithmetic with broadcasting ---------------------------------------------------------------

BROADCAST = [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 4), (3, 1)), ((1,), (2, 3)), ((), (2, 3)), ((2, 3), (1, 1))]


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
@pytest.mark.parametrize("sa,sb", BROADCAST)
def test_binary_broadcasting(op, sa, sb, rng):
    a = rng.normal(size=sa)
    c = away_from_zero(rng.normal(size=sb), 0.5) if op == "Div" else rng.normal(size=sb)
    check_rule(lambda b, x, y: b.op(op, x, y), {"a": a, "c": c}, ["a", "c"])


@pytest.mark.parametrize("sa,sb", [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 3), ())])
def test_pow_base_and_exponent(sa, sb, rng):
    a = np.abs(rng.normal(size=sa)) + 0.5
    p = rng.uniform(-1.5, 2.5, size=sb)
    check_rule(lambda b, x, y: b.op("Pow", x, y), {"a": a, "p": p}, ["a", "p"])


def test_pow_integer_exponent(rng):
    a = rng.normal(size=(3, 4))
    check_rule(lambda b, x: b.op("Pow", x, b.const(np.asarray(3, np.int64))), {"a": a}, ["a"])


def test_sum_variadic_broadcast(rng):
    feeds = {"a": rng.normal(size=(2, 3)), "b": rng.normal(size=(3,)), "c": rng.normal(size=(2, 1))}
    check_rule(lambda b, *xs: b.op("Sum", *xs), feeds, ["a", "b", "c"])


def test_value_read_twice_sums_its_gradients(rng):
    check_rule(lambda b, x: b.op("Mul", x, b.op("Exp", x)), {"x": rng.normal(size=(3, 2))}, ["x"])


# --- unary ops and activations ----------------------------------------------------------------

UNARY = {
    "Relu": ({}, lambda r: away_from_zero(r)),
    "Sigmoid": ({}, lambda r: r),
    "Tanh": ({}, lambda r: r),
    "Exp": ({}, lambda r: r),
    "Log": ({}, lambda r: np.abs(r) + 0.3),
    "Sqrt": ({}, lambda r: np.abs(r) + 0.3),
    "Erf": ({}, lambda r: r),
    "Neg": ({}, lambda r: r),
    "Identity": ({}, lambda r: r),
    "LeakyRelu": ({"alpha": 0.1}, lambda r: away_from_zero(r)),
}


@pytest.mark.parametrize("op", sorted(UNARY))
def test_unary(op, rng):
    attrs, make = UNARY[op]
    check_rule(lambda b, x: b.op(op, x, **attrs), {"x": make(rng.normal(size=(3, 5)))}, ["x"])


def test_leaky_relu_default_alpha(rng):
    check_rule(lambda b, x: b.op("LeakyRelu", x), {"x": away_from_zero(rng.normal(size=(4, 3)))}, ["x"])


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu(approximate, rng):
    check_rule(lambda b, x: b.op("Gelu", x, approximate=approximate), {"x": 2 * rng.normal(size=(3, 4))}, ["x"],
               opset=20)


def _clip_input(rng) -> np.ndarray:
    x = rng.uniform(-2, 2, size=(4, 5))
    return np.where(np.abs(np.abs(x) - 1) < 0.1, x * 0.5, x)  # nothing within 0.1 of the bounds


def test_clip_inputs(rng):
    check_rule(lambda b, x: b.op("Clip", x, b.const(np.float64(-1)), b.const(np.float64(1))),
               {"x": _clip_input(rng)}, ["x"], opset=13)


def test_clip_attributes_old_opset(rng):
    check_rule(lambda b, x: b.op("Clip", x, min=-1.0, max=1.0), {"x": _clip_input(rng)}, ["x"], opset=10)


def test_clip_only_min(rng):
    check_rule(lambda b, x: b.op("Clip", x, b.const(np.float64(-1))), {"x": _clip_input(rng)}, ["x"], opset=13)


def test_cast_round_trip(rng):
    """float64 -> float32 -> float64: the gradient is cast back (checked at float32 precision)."""
    check_rule(lambda b, x: b.op("Cast", b.op("Cast", x, to=1), to=11), {"x": rng.normal(size=(3, 3))}, ["x"],
               atol=2e-4, rtol=1e-3, eps=1e-2)


# --- softmax family ---------------------------------------------------------------------------

@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("axis,opset", [(-1, 13), (0, 13), (1, 13), (1, 11), (0, 11), (-1, 11)])
def test_softmax_axes(op, axis, opset, rng):
    check_rule(lambda b, x: b.op(op, x, axis=axis), {"x": rng.normal(size=(2, 3, 4))}, ["x"], opset=opset)


# --- Gemm and MatMul ----------------------------------------------------------------------------

@pytest.mark.parametrize("ta", [0, 1])
@pytest.mark.parametrize("tb", [0, 1])
@pytest.mark.parametrize("c_shape", [None, (5,), (3, 5), (1, 5), (3, 1), ()])
def test_gemm(ta, tb, c_shape, rng):
    a = rng.normal(size=(4, 3) if ta else (3, 4))
    w = rng.normal(size=(5, 4) if tb else (4, 5))
    feeds = {"a": a, "w": w}
    if c_shape is not None:
        feeds["c"] = rng.normal(size=c_shape)
    check_rule(lambda b, *xs: b.op("Gemm", *xs, transA=ta, transB=tb, alpha=0.7, beta=1.3), feeds, list(feeds))


def test_gemm_default_attributes(rng):
    feeds = {"a": rng.normal(size=(2, 3)), "w": rng.normal(size=(3, 4)), "c": rng.normal(size=(4,))}
    check_rule(lambda b, *xs: b.op("Gemm", *xs), feeds, list(feeds))


MATMUL = [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((4,), (4, 5)), ((3, 4), (4,)), ((4,), (4,)),
          ((2, 1, 3, 4), (5, 4, 2)), ((3, 4), (2, 4, 5)), ((2, 3, 4), (2, 4, 5)), ((4,), (2, 4, 3)),
          ((2, 3, 4), (4,))]


@pytest.mark.parametrize("sa,sw", MATMUL)
def test_matmul(sa, sw, rng):
    check_rule(lambda b, x, y: b.op("MatMul", x, y), {"a": rng.normal(size=sa), "w": rng.normal(size=sw)},
               ["a", "w"])


# --- shape ops ----------------------------------------------------------------------------------

def test_reshape(rng):
    check_rule(lambda b, x: b.op("Reshape", x, b.const(i64(3, -1))), {"x": rng.normal(size=(2, 3, 2))}, ["x"])


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_flatten(axis, rng):
    check_rule(lambda b, x: b.op("Flatten", x, axis=axis), {"x": rng.normal(size=(2, 3, 2))}, ["x"])


@pytest.mark.parametrize("perm", [None, [0, 2, 1], [2, 0, 1], [1, 2, 0]])
def test_transpose(perm, rng):
    attrs = {} if perm is None else {"perm": perm}
    check_rule(lambda b, x: b.op("Transpose", x, **attrs), {"x": rng.normal(size=(2, 3, 4))}, ["x"])


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("opset", [11, 17])
def test_concat(axis, opset, rng):
    shapes = {0: [(1, 3, 2), (2, 3, 2), (3, 3, 2)], 1: [(2, 1, 2), (2, 3, 2), (2, 2, 2)],
              -1: [(2, 3, 1), (2, 3, 3), (2, 3, 2)]}[axis]
    feeds = {f"x{i}": rng.normal(size=s) for i, s in enumerate(shapes)}
    check_rule(lambda b, *xs: b.op("Concat", *xs, axis=axis), feeds, list(feeds), opset=opset)


def test_concat_gradient_only_for_one_input(rng):
    feeds = {"x": rng.normal(size=(2, 3)), "y": rng.normal(size=(2, 2))}
    check_rule(lambda b, x, y: b.op("Concat", x, y, axis=1), feeds, ["y"])


@pytest.mark.parametrize("opset", [11, 13, 18])
def test_split(opset, rng):
    def fn(b, x):
        if opset >= 13:
            return b.op("Split", x, b.const(i64(1, 3, 2)), axis=1, outputs=3)
        return b.op("Split", x, axis=1, split=[1, 3, 2], outputs=3)
    check_rule(fn, {"x": rng.normal(size=(2, 6))}, ["x"], opset=opset)


def test_split_num_outputs_some_unused(rng):
    check_rule(lambda b, x: b.op("Split", x, axis=-1, num_outputs=3, outputs=3), {"x": rng.normal(size=(2, 6))},
               ["x"], opset=18, outputs=[0, 2])


SLICES = [((0,), (2,), None, None), ((1, -3), (100, -1), (0, 2), None), ((-1,), (-100,), (1,), (-1,)),
          ((3, 0), (0, 5), (-1, -2), (-2, 2))]


@pytest.mark.parametrize("starts,ends,axes,steps", SLICES)
def test_slice(starts, ends, axes, steps, rng):
    def fn(b, x):
        extra = [b.const(i64(*axes)) if axes else None, b.const(i64(*steps)) if steps else None]
        return b.op("Slice", x, b.const(i64(*starts)), b.const(i64(*ends)), *extra)
    check_rule(fn, {"x": rng.normal(size=(4, 5, 6))}, ["x"])


def test_slice_attributes_old_opset(rng):
    check_rule(lambda b, x: b.op("Slice", x, starts=[1, 0], ends=[3, -1], axes=[0, 2]),
               {"x": rng.normal(size=(4, 2, 3))}, ["x"], opset=9)


@pytest.mark.parametrize("axis,indices", [(0, [[0, 2], [2, -1]]), (1, [1, 1, 0]), (-1, 2), (0, [3, -4, 0])])
def test_gather_repeats_and_negative_indices(axis, indices, rng):
    feeds = {"x": rng.normal(size=(4, 3, 3)), "i": np.asarray(indices, np.int64)}
    check_rule(lambda b, x, i: b.op("Gather", x, i, axis=axis), feeds, ["x"])


@pytest.mark.parametrize("opset", [11, 13])
def test_squeeze_unsqueeze(opset, rng):
    def fn(b, x):
        if opset >= 13:
            y = b.op("Squeeze", x, b.const(i64(1, -1)))
            return b.op("Unsqueeze", y, b.const(i64(0, -1)))
        return b.op("Unsqueeze", b.op("Squeeze", x, axes=[1, -1]), axes=[0, -1])
    check_rule(fn, {"x": rng.normal(size=(3, 1, 2, 1))}, ["x"], opset=opset)


def test_squeeze_all_unit_axes(rng):
    check_rule(lambda b, x: b.op("Squeeze", x), {"x": rng.normal(size=(1, 3, 1))}, ["x"])


@pytest.mark.parametrize("src,shape", [((3, 1), (2, 3, 4)), ((4,), (3, 4)), ((1, 1), (2, 1))])
def test_expand(src, shape, rng):
    check_rule(lambda b, x: b.op("Expand", x, b.const(i64(*shape))), {"x": rng.normal(size=src)}, ["x"])


@pytest.mark.parametrize("pads", [(1, 0, 2, 1), (0, 2, 1, 0), (-1, 1, 0, -2)])
def test_pad_constant(pads, rng):
    check_rule(lambda b, x: b.op("Pad", x, b.const(i64(*pads)), b.const(np.float64(0.5))),
               {"x": rng.normal(size=(3, 4))}, ["x"], opset=13)


def test_pad_axes_input(rng):
    check_rule(lambda b, x: b.op("Pad", x, b.const(i64(2, 1)), None, b.const(i64(-1))),
               {"x": rng.normal(size=(2, 3))}, ["x"], opset=18)


def test_pad_attribute_old_opset(rng):
    check_rule(lambda b, x: b.op("Pad", x, pads=[0, 1, 1, 0]), {"x": rng.normal(size=(2, 3))}, ["x"], opset=9)


REDUCTIONS = [((1,), 1), ((1,), 0), ((0, 2), 0), ((-1,), 1), (None, 0), (None, 1)]


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean"])
@pytest.mark.parametrize("axes,keepdims", REDUCTIONS)
@pytest.mark.parametrize("opset", [11, 18])
def test_reductions(op, axes, keepdims, opset, rng):
    def fn(b, x):
        axes_as_input = opset >= (13 if op == "ReduceSum" else 18)
        if axes is None:
            return b.op(op, x, keepdims=keepdims)
        if axes_as_input:
            return b.op(op, x, b.const(i64(*axes)), keepdims=keepdims)
        return b.op(op, x, axes=list(axes), keepdims=keepdims)
    check_rule(fn, {"x": rng.normal(size=(2, 3, 4))}, ["x"], opset=opset)


def test_reduce_sum_noop_with_empty_axes(rng):
    check_rule(lambda b, x: b.op("ReduceSum", x, noop_with_empty_axes=1), {"x": rng.normal(size=(2, 3))}, ["x"])


# --- symbolic shapes: broadcasting undone at run time -----------------------------------------

def _symbolic_add(rank_a: tuple, rank_b: tuple):
    b = GraphBuilder("sym", opset=17)
    x = b.input("x", np.float64, rank_a)
    y = b.input("y", np.float64, rank_b)
    b.output(b.op("Mul", b.op("Add", x, y), y))
    return b.build()


@pytest.mark.parametrize("sx,sy,fx,fy", [
    (("N", "C"), ("M", 1), (3, 4), (3, 1)),      # a dim that might be 1: summed at run time
    (("N", 4), (4,), (3, 4), (4,)),               # batch dim symbolic, still reduced statically
    (("N", "C"), ("N", "C"), (2, 3), (2, 3)),     # same names: nothing to reduce
    (("A", "B"), ("B",), (1, 3), (3,)),
])
def test_symbolic_broadcasting(sx, sy, fx, fy, rng):
    feeds = {"x": rng.normal(size=fx), "y": rng.normal(size=fy)}
    check_rule(_symbolic_add(sx, sy), feeds, ["x", "y"])


def symbolic_model(fn, feeds: dict, opset: int = 17):
    """The graph of ``fn`` over inputs whose every dim is symbolic: rules must take run-time shapes."""
    b = GraphBuilder("symbolic", opset=opset)
    names = [b.input(k, v.dtype, [f"{k}{i}" for i in range(v.ndim)]) for k, v in feeds.items()]
    b.output(fn(b, *names))
    return b.build()


SYMBOLIC = {
    "concat": lambda b, x, y: b.op("Concat", x, y, axis=1),
    "split_unused_part": lambda b, x, y: b.op("Split", x, b.const(i64(1, 2)), axis=1, outputs=2)[1],
    "slice": lambda b, x, y: b.op("Slice", x, b.const(i64(1)), b.const(i64(3)), b.const(i64(1))),
    "gather": lambda b, x, y: b.op("Gather", x, b.const(i64(0, 0, 1)), axis=1),
    "reshape": lambda b, x, y: b.op("Reshape", x, b.const(i64(-1))),
    "expand": lambda b, x, y: b.op("Expand", y, b.op("Shape", x)),
    "reduce_mean": lambda b, x, y: b.op("ReduceMean", x, axes=[1], keepdims=0),
    "pad": lambda b, x, y: b.op("Pad", x, b.const(i64(0, 1, 1, 0))),
    "matmul": lambda b, x, y: b.op("MatMul", x, b.op("Transpose", x, perm=[1, 0])),
    "broadcast_mul": lambda b, x, y: b.op("Mul", x, y),
}


@pytest.mark.parametrize("case", sorted(SYMBOLIC))
def test_rules_with_symbolic_shapes(case, rng):
    feeds = {"x": rng.normal(size=(2, 3)), "y": rng.normal(size=(2, 1))}
    wrt = {"concat": ["x", "y"], "broadcast_mul": ["x", "y"], "expand": ["y"]}.get(case, ["x"])
    check_rule(symbolic_model(SYMBOLIC[case], feeds), feeds, wrt)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_masked_gradient_kernels(dtype, rng):
    """The compiled masks equal their numpy definitions (float16 and non-contiguous take numpy's path)."""
    from training.kernels.shape_grads import clip_grad, leaky_relu_grad, relu_grad

    x = rng.normal(size=(5, 4)).astype(dtype)
    dy = rng.normal(size=(4, 5)).astype(dtype).T  # non-contiguous
    y = np.clip(x, dtype(-0.5), dtype(0.5))
    assert np.array_equal(relu_grad(dy, np.maximum(x, 0)), np.where(x > 0, dy, 0).astype(dtype))
    assert np.array_equal(clip_grad(dy, x, y), np.where(x == y, dy, 0).astype(dtype))
    assert np.allclose(leaky_relu_grad(dy, x, alpha=0.2), np.where(x > 0, dy, dy * dtype(0.2)))
    assert relu_grad(dy, x).dtype == dtype
