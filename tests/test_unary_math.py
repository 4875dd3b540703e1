"""Fast float32 elementwise math (``inference.kernels.unary_math``) against the reference ops:
special values, in place and not, one and two threads, other dtypes, and a model that replays."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from inference import Config, Predictor
from inference.errors import KernelError
from inference.kernel_replay import CAPTURE_AFTER
from inference.kernels import arena_slot, unary_math
from inference.ops.registry import lookup

OPSET = 17
_SPECIAL = [0.0, -0.0, 1e-45, -1e-45, 1e-40, -1e-40, 1.1754944e-38, -1.1754944e-38, 3.4e38, -3.4e38,
            np.inf, -np.inf, np.nan, 0.5, -0.5, 1.5, 2.5, -2.5, 1.0, -1.0, 0.3465, -0.3466, 0.625, -0.624,
            88.72, 88.73, 89.0, -87.4, -100.0, -103.97, -104.0, -105.0, 43.7, -43.7, 1e-4, -1e-4]
#: (op, attrs, max relative error against the reference): 0 means bitwise equal
_OPS = [("Abs", {}, 0), ("Neg", {}, 0), ("Sqrt", {}, 0), ("Reciprocal", {}, 0), ("Softsign", {}, 0),
        ("Floor", {}, 0), ("Ceil", {}, 0), ("Round", {}, 0),
        ("Tanh", {}, 4e-7), ("Exp", {}, 4e-7), ("Log", {}, 4e-7), ("Softplus", {}, 6e-7),
        ("Elu", {}, 5e-7), ("Elu", {"alpha": 0.5}, 5e-7), ("Selu", {}, 6e-7),
        ("Selu", {"alpha": 1.5, "gamma": 0.7}, 6e-7), ("Celu", {}, 6e-7), ("Celu", {"alpha": 2.0}, 6e-7),
        ("Celu", {"alpha": -0.5}, 6e-7)]
#: ops whose result at +-0 must keep the sign the reference gives
_SIGNED_ZEROS = {"Abs", "Neg", "Sqrt", "Reciprocal", "Softsign", "Floor", "Ceil", "Round", "Tanh", "Log", "Elu",
                 "Selu"}


@pytest.fixture(autouse=True)
def kernels_at_every_size(monkeypatch):
    """Tanh and Log hand large tensors to numpy's ufuncs: here the kernels take every size."""
    monkeypatch.setattr(unary_math, "NUMPY_ABOVE", 1 << 40)


def test_large_tanh_and_log_run_numpy_into_the_slot(monkeypatch):
    monkeypatch.setattr(unary_math, "NUMPY_ABOVE", 1000)
    x = _data(5000)
    for op, fn in (("Tanh", np.tanh), ("Log", np.log)):
        buf = x.copy()
        arena_slot.arm(buf)
        got = _fast(op)(buf)
        assert arena_slot.taken() and np.shares_memory(got, buf)
        with np.errstate(all="ignore"):
            np.testing.assert_array_equal(got, fn(x))


def _data(n: int = 70000, seed: int = 0) -> np.ndarray:
    """``n`` values: normal ones at a few scales, magnitudes spread over the float32 range, and the
    special values, shuffled (several chunks, so two threads split them)."""
    rng = np.random.default_rng(seed)
    k = (n - len(_SPECIAL)) // 3
    spread = np.exp(rng.uniform(np.log(1e-45), np.log(3e38), k)) * rng.choice([-1.0, 1.0], k)
    x = np.concatenate([rng.standard_normal(k) * 3, rng.standard_normal(n - 2 * k - len(_SPECIAL)) * 40, spread,
                        _SPECIAL]).astype(np.float32)
    return x[rng.permutation(x.size)].reshape(2, -1)


def _fast(op: str):
    return lookup(op, "", OPSET, "fast").fn


def _ref(op: str):
    return lookup(op, "", OPSET).fn


