"""Gradients of the NN ops checked against central finite differences in float64.

Two levels: each backward kernel of ``edgelearn.grad`` against the forward reference kernel,
and each gradient rule end to end (rule emits nodes -> shape inference -> Session) against
finite differences of the forward graph. Checks are directional: for random directions v,
(L(p + eps v) - L(p - eps v)) / 2 eps must equal <grad, v>, with L = sum(f(p) * dY).
"""
from __future__ import annotations

from typing import Any, Callable

import copy

import numpy as np
import pytest

import training.grads  # noqa: F401 - registers the rules (and, through them, the kernels)
from inference.builder import GraphBuilder
from inference.ir import Model, Value
from inference.ops.registry import KernelContext, lookup
from inference.schema import get_schema
from inference.session import Session
from inference.shape_inference import infer_shapes
from tests.training.gradcheck import with_weighted_loss
from training.autograd import compute_gradients, gradients
from training.grads.registry import GRAD_DOMAIN
from training.kernels.nn_train import dropout_mask, seeded_dropout_node

EPS = 1e-6
TOL = 1e-6


def kernel(op: str, domain: str = "", opset: int = 19, outputs: int = 1) -> Callable[..., Any]:
    """Call a registered kernel as the session would (ctx with ``outputs`` outputs)."""
    entry = lookup(op, domain, opset)
    assert entry is not None, f"no kernel for {domain}::{op}"
    if not entry.wants_ctx:
        return entry.fn
    return lambda *a, **kw: entry.fn(*a, ctx=KernelContext(node=None, opset=opset, num_outputs=outputs), **kw)


def directional_check(f: Callable[..., np.ndarray], args: list, i: int, grad: np.ndarray, dy: np.ndarray,
                      rng: np.random.Generator, directions: int = 3) -> None:
    """Assert ``grad`` is d/d args[i] of sum(f(*args) * dy) along random directions."""
    base = args[i]
    assert grad.shape == base.shape and grad.dtype == base.dtype
    for _ in range(directions):
        v = rng.standard_normal(base.shape)
        plus = [a if k != i else base + EPS * v for k, a in enumerate(args)]
        minus = [a if k != i else base - EPS * v for k, a in enumerate(args)]
        fd = (np.sum(f(*plus) * dy) - np.sum(f(*minus) * dy)) / (2 * EPS)
        an = np.sum(grad * v)
        assert abs(fd - an) <= TOL * max(1.0, abs(fd)), (fd, an)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


# --- kernels: Conv ----------------------------------------------------------------------------

CONV_CASES = {
    "basic": ((2, 3, 7, 6), (4, 3, 3, 3), dict(pads=[1, 1, 1, 1])),
    "stride2_asym_pads": ((2, 3, 8, 7), (4, 3, 3, 3), dict(strides=[2, 2], pads=[0, 1, 1, 0])),
    "stride_drops_rows": ((1, 2, 8, 8), (3, 2, 3, 2), dict(strides=[3, 2])),
    "dilation": ((2, 2, 9, 8), (3, 2, 3, 2), dict(dilations=[2, 3], pads=[2, 1, 2, 1])),
    "groups": ((2, 4, 6, 6), (6, 2, 3, 3), dict(group=2, pads=[1, 1, 1, 1])),
    "depthwise": ((2, 3, 6, 6), (3, 1, 3, 3), dict(group=3, pads=[1, 1, 1, 1], strides=[2, 2])),
    "depthwise_dilated": ((1, 4, 9, 8), (4, 1, 3, 2), dict(group=4, dilations=[2, 3], strides=[1, 2],
                                                         pads=[2, 0, 1, 3])),
    "depthwise_x2": ((1, 3, 5, 5), (6, 1, 3, 3), dict(group=3)),
    "pointwise": ((2, 5, 4, 4), (3, 5, 1, 1), {}),
    "same_upper": ((2, 2, 7, 6), (3, 2, 3, 3), dict(auto_pad="SAME_UPPER", strides=[2, 2])),
    "same_lower": ((2, 2, 6, 7), (3, 2, 4, 3), dict(auto_pad="SAME_LOWER")),
    "valid": ((1, 2, 7, 7), (2, 2, 3, 3), dict(auto_pad="VALID", strides=[2, 3], kernel_shape=[3, 3])),
    "1d": ((2, 3, 9), (4, 3, 3), dict(strides=[2], pads=[1, 2])),
    "1d_groups_dilation": ((2, 4, 11), (4, 2, 3), dict(group=2, dilations=[2])),
    "3d": ((1, 2, 4, 5, 4), (3, 2, 2, 3, 2), dict(pads=[1, 0, 1, 0, 1, 1], strides=[1, 2, 1])),
    "3d_depthwise": ((2, 2, 4, 4, 3), (2, 1, 2, 3, 2), dict(group=2, pads=[0, 1, 1, 1, 1, 0], dilations=[2, 1, 1])),
    "1d_depthwise": ((2, 3, 10), (3, 1, 3), dict(group=3, strides=[2], pads=[2, 1])),
    # 8+ input channels, one group: the NHWC rows path (training.kernels._conv_rows)
    "rows_pads_stride": ((2, 8, 5, 4), (3, 8, 3, 3), dict(pads=[1, 2, 0, 1], strides=[1, 2])),
    "rows_dilation": ((1, 9, 7, 6), (4, 9, 2, 3), dict(dilations=[2, 1], pads=[1, 1, 1, 1])),
    "rows_1d": ((2, 8, 7), (3, 8, 3), dict(pads=[1, 1], strides=[2])),
}


