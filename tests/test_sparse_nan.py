"""An inf or a NaN input through the sparse kernels (inference.kernels.sparse) as through the dense
product: 0 * inf and 0 * NaN are NaN, so a non-finite input makes NaN every output it meets through
a zero weight, which the loops skip (``sparse.zero_weight_nans`` adds those NaNs). Against the
reference ops, and a pruned model through Predictor against onnxruntime on a replayed run."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from inference import Config, Predictor
from inference.kernel_replay import CAPTURE_AFTER
from inference.kernels import sparse as S
from inference.onnx_import import load_model
from inference.ops.conv import conv as reference_conv
from inference.ops.matmul import gemm as reference_gemm
from inference.ops.matmul import matmul as reference_matmul
from inference.session import Session
from tests.test_sparse_kernels import CONV_CASES


def _weight(shape: tuple, zeros: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(shape).astype(np.float32)
    w[rng.random(shape) < zeros] = 0
    return w


def _planted(shape: tuple, seed: int, count: int = 4) -> np.ndarray:
    """Normal values with ``count`` each of NaN, +inf and -inf at random places (first and last too)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    flat = x.reshape(-1)
    places = rng.permutation(flat.size)[:3 * count]
    flat[places[:count]], flat[places[count:2 * count]], flat[places[2 * count:]] = np.nan, np.inf, -np.inf
    flat[0], flat[-1] = np.inf, np.nan
    return x


def _same(got: np.ndarray, want: np.ndarray) -> None:
    """NaN, +inf and -inf where ``want`` has them, finite values close."""
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want))
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want))
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("value,want", [(np.nan, [np.nan] * 4), (np.inf, [np.inf, np.nan, np.nan, np.nan]),
                                        (-np.inf, [-np.inf, np.nan, np.nan, np.nan])])
@pytest.mark.parametrize("rows", [1, S.GATHER_MAX_ROWS + 2])
def test_a_non_finite_input_meets_the_zero_weights(value, want, rows):
    """The example of the bug: only column 0 stores a weight at input 0; the others had read 1."""
    x = np.ones((rows, 64), np.float32)
    x[0, 0] = value
    w = np.zeros((64, 4), np.float32)
    w[0, 0] = 1.0
    w[1:, :] = np.eye(63, 4, dtype=np.float32)
    with np.errstate(all="ignore"):
        dense = reference_matmul(x, w)
    np.testing.assert_array_equal(dense[0], np.float32(want))
    got = S.matmul(x, w)
    _same(got, dense)
    np.testing.assert_array_equal(got[1:], dense[1:])  # finite rows untouched


@pytest.mark.parametrize("xshape,n", [((1, 64), 48), ((3, 17), 5), ((5, 40), 33), ((33, 70), 20), ((2, 3, 24), 16),
                                      ((24,), 7)])
@pytest.mark.parametrize("zeros", [0.5, 0.9, 1.0])
def test_matmul(xshape, n, zeros):
    x, w = _planted(xshape, seed=n, count=1), _weight((xshape[-1], n), zeros, seed=n)
    with np.errstate(all="ignore"):
        want = reference_matmul(x, w)
    _same(S.matmul(x, w), want)


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm(trans_b):
    x = _planted((6, 30), seed=3, count=1)
    x[4] = np.nan  # a whole row
    w = _weight((30, 12) if not trans_b else (12, 30), 0.8, seed=4)
    c = np.arange(12, dtype=np.float32)
    with np.errstate(all="ignore"):
        want = reference_gemm(x, w, c, alpha=0.5, transB=trans_b)
    _same(S.gemm(x, w, c, alpha=0.5, transB=trans_b), want)


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("zeros", [0.7, 1.0])
def test_conv(case, zeros):
    """Non-finite values at the borders too: a zero pad is no input (a pad times a weight is 0)."""
    n, c, h, wd, m, k, s, p, d = case
    x = _planted((n, c, h, wd), seed=h + m, count=2)
    w = _weight((m, c) + k, zeros, seed=c + m)
    b = np.linspace(-1, 1, m, dtype=np.float32)
    attrs = dict(kernel_shape=list(k), strides=[s, s], pads=[p] * 4, dilations=[d, d])
    with np.errstate(all="ignore"):
        want = reference_conv(x, w, b, **attrs)
    assert np.isnan(want).any() and np.isfinite(want).any()
    _same(S.conv(x, w, b, **attrs), want)