def _assert_matches(got: np.ndarray, want: np.ndarray, rtol: float, signed_zeros: bool) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan)
    g, w = got[~nan].astype(np.float64), want[~nan].astype(np.float64)
    if rtol == 0:
        assert np.array_equal(got[~nan].view(np.int32), want[~nan].view(np.int32))  # signs of zeros too
        return
    assert np.array_equal(np.isinf(g), np.isinf(w)) and np.array_equal(g[np.isinf(w)], w[np.isinf(w)])
    fin = np.isfinite(w)
    err = np.abs(g[fin] - w[fin])
    assert (err <= rtol * np.abs(w[fin]) + 1e-44).all(), float((err / np.maximum(np.abs(w[fin]), 1e-38)).max())
    if signed_zeros:
        zero = w == 0
        assert np.array_equal(np.signbit(g[zero]), np.signbit(w[zero]))


@pytest.mark.parametrize("op, attrs, rtol", _OPS, ids=[f"{o}{a or ''}" for o, a, _ in _OPS])
def test_fast_kernel_matches_the_reference(op, attrs, rtol, threads):
    x = _data()
    want = _ref(op)(x, **attrs)
    got = _fast(op)(x, **attrs)
    assert not np.shares_memory(got, x)
    _assert_matches(got, want, rtol, op in _SIGNED_ZEROS)
    assert np.array_equal(x, _data(), equal_nan=True)  # the input untouched


@pytest.mark.parametrize("op, attrs, rtol", _OPS, ids=[f"{o}{a or ''}" for o, a, _ in _OPS])
def test_in_place_in_the_arena_slot(op, attrs, rtol, threads):
    """Given the step's slot that is its input's own memory (an in-place plan), the kernel writes
    there and gives what it gives apart."""
    x = _data(seed=1)
    apart = _fast(op)(x, **attrs)
    buf = x.copy()
    arena_slot.arm(buf)
    try:
        got = _fast(op)(buf, **attrs)
    finally:
        taken = arena_slot.taken()
    assert taken and np.shares_memory(got, buf)
    assert np.array_equal(got.view(np.int32), apart.view(np.int32))
    _assert_matches(got, _ref(op)(x, **attrs), rtol, op in _SIGNED_ZEROS)


@pytest.mark.parametrize("n", [0, 1, 7, 2048, 2049, 16385])
def test_sizes_and_shapes(n, threads):
    """Lengths around the blocks and chunks, non-contiguous input, a 0-d tensor."""
    x = np.random.default_rng(n).standard_normal(2 * n).astype(np.float32)[::2].reshape(n, 1)
    for op in ("Exp", "Tanh", "Abs"):
        np.testing.assert_allclose(_fast(op)(x), _ref(op)(x), rtol=4e-7, atol=0)
    s = np.array(0.75, np.float32)
    assert _fast("Log")(s).shape == () and abs(float(_fast("Log")(s)) - np.log(0.75)) < 1e-7


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int32])
def test_other_dtypes_go_to_the_reference(dtype):
    x = (np.random.default_rng(0).standard_normal(100) * 4).astype(dtype)
    for op, attrs, _ in _OPS:
        if dtype == np.int32 and op not in ("Abs", "Neg"):
            continue
        got, want = _fast(op)(x, **attrs), _ref(op)(x, **attrs)
        assert got.dtype == want.dtype == dtype
        np.testing.assert_array_equal(got, want)


def test_celu_alpha_zero_is_the_references_error():
    with pytest.raises(KernelError):
        _fast("Celu")(np.ones(3, np.float32), alpha=0.0)


@pytest.mark.parametrize("exponent", [np.float32(2), np.float32(3), np.float32(1), np.float32(0), np.float32(-1),
                                      np.float32(0.5), np.int64(2), np.float64(0.5), np.int32(3), np.float32(1.7),
                                      np.float32(-0.5)])
@pytest.mark.parametrize("shape", [(), (1,), (1, 1)])
def test_pow_by_one_element(exponent, shape, threads):
    x = _data()
    y = np.array(exponent).reshape(shape)
    got, want = _fast("Pow")(x, y), _ref("Pow")(x, y)
    _assert_matches(got, want, 3e-7 if float(exponent) == 3 else 0, True)