@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_conv_grad_kernels(case: str, rng: np.random.Generator) -> None:
    xs, ws, attrs = CONV_CASES[case]
    x, w, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])
    conv = kernel("Conv")
    f = lambda x_, w_, b_: conv(x_, w_, b_, **attrs)  # noqa: E731
    dy = rng.standard_normal(f(x, w, b).shape)
    dx = kernel("ConvGradInput", GRAD_DOMAIN, 1)(dy, w, x, **attrs)
    dw, db = kernel("ConvGradWeight", GRAD_DOMAIN, 1, outputs=2)(dy, x, w, **attrs)
    for i, g in enumerate((dx, dw, db)):
        directional_check(f, [x, w, b], i, g, dy, rng)


def test_conv_grad_input_matches_full_finite_differences(rng: np.random.Generator) -> None:
    """Element-wise (not only directional) check on a tiny strided, padded, grouped conv."""
    x, w = rng.standard_normal((1, 2, 5, 4)), rng.standard_normal((2, 1, 2, 3))
    attrs = dict(group=2, strides=[2, 1], pads=[1, 0, 0, 1])
    conv = kernel("Conv")
    dy = rng.standard_normal(conv(x, w, **attrs).shape)
    dx = kernel("ConvGradInput", GRAD_DOMAIN, 1)(dy, w, x, **attrs)
    fd = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[idx] = EPS
        fd[idx] = (np.sum(conv(x + e, w, **attrs) * dy) - np.sum(conv(x - e, w, **attrs) * dy)) / (2 * EPS)
    np.testing.assert_allclose(dx, fd, atol=1e-7)


def test_conv_grads_keep_float32(rng: np.random.Generator) -> None:
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    dy = rng.standard_normal((2, 4, 4, 4)).astype(np.float32)
    assert kernel("ConvGradInput", GRAD_DOMAIN, 1)(dy, w, x).dtype == np.float32
    assert kernel("ConvGradWeight", GRAD_DOMAIN, 1)(dy, x, w).dtype == np.float32


def test_conv_grad_rejects_wrong_upstream_shape(rng: np.random.Generator) -> None:
    from inference.errors import KernelError
    x, w = rng.standard_normal((1, 2, 5, 5)), rng.standard_normal((3, 2, 3, 3))
    with pytest.raises(KernelError, match="upstream gradient"):
        kernel("ConvGradInput", GRAD_DOMAIN, 1)(rng.standard_normal((1, 3, 5, 5)), w, x)


# --- kernels: pooling -------------------------------------------------------------------------