@pytest.mark.parametrize("rows", [2, S.GATHER_MAX_ROWS + 2])
def test_the_largest_finite_values_are_finite(rows):
    """float32's max times a zero weight is 0, not NaN."""
    big = np.finfo(np.float32).max
    x = np.ones((rows, 40), np.float32)
    x[:, 0], x[:, 39] = big, -big
    w = _weight((40, 8), 0.5, seed=5)
    w[[0, 39]] = 0
    got = S.matmul(x, w)
    assert np.isfinite(got).all()
    _same(got, reference_matmul(x, w))


# -- a pruned model through Predictor, replayed -----------------------------------------------------
def _pruned_pointwise_model() -> onnx.ModelProto:
    """Conv1x1(16->32) 92% zeros, Flatten, Gemm(512->24) 92% zeros: both kernels a kernel replay
    repeats at batch 1-3 (a kxk convolution's phase split and crop, and a matrix product's
    transposes at more rows, are numpy's work: not replayed). Both outputs are the graph's."""
    rng = np.random.default_rng(7)

    def prune(w: np.ndarray, zeros: float) -> np.ndarray:
        w = w.astype(np.float32)
        w[np.abs(w) < np.quantile(np.abs(w), zeros)] = 0
        return w

    inits = {"w1": prune(rng.standard_normal((32, 16, 1, 1)), 0.92), "b1": rng.standard_normal(32).astype(np.float32),
             "w2": prune(rng.standard_normal((512, 24)), 0.92), "b2": rng.standard_normal(24).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c"]),
             helper.make_node("Flatten", ["c"], ["f"]),
             helper.make_node("Gemm", ["f", "w2", "b2"], ["g"])]
    graph = helper.make_graph(
        nodes, "pruned_pointwise", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16, 4, 4])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, ["n", 32, 4, 4]),
         helper.make_tensor_value_info("g", TensorProto.FLOAT, ["n", 24])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(proto, full_check=True)
    return proto


def test_pruned_model_gives_the_dense_nans_on_a_replayed_run():
    proto = _pruned_pointwise_model()
    pred = Predictor(Config(model_path=proto))
    assert sorted(s.node.inputs[1] for s in pred.session.steps if s.kernel.kind == "sparse") == ["w1", "w2"]
    rng = np.random.default_rng(8)
    for _ in range(CAPTURE_AFTER + 2):
        pred.run({"x": rng.standard_normal((2, 16, 4, 4)).astype(np.float32)})
    before = pred.replay_report()
    assert "replayed (" in before, before
    x = rng.standard_normal((2, 16, 4, 4)).astype(np.float32)
    x[0, 3, 1, 2] = np.nan  # sample 0: every channel of its pixel NaN, then every logit
    x[1, 5, 2, 0] = np.inf  # sample 1: inf through the stored weights, NaN through the zeros
    got = pred.run({"x": x})
    after = pred.replay_report()
    assert after != before and "replayed (" in after, (before, after)  # this run was a replay
    with np.errstate(all="ignore"):
        want = dict(zip(["c", "g"], Session(load_model(proto), kinds=("reference",)).run({"x": x})))
    try:
        import onnxruntime as ort
    except ImportError:
        ort = None
    if ort is not None:
        session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        for name, value in zip(["c", "g"], session.run(["c", "g"], {"x": x})):
            _same(value, want[name])  # the reference's pattern is onnxruntime's
    c = want["c"]
    assert np.isnan(c[0, :, 1, 2]).all() and np.isinf(c[1, :, 2, 0]).any() and np.isnan(c[1, :, 2, 0]).any()
    for name in ("c", "g"):
        _same(got[name], want[name])