def test_pow_broadcasting_exponent_goes_to_the_reference():
    x = _data(200)
    for y in (np.full((1, 100), 2, np.float32), np.full((1, 1, 1), 2, np.float32), np.float32([2, 3]).reshape(2, 1)):
        np.testing.assert_array_equal(_fast("Pow")(x, y), _ref("Pow")(x, y))
    xi = np.arange(-5, 5, dtype=np.int64)
    np.testing.assert_array_equal(_fast("Pow")(xi, np.int64(2)), _ref("Pow")(xi, np.int64(2)))


def test_accuracy_against_float64():
    """The bounds the module's docstring states, on values spread over the float32 range."""
    x = _data(400000, seed=3).reshape(-1)
    x64 = x.astype(np.float64)
    with np.errstate(all="ignore"):
        exact = {"Exp": np.exp(x64), "Log": np.log(x64), "Tanh": np.tanh(x64),
                 "Softplus": np.log1p(np.exp(-np.abs(x64))) + np.maximum(x64, 0),
                 "Elu": np.where(x64 > 0, x64, np.expm1(x64))}
    for op, want in exact.items():
        got = _fast(op)(x).astype(np.float64)
        normal = np.isfinite(want) & (np.abs(want) >= 1.2e-38) & (np.abs(want) <= 3.4e38)
        err = np.abs(got[normal] - want[normal]) / np.abs(want[normal])
        assert err.max() < 3e-7, (op, err.max())


def _model(opset: int = OPSET) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((32, 64)) / 4).astype(np.float32)
    w2 = (rng.standard_normal((64, 16)) / 8).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]),
             helper.make_node("Tanh", ["h"], ["t"]),
             helper.make_node("Elu", ["t"], ["e"], alpha=0.7),
             helper.make_node("Pow", ["e", "two"], ["p"]),
             helper.make_node("Softplus", ["p"], ["s"]),
             helper.make_node("Sqrt", ["s"], ["q"]),
             helper.make_node("Log", ["q"], ["l"]),
             helper.make_node("Selu", ["l"], ["u"]),
             helper.make_node("MatMul", ["u", "w2"], ["m"]),
             helper.make_node("Neg", ["m"], ["n"]),
             helper.make_node("Exp", ["n"], ["ex"]),
             helper.make_node("Reciprocal", ["ex"], ["r"]),
             helper.make_node("Softsign", ["r"], ["ss"]),
             helper.make_node("Celu", ["ss"], ["c"], alpha=1.3),
             helper.make_node("Abs", ["c"], ["y"])]
    inits = {"w1": w1, "w2": w2, "two": np.array([2.0], np.float32)}
    graph = helper.make_graph(nodes, "unary_math", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4, 32])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4, 16])],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("num_threads", [1, 2])
def test_model_of_these_ops_replays_and_matches_onnxruntime(num_threads):
    import onnxruntime as ort

    proto = _model()
    p = Predictor(Config(model_path=proto.SerializeToString(), num_threads=num_threads))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    for _ in range(CAPTURE_AFTER + 3):
        x = rng.standard_normal((4, 32)).astype(np.float32)
        np.testing.assert_allclose(p.run({"x": x})["y"], sess.run(None, {"x": x})[0], rtol=1e-4, atol=1e-5)
    assert "replayed" in p.replay_report(), p.replay_report()


def test_the_ops_take_the_fast_kernels():
    """Every op of the module is registered as a fast kernel at its reference's opset."""
    for op in ("Tanh", "Exp", "Log", "Sqrt", "Abs", "Neg", "Reciprocal", "Softplus", "Elu", "Selu", "Celu",
               "Softsign", "Floor", "Ceil", "Round", "Pow"):
        entry = lookup(op, "", OPSET, "fast")
        assert entry is not None and entry.fn.__module__ == unary_math.__name__, op