POOL_CASES = {
    "k2s2": ((2, 3, 6, 6), dict(kernel_shape=[2, 2], strides=[2, 2])),
    "k3s2p1": ((2, 2, 7, 6), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    "overlap_s1": ((1, 2, 5, 5), dict(kernel_shape=[3, 2])),
    "ceil_mode": ((1, 2, 7, 6), dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),
    "ceil_pads": ((1, 2, 6, 7), dict(kernel_shape=[2, 3], strides=[2, 2], pads=[1, 0, 0, 1], ceil_mode=1)),
    "dilation": ((1, 2, 8, 7), dict(kernel_shape=[2, 2], dilations=[2, 3], strides=[1, 2])),
    "same_upper": ((2, 2, 7, 5), dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")),
    "same_lower": ((1, 2, 6, 5), dict(kernel_shape=[2, 2], strides=[2, 1], auto_pad="SAME_LOWER")),
    "1d": ((2, 3, 10), dict(kernel_shape=[3], strides=[2], pads=[1, 1])),
    "3d": ((1, 2, 4, 4, 5), dict(kernel_shape=[2, 2, 3], strides=[2, 1, 2])),
}


@pytest.mark.parametrize("case", sorted(POOL_CASES))
def test_max_pool_grad_kernel(case: str, rng: np.random.Generator) -> None:
    shape, attrs = POOL_CASES[case]
    x = rng.standard_normal(shape)
    y, idx = kernel("MaxPool", outputs=2)(x, **attrs)
    dy = rng.standard_normal(y.shape)
    dx = kernel("MaxPoolGrad", GRAD_DOMAIN, 1)(dy, idx, x)
    directional_check(lambda x_: kernel("MaxPool")(x_, **attrs), [x], 0, dx, dy, rng)


@pytest.mark.parametrize("case", sorted(POOL_CASES))
def test_max_pool_grad_by_match_equals_indices_path_even_with_ties(case: str, rng: np.random.Generator) -> None:
    shape, attrs = POOL_CASES[case]
    x = rng.integers(-2, 3, size=shape).astype(np.float32)  # many ties inside windows
    y, idx = kernel("MaxPool", outputs=2)(x, **attrs)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    by_match = kernel("MaxPoolGradByMatch", GRAD_DOMAIN, 1)(dy, x, y, **attrs)
    assert by_match.dtype == np.float32
    np.testing.assert_allclose(by_match, kernel("MaxPoolGrad", GRAD_DOMAIN, 1)(dy, idx, x), rtol=1e-6)


@pytest.mark.parametrize("case", sorted(POOL_CASES) + ["k2s2_odd"])
def test_max_pool_grad_through_relu_equals_relu_grad_after_it(case: str, rng: np.random.Generator) -> None:
    """``through_relu=1`` (the step graph's fusion) gives ReluGrad(MaxPoolGradByMatch(dY, X, Y), X)
    for X a Relu output, zero windows and ties included."""
    shape, attrs = POOL_CASES.get(case) or ((2, 3, 7, 5), dict(kernel_shape=[2, 2], strides=[2, 2]))
    x = np.maximum(rng.integers(-2, 3, size=shape), 0).astype(np.float32)
    y = kernel("MaxPool")(x, **attrs)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    grad = kernel("MaxPoolGradByMatch", GRAD_DOMAIN, 1)
    want = kernel("ReluGrad", GRAD_DOMAIN, 1)(grad(dy, x, y, **attrs), x)
    np.testing.assert_array_equal(grad(dy, x, y, through_relu=1, **attrs), want)


@pytest.mark.parametrize("count_include_pad", [0, 1])
@pytest.mark.parametrize("case", sorted(POOL_CASES))
def test_average_pool_grad_kernel(case: str, count_include_pad: int, rng: np.random.Generator) -> None:
    shape, attrs = POOL_CASES[case]
    attrs = dict(attrs, count_include_pad=count_include_pad)
    x = rng.standard_normal(shape)
    f = lambda x_: kernel("AveragePool")(x_, **attrs)  # noqa: E731
    dy = rng.standard_normal(f(x).shape)
    dx = kernel("AveragePoolGrad", GRAD_DOMAIN, 1)(dy, x, **attrs)
    directional_check(f, [x], 0, dx, dy, rng)


def test_global_average_pool_grad_kernel(rng: np.random.Generator) -> None:
    x = rng.standard_normal((2, 3, 4, 5))
    dy = rng.standard_normal((2, 3, 1, 1))
    dx = kernel("GlobalAveragePoolGrad", GRAD_DOMAIN, 1)(dy, x)
    directional_check(kernel("GlobalAveragePool"), [x], 0, dx, dy, rng)


# --- kernels: normalization -------------------------------------------------------------------

@pytest.mark.parametrize("training_mode", [1, 0])
@pytest.mark.parametrize("shape", [(4, 3), (3, 2, 5, 4), (2, 3, 6)])
def test_batch_norm_grad_kernel(shape: tuple, training_mode: int, rng: np.random.Generator) -> None:
    c = shape[1]
    x = rng.standard_normal(shape) * 2 + 1
    scale, bias = rng.standard_normal(c), rng.standard_normal(c)
    mean, var = rng.standard_normal(c), rng.uniform(0.5, 2, c)
    f = lambda x_, s_, b_: kernel("BatchNormalization", opset=15)(  # noqa: E731
        x_, s_, b_, mean, var, epsilon=1e-3, training_mode=training_mode)
    dy = rng.standard_normal(shape)
    grads = kernel("BatchNormGrad", GRAD_DOMAIN, 1, outputs=3)(
        dy, x, scale, mean, var, epsilon=1e-3, training_mode=training_mode)
    for i, g in enumerate(grads):
        directional_check(f, [x, scale, bias], i, g, dy, rng)


@pytest.mark.parametrize("saved", [True, False])
@pytest.mark.parametrize("shape,axis", [((4, 6), -1), ((2, 3, 4), 1), ((2, 3, 4), -1)])
def test_layer_norm_grad_kernel(shape: tuple, axis: int, saved: bool, rng: np.random.Generator) -> None:
    x = rng.standard_normal(shape) * 3
    norm = shape[axis % len(shape):]
    scale, bias = rng.standard_normal(norm), rng.standard_normal(norm)
    ln = kernel("LayerNormalization", opset=17, outputs=3)
    f = lambda x_, s_, b_: ln(x_, s_, b_, axis=axis, stash_type=11)[0]  # noqa: E731
    _, mean, inv_std = ln(x, scale, bias, axis=axis, stash_type=11)
    dy = rng.standard_normal(shape)
    stats = (mean, inv_std) if saved else (None, None)
    grads = kernel("LayerNormGrad", GRAD_DOMAIN, 1, outputs=3)(dy, x, scale, *stats, axis=axis)
    for i, g in enumerate(grads):
        directional_check(f, [x, scale, bias], i, g, dy, rng)


# --- kernels: dropout -------------------------------------------------------------------------

def test_dropout_grad_kernel_matches_onnx_dropout(rng: np.random.Generator) -> None:
    x, ratio, on = rng.standard_normal((4, 5)), np.array(0.3), np.array(True)
    y, mask = kernel("Dropout", opset=13, outputs=2)(x, ratio, on, seed=7)
    f = lambda x_: kernel("Dropout", opset=13)(x_, ratio, on, seed=7)  # noqa: E731
    dy = rng.standard_normal(y.shape)
    dx = kernel("DropoutGrad", GRAD_DOMAIN, 1)(dy, mask, ratio, on)
    directional_check(f, [x], 0, dx, dy, rng)
    off = kernel("DropoutGrad", GRAD_DOMAIN, 1)(dy, np.ones_like(mask), ratio, np.array(False))
    np.testing.assert_array_equal(off, dy)


def test_seeded_dropout_forward_and_grad(rng: np.random.Generator) -> None:
    x = rng.standard_normal((64, 50))
    drop = kernel("SeededDropout", GRAD_DOMAIN, 1, outputs=2)
    y, mask = drop(x, np.array(0.25), np.array(3, np.int64), seed=11)
    np.testing.assert_allclose(y, np.where(mask, x / 0.75, 0), rtol=1e-15)
    assert abs(mask.mean() - 0.75) < 0.03
    f = lambda x_: drop(x_, np.array(0.25), np.array(3, np.int64), seed=11)[0]  # noqa: E731
    dy = rng.standard_normal(x.shape)
    dx = kernel("DropoutGrad", GRAD_DOMAIN, 1)(dy, mask, np.array(0.25))
    directional_check(f, [x], 0, dx, dy, rng)


def test_seeded_dropout_mask_is_a_function_of_seed_and_step() -> None:
    a = dropout_mask((100,), 0.5, seed=1, step=5)
    np.testing.assert_array_equal(a, dropout_mask((100,), 0.5, seed=1, step=5))
    assert (a != dropout_mask((100,), 0.5, seed=1, step=6)).any()
    assert (a != dropout_mask((100,), 0.5, seed=2, step=5)).any()


# --- rules end to end through training.autograd: emit -> infer shapes -> run in the Session --------

def one_op(op: str, feeds: dict[str, np.ndarray], opset: int = 17, outputs: int = 1, **attrs: Any) -> Model:
    """A model of one ``op`` node whose inputs are all graph inputs (so all can be perturbed)."""
    gb = GraphBuilder(op.lower(), opset=opset)
    outs = gb.op(op, *(gb.input(k, v.dtype, v.shape) for k, v in feeds.items()), outputs=outputs, **attrs)
    for o in [outs] if outputs == 1 else outs:
        gb.output(o)
    return gb.build()


def check_rule(build: Callable[[], Model], feeds: dict[str, np.ndarray], wrt: list[str],
               rng: np.random.Generator) -> Model:
    """Differentiate loss = sum(y * w) of the model's first output with the real engine; check the
    gradients' inferred shapes and their values against directional finite differences.
    Returns the model with the backward nodes appended."""
    model = with_weighted_loss(build(), feeds, outputs=[0])
    backward = copy.deepcopy(model)
    names = compute_gradients(backward, "loss", wrt)
    for k in wrt:
        assert tuple(backward.graph.type_of(names[k]).shape) == feeds[k].shape
    backward.graph.outputs = [Value(names[k]) for k in wrt]
    forward = Session(model)
    for k, g in zip(wrt, Session(backward).run(feeds)):
        f = lambda v, k=k: forward.run({**feeds, k: v}, ["loss"])[0]  # noqa: E731
        directional_check(f, [feeds[k]], 0, g, np.ones(()), rng, directions=2)
    return backward


def _emitted(model: Model) -> list[str]:
    """Op types of the backward nodes on the path to the first input (past the weighted loss)."""
    last = max(i for i, n in enumerate(model.graph.nodes) if n.name == "gc_loss")
    return [n.op_type for n in model.graph.nodes[last + 1:] if n.op_type not in ("Mul", "Cast", "Sum")]


@pytest.mark.parametrize("wrt", [["x", "w", "b"], ["w"], ["x"], ["b"]])
@pytest.mark.parametrize("case", ["groups", "depthwise", "same_upper", "1d", "dilation"])
def test_conv_rule(case: str, wrt: list[str], rng: np.random.Generator) -> None:
    xs, ws, attrs = CONV_CASES[case]
    feeds = {"x": rng.standard_normal(xs), "w": rng.standard_normal(ws), "b": rng.standard_normal(ws[0])}
    model = check_rule(lambda: one_op("Conv", feeds, **attrs), feeds, wrt, rng)
    assert ("ConvGradInput" in _emitted(model)) == ("x" in wrt)
    assert ("ConvGradWeight" in _emitted(model)) == ("w" in wrt)


def test_conv_rule_bias_only_at_old_opset(rng: np.random.Generator) -> None:
    xs, ws, attrs = CONV_CASES["basic"]
    feeds = {"x": rng.standard_normal(xs), "w": rng.standard_normal(ws), "b": rng.standard_normal(ws[0])}
    model = check_rule(lambda: one_op("Conv", feeds, opset=11, **attrs), feeds, ["b"], rng)
    assert "ReduceSum" in _emitted(model) and "ConvGradWeight" not in _emitted(model)


@pytest.mark.parametrize("with_indices", [False, True])
@pytest.mark.parametrize("case", ["k3s2p1", "ceil_pads", "dilation", "1d"])
def test_max_pool_rule(case: str, with_indices: bool, rng: np.random.Generator) -> None:
    shape, attrs = POOL_CASES[case]
    feeds = {"x": rng.standard_normal(shape)}
    model = check_rule(lambda: one_op("MaxPool", feeds, opset=19, outputs=1 + with_indices, **attrs),
                       feeds, ["x"], rng)
    assert ("MaxPoolGrad" if with_indices else "MaxPoolGradByMatch") in _emitted(model)


@pytest.mark.parametrize("count_include_pad", [0, 1])
@pytest.mark.parametrize("case", ["k3s2p1", "ceil_pads", "same_lower", "3d"])
def test_average_pool_rule(case: str, count_include_pad: int, rng: np.random.Generator) -> None:
    shape, attrs = POOL_CASES[case]
    feeds = {"x": rng.standard_normal(shape)}
    check_rule(lambda: one_op("AveragePool", feeds, opset=19, count_include_pad=count_include_pad, **attrs),
               feeds, ["x"], rng)


def test_global_average_pool_rule(rng: np.random.Generator) -> None:
    feeds = {"x": rng.standard_normal((2, 3, 5, 4))}
    check_rule(lambda: one_op("GlobalAveragePool", feeds), feeds, ["x"], rng)


@pytest.mark.parametrize("training_mode", [1, 0])
def test_batch_norm_rule(training_mode: int, rng: np.random.Generator) -> None:
    feeds = {"x": rng.standard_normal((4, 3, 3, 2)), "scale": rng.standard_normal(3),
             "bias": rng.standard_normal(3), "mean": rng.standard_normal(3), "var": rng.uniform(0.5, 2, 3)}
    outputs = 3 if training_mode else 1
    build = lambda: one_op("BatchNormalization", feeds, opset=15, outputs=outputs,  # noqa: E731
                           training_mode=training_mode, epsilon=1e-2)
    check_rule(build, feeds, ["x", "scale", "bias"], rng)
    check_rule(build, feeds, ["scale"], rng)


def test_batch_norm_training_updates_running_stats(rng: np.random.Generator) -> None:
    """The reference forward the rule relies on: batch statistics out, running stats updated."""
    x = rng.standard_normal((8, 2, 3))
    mean, var = np.zeros(2), np.ones(2)
    y, rm, rv = kernel("BatchNormalization", opset=15, outputs=3)(
        x, np.ones(2), np.zeros(2), mean, var, momentum=0.9, training_mode=1)
    np.testing.assert_allclose(y.mean(axis=(0, 2)), 0, atol=1e-12)
    np.testing.assert_allclose(rm, 0.1 * x.mean(axis=(0, 2)))
    np.testing.assert_allclose(rv, 0.9 + 0.1 * x.var(axis=(0, 2)))


@pytest.mark.parametrize("axis", [-1, 1])
def test_layer_norm_rule(axis: int, rng: np.random.Generator) -> None:
    x = rng.standard_normal((2, 3, 4))
    norm = x.shape[axis % 3:]
    feeds = {"x": x, "scale": rng.standard_normal(norm), "bias": rng.standard_normal(norm)}
    check_rule(lambda: one_op("LayerNormalization", feeds, axis=axis, stash_type=11),
               feeds, ["x", "scale", "bias"], rng)


def test_layer_norm_rule_reuses_saved_statistics(rng: np.random.Generator) -> None:
    """With Mean/InvStdDev outputs (float32 by the ONNX spec) the rule feeds them to the kernel,
    and the gradients equal those recomputing the statistics."""
    feeds = {"x": rng.standard_normal((4, 6)).astype(np.float32),
             "scale": rng.standard_normal(6).astype(np.float32), "bias": rng.standard_normal(6).astype(np.float32)}
    results = []
    for outputs in (1, 3):
        model = with_weighted_loss(one_op("LayerNormalization", feeds, outputs=outputs), feeds, outputs=[0])
        results.append(gradients(model, feeds, of="loss", wrt=["x", "scale", "bias"]))
        names = compute_gradients(model, "loss", ["x"])
        node = next(n for n in model.graph.nodes if n.op_type == "LayerNormGrad")
        assert len(node.inputs) == (5 if outputs == 3 else 3) and names["x"]
    for k in feeds:
        np.testing.assert_allclose(results[0][k], results[1][k], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("with_mask", [False, True])
def test_dropout_rule_training(with_mask: bool, rng: np.random.Generator) -> None:
    feeds = {"x": rng.standard_normal((5, 6)), "ratio": np.array(0.4), "training_mode": np.array(True)}
    model = check_rule(lambda: one_op("Dropout", feeds, opset=13, outputs=1 + with_mask, seed=3),
                       feeds, ["x"], rng)
    assert "DropoutGrad" in _emitted(model) and ("Dropout" in _emitted(model)) != with_mask


def test_dropout_rule_inference_mode_is_identity(rng: np.random.Generator) -> None:
    feeds = {"x": rng.standard_normal((3, 4))}
    model = check_rule(lambda: one_op("Dropout", feeds, opset=13), feeds, ["x"], rng)
    assert "DropoutGrad" not in _emitted(model)


def test_dropout_rule_without_mask_or_seed_is_refused(rng: np.random.Generator) -> None:
    from inference.errors import InvalidModelError
    feeds = {"x": rng.standard_normal((3, 4)), "ratio": np.array(0.5), "training_mode": np.array(True)}
    model = with_weighted_loss(one_op("Dropout", feeds, opset=13), feeds, outputs=[0])
    with pytest.raises(InvalidModelError, match="mask output or a seed"):
        compute_gradients(model, "loss", ["x"])


@pytest.mark.parametrize("legacy", [False, True])
def test_seeded_dropout_node_rule(legacy: bool, rng: np.random.Generator) -> None:
    """A Dropout converted by seeded_dropout_node trains with per-step masks and has a gradient."""
    feeds = {"x": rng.standard_normal((6, 7)), "step": np.array(4, np.int64)}

    def build() -> Model:
        if legacy:
            model = one_op("Dropout", {"x": feeds["x"]}, opset=10, ratio=0.3)
        else:
            model = one_op("Dropout", {"x": feeds["x"], "ratio": np.array(0.3)}, opset=13)
            model.graph.inputs.pop()  # ratio becomes an initializer
            model.graph.initializers["ratio"] = np.array(0.3)
        model.graph.nodes[-1] = seeded_dropout_node(model.graph.nodes[-1], "step", seed=9)
        model.graph.inputs.append(Value("step", None))
        model.opset_imports[GRAD_DOMAIN] = 1
        return model

    model = check_rule(build, feeds, ["x"], rng)
    assert _emitted(model)[-1] == "DropoutGrad"
    fwd = Session(build())
    y4 = fwd.run(feeds)[0]
    assert abs((y4 == 0).mean() - 0.3) < 0.15
    np.testing.assert_array_equal(y4, fwd.run(feeds)[0])
    assert (y4 != fwd.run({**feeds, "step": np.array(5, np.int64)})[0]).any()


def test_small_cnn_chains_every_rule(rng: np.random.Generator) -> None:
    """Conv -> BN(train) -> Relu -> MaxPool -> depthwise Conv -> AveragePool -> GlobalAveragePool
    -> Flatten -> LayerNorm -> Dropout (mask output): all rules composed, checked against FD."""
    feeds = {"x": rng.standard_normal((3, 2, 9, 9)), "w1": rng.standard_normal((4, 2, 3, 3)) * 0.5,
             "b1": rng.standard_normal(4), "gamma": rng.uniform(0.5, 1.5, 4), "beta": rng.standard_normal(4),
             "w2": rng.standard_normal((4, 1, 3, 3)), "ln_s": rng.standard_normal(4), "ln_b": rng.standard_normal(4)}
    stats = {"mean": np.zeros(4), "var": np.ones(4), "ratio": np.array(0.25), "train": np.array(True)}

    def build() -> Model:
        gb = GraphBuilder("cnn", opset=17)
        v = {k: gb.input(k, a.dtype, a.shape) for k, a in feeds.items()}
        c = {k: gb.const(a, k) for k, a in stats.items()}
        h = gb.op("Conv", v["x"], v["w1"], v["b1"], pads=[1, 1, 1, 1])
        h = gb.op("BatchNormalization", h, v["gamma"], v["beta"], c["mean"], c["var"], outputs=3,
                  training_mode=1)[0]
        h = gb.op("MaxPool", gb.op("Relu", h), kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)
        h = gb.op("Conv", h, v["w2"], group=4, pads=[1, 1, 1, 1], strides=[2, 1])
        h = gb.op("AveragePool", h, kernel_shape=[2, 2], pads=[0, 0, 1, 1])
        h = gb.op("Flatten", gb.op("GlobalAveragePool", h))
        h = gb.op("LayerNormalization", h, v["ln_s"], v["ln_b"], stash_type=11)
        gb.output(gb.op("Dropout", h, c["ratio"], c["train"], outputs=2, seed=5)[0])
        return gb.build()

    model = check_rule(build, feeds, list(feeds), rng)
    grad_nodes = [n for n in model.graph.nodes if n.domain == GRAD_DOMAIN]
    assert {"ConvGradInput", "ConvGradWeight", "BatchNormGrad", "MaxPoolGradByMatch", "AveragePoolGrad",
            "GlobalAveragePoolGrad", "LayerNormGrad", "DropoutGrad"} <= {n.op_type for n in grad_nodes}
    # each schema's shape rule, applied to its inputs' static types, predicts the run-time shapes
    predicted = {}
    for n in grad_nodes:
        rule = get_schema(n.op_type, GRAD_DOMAIN).shape_rule
        predicted.update(zip(n.outputs, rule(n, [model.graph.type_of(i) for i in n.inputs])))
    model.graph.outputs = [Value(name) for name in predicted]
    for name, value in zip(predicted, Session(model).run(feeds)):
        assert predicted[name].shape == value.shape and predicted[name].dtype == value.dtype, name


def test_float32_gradients_stay_float32(rng: np.random.Generator) -> None:
    feeds = {"x": rng.standard_normal((2, 3, 6, 6)).astype(np.float32),
             "w": rng.standard_normal((3, 1, 3, 3)).astype(np.float32)}
    gb = GraphBuilder("f32", opset=17)
    x, w = (gb.input(k, a.dtype, a.shape) for k, a in feeds.items())
    y = gb.op("MaxPool", gb.op("Conv", x, w, group=3, pads=[1, 1, 1, 1]), kernel_shape=[2, 2], strides=[2, 2])
    gb.output(gb.op("ReduceSum", gb.op("GlobalAveragePool", y), keepdims=0, outputs=["loss"]))
    grads = gradients(gb.build(), feeds, of="loss", wrt=["x", "w"])
    assert all(g.dtype == np.float32 and np.isfinite(g).all() for g in grads.values())
    assert grads["x"].shape == feeds["x"].shape and grads["w"].shape == feeds["w"].shape


def test_max_pool_grad_rejects_out_of_range_indices() -> None:
    from inference.errors import KernelError
    with pytest.raises(KernelError, match="outside"):
        kernel("MaxPoolGrad", GRAD_DOMAIN, 1)(np.ones((1, 1, 1, 1)), np.array([[[[4]]]]), np.zeros((1, 1, 2, 2)))


def test_layer_norm_rule_with_broadcast_scale(rng: np.random.Generator) -> None:
    """Scale (4,) and bias (1, 4) broadcast over normalized dims (3, 4): gradients summed back."""
    feeds = {"x": rng.standard_normal((2, 3, 4)), "scale": rng.standard_normal(4), "bias": rng.standard_normal((1, 4))}
    check_rule(lambda: one_op("LayerNormalization", feeds, axis=1, stash_type=11), feeds, ["x", "scale", "bias"], rng)
