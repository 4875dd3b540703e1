"""Sparse kernels (inference.kernels.sparse) against the reference ops, the session's choice of
them by weight sparsity, and a pruned model through Predictor against onnxruntime."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import inference.kernels  # noqa: F401  (registers the fast and sparse kernels)
from inference import Config, Predictor
from inference.builder import GraphBuilder
from inference.errors import KernelError
from inference.ir import Value
from inference.kernels import fused
from inference.kernels import sparse as S
from inference.ops.conv import conv as reference_conv
from inference.ops.matmul import gemm as reference_gemm
from inference.ops.matmul import matmul as reference_matmul
from inference.session import CONSTANT_WEIGHT_KINDS, Session

RNG = np.random.default_rng(0)
SPARSITIES = [0.0, 0.5, 0.9, 1.0]  # 100% dense ... all zero


def _weight(shape: tuple, zeros: float, empty_rows: int = 0, axis: int = 0) -> np.ndarray:
    """Random float32 weights with ``zeros`` of them zeroed at random and ``empty_rows`` whole
    output channels (slices along ``axis``) zeroed: rows of the CSR with no entries."""
    w = RNG.standard_normal(shape).astype(np.float32)
    w[RNG.random(shape) < zeros] = 0
    if empty_rows:
        idx = [slice(None)] * w.ndim
        idx[axis] = RNG.choice(shape[axis], empty_rows, replace=False)
        w[tuple(idx)] = 0
    return w


def _close(got: np.ndarray, want: np.ndarray) -> None:
    """rtol 1e-5 plus float32 rounding of the sum's magnitude (summation order differs from BLAS)."""
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * (float(np.abs(want).max(initial=0.0)) + 1.0))


# -- kernels against the reference ops ------------------------------------------------------------
@pytest.mark.parametrize("xshape,n", [((1, 64), 48), ((3, 17), 5), ((5, 40), 33), ((33, 70), 20),
                                      ((2, 3, 24), 16), ((24,), 7), ((0, 8), 4)])
@pytest.mark.parametrize("zeros", SPARSITIES)
def test_matmul_matches_reference(xshape, n, zeros):
    x = RNG.standard_normal(xshape).astype(np.float32)
    w = _weight((xshape[-1], n), zeros, empty_rows=min(2, n - 1), axis=1)
    _close(S.matmul(x, w), reference_matmul(x, w))


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (0.5, 2.0), (1.0, 0.0)])
def test_gemm_matches_reference(trans_b, alpha, beta):
    x = RNG.standard_normal((6, 30)).astype(np.float32)
    w = _weight((30, 12) if not trans_b else (12, 30), 0.8)
    c = RNG.standard_normal(12).astype(np.float32)
    got = S.gemm(x, w, c, alpha=alpha, beta=beta, transB=trans_b)
    _close(got, reference_gemm(x, w, c, alpha=alpha, beta=beta, transB=trans_b))


CONV_CASES = [  # (n, c, h, w, m, kernel, stride, pad, dilation)
    (1, 8, 9, 9, 12, (3, 3), 1, 1, 1),
    (2, 6, 13, 11, 10, (3, 3), 2, 1, 1),
    (2, 16, 10, 10, 20, (1, 1), 1, 0, 1),  # pointwise, two images: one row per plane
    (1, 8, 16, 16, 16, (1, 1), 2, 0, 1),   # strided 1x1
    (1, 4, 17, 17, 8, (3, 3), 1, 2, 2),    # dilated
    (1, 3, 20, 20, 6, (5, 5), 3, 2, 1),
    (2, 5, 7, 12, 9, (1, 3), 1, 0, 1),     # asymmetric kernel, no padding
    (1, 3, 6, 6, 4, (3, 3), 2, 1, 2),      # strided and dilated
]


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("zeros", SPARSITIES)
def test_conv_matches_reference(case, zeros):
    n, c, h, wd, m, k, s, p, d = case
    x = RNG.standard_normal((n, c, h, wd)).astype(np.float32)
    w = _weight((m, c) + k, zeros, empty_rows=2)
    b = RNG.standard_normal(m).astype(np.float32)
    attrs = dict(kernel_shape=list(k), strides=[s, s], pads=[p] * 4, dilations=[d, d])
    _close(S.conv(x, w, b, **attrs), reference_conv(x, w, b, **attrs))


def test_conv_auto_pad_same():
    x = RNG.standard_normal((1, 4, 11, 11)).astype(np.float32)
    w = _weight((6, 4, 3, 3), 0.9)
    _close(S.conv(x, w, None, auto_pad="SAME_UPPER", strides=[2, 2]),
           reference_conv(x, w, None, auto_pad="SAME_UPPER", strides=[2, 2]))


@pytest.mark.parametrize("activation,alpha,beta", [("", 0.0, 0.0), ("Relu", 0.0, 0.0), ("Clip", -0.5, 0.7),
                                                   ("LeakyRelu", 0.1, 0.0)])
def test_fused_ops_apply_the_epilogue(activation, alpha, beta):
    x = RNG.standard_normal((2, 8, 9, 9)).astype(np.float32)
    w = _weight((10, 8, 3, 3), 0.9)
    b = RNG.standard_normal(10).astype(np.float32)
    z = RNG.standard_normal((2, 10, 9, 9)).astype(np.float32)
    ep = dict(activation=activation, alpha=alpha, beta=beta)
    _close(S.fused_conv(x, w, b, z, pads=[1, 1, 1, 1], **ep),
           fused.fused_conv_reference(x, w, b, z, pads=[1, 1, 1, 1], **ep))
    xm, wm = RNG.standard_normal((7, 40)).astype(np.float32), _weight((40, 24), 0.9)
    bm, zm = RNG.standard_normal(24).astype(np.float32), RNG.standard_normal((7, 24)).astype(np.float32)
    _close(S.fused_matmul(xm, wm, bm, zm, **ep), fused.fused_matmul_reference(xm, wm, bm, zm, **ep))
    _close(S.fused_matmul(xm[:2], wm, bm, None, **ep), fused.fused_matmul_reference(xm[:2], wm, bm, None, **ep))


def test_residual_of_the_wrong_shape_is_named():
    x, w = RNG.standard_normal((1, 4, 5, 5)).astype(np.float32), _weight((6, 4, 3, 3), 0.9)
    with pytest.raises(KernelError, match=r"residual Z has shape \(1, 6, 4, 4\)"):
        S.fused_conv(x, w, None, np.zeros((1, 6, 4, 4), np.float32), pads=[1, 1, 1, 1])


def test_to_csr_rejects_a_matrix():
    with pytest.raises(KernelError, match=r"\(rows, C, kh, kw\), got shape \(3, 4\)"):
        S.to_csr(np.zeros((3, 4), np.float32))


# -- the session's choice ---------------------------------------------------------------------------
def _model(op: str, w: np.ndarray, weight_is_input: bool = False):
    b = GraphBuilder(op.lower())
    if op == "Conv":
        x = b.input("x", np.float32, ["n", w.shape[1], 8, 8])
        y = b.op("Conv", x, b.const(w, "w"), pads=[w.shape[2] // 2] * 4)
    else:
        x = b.input("x", np.float32, ["n", w.shape[0]])
        y = b.op(op, x, b.const(w, "w"))
    b.output(y, np.float32)
    if weight_is_input:  # an initializer a feed may override: not a constant
        b.graph.inputs.append(Value("w", b.graph.type_of("w")))
    return b.build()


def _kinds(model, kinds=CONSTANT_WEIGHT_KINDS) -> list[str]:
    return [s.kernel.kind for s in Session(model, kinds=kinds).steps]


@pytest.mark.parametrize("op,shape,threshold", [("MatMul", (64, 32), S.MATMUL_SPARSITY),
                                                ("Gemm", (64, 32), S.MATMUL_SPARSITY),
                                                ("Conv", (16, 8, 3, 3), S.CONV_SPARSITY),
                                                ("Conv", (16, 8, 1, 1), S.POINTWISE_SPARSITY)])
def test_session_picks_sparse_from_the_threshold(op, shape, threshold):
    size = int(np.prod(shape))
    at = _weight(shape, 0.0)
    at.reshape(-1)[RNG.permutation(size)[:int(np.ceil(threshold * size))]] = 0
    below = _weight(shape, 0.0)
    below.reshape(-1)[RNG.permutation(size)[:int(threshold * size) - 10]] = 0
    assert S.sparsity(at) >= threshold > S.sparsity(below)
    assert _kinds(_model(op, at)) == ["sparse"]
    assert _kinds(_model(op, below)) != ["sparse"]
    assert _kinds(_model(op, at, weight_is_input=True)) != ["sparse"]
    assert _kinds(_model(op, at), kinds=("fast", "reference")) != ["sparse"]  # sessions over live arrays
    S.use_sparse_kernels(False)
    try:
        assert _kinds(_model(op, at)) != ["sparse"]
    finally:
        S.use_sparse_kernels(True)


def test_weight_is_packed_once_when_the_session_plans(monkeypatch):
    w = _weight((64, 32), 0.95)
    session = Session(_model("MatMul", w), kinds=CONSTANT_WEIGHT_KINDS)
    assert session.steps[0].kernel.kind == "sparse"
    assert S.packed(w, "matmul") is S.packed(w, "matmul")

    def no_packing(*_a, **_k):
        raise AssertionError("packed again while running")

    monkeypatch.setattr(S, "to_csr", no_packing)
    x = RNG.standard_normal((3, 64)).astype(np.float32)
    for _ in range(2):
        _close(session.run({"x": x})[0], x @ w)


def test_wrong_input_shape_names_the_node():
    session = Session(_model("MatMul", _weight((64, 32), 0.95)), kinds=CONSTANT_WEIGHT_KINDS)
    with pytest.raises(KernelError, match=r"node MatMul_\d+ \(ai.onnx::MatMul.*float32\[2, 63\], float32\[64, 32\]"):
        session.run({"x": np.ones((2, 63), np.float32)})


# -- a pruned model through Predictor against onnxruntime ---------------------------------------------
def _pruned_digits_cnn() -> onnx.ModelProto:
    """Conv3x3(1->16) Relu, Conv3x3/2(16->32) 92% zeros, Relu, Conv1x1(32->32) 92% zeros, Relu,
    Flatten, Gemm(512->64) 92% zeros, Relu, Gemm(64->10) dense: random weights, pruned by magnitude."""
    rng = np.random.default_rng(1)

    def prune(w: np.ndarray, zeros: float) -> np.ndarray:
        w = w.astype(np.float32)
        w[np.abs(w) < np.quantile(np.abs(w), zeros)] = 0
        return w

    inits = {
        "w1": (rng.standard_normal((16, 1, 3, 3)) * 0.5).astype(np.float32), "b1": np.zeros(16, np.float32),
        "w2": prune(rng.standard_normal((32, 16, 3, 3)) * 0.3, 0.92), "b2": rng.standard_normal(32).astype(np.float32),
        "w3": prune(rng.standard_normal((32, 32, 1, 1)) * 0.3, 0.92),
        "w4": prune(rng.standard_normal((512, 64)) * 0.1, 0.92), "b4": rng.standard_normal(64).astype(np.float32),
        "w5": (rng.standard_normal((64, 10)) * 0.1).astype(np.float32), "b5": np.zeros(10, np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3"], ["c3"]),
        helper.make_node("Relu", ["c3"], ["r3"]),
        helper.make_node("Flatten", ["r3"], ["f"]),
        helper.make_node("Gemm", ["f", "w4", "b4"], ["g4"]),
        helper.make_node("Relu", ["g4"], ["r4"]),
        helper.make_node("Gemm", ["r4", "w5", "b5"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "pruned_digits", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 10])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(proto, full_check=True)
    return proto


@pytest.mark.parametrize("fusion", [True, False])
def test_pruned_model_matches_onnxruntime(fusion):
    ort = pytest.importorskip("onnxruntime")
    from sklearn.datasets import load_digits

    x = (load_digits().images[:200] / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    proto = _pruned_digits_cnn()
    pred = Predictor(Config(model_path=proto, fusion=fusion))
    kinds = {s.node.inputs[1]: s.kernel.kind for s in pred.session.steps if len(s.node.inputs) > 1}
    sparse_weights = sorted(name for name, kind in kinds.items() if kind == "sparse")
    assert sparse_weights == ["w2", "w3", "w4"], kinds  # the dense w1, w5 stay on BLAS
    want = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = pred.run({"x": x})["logits"]
    _close(got, want)
    assert (got.argmax(1) == want.argmax(1)).all()


def test_switched_off_predictor_stays_dense():
    S.use_sparse_kernels(False)
    try:
        pred = Predictor(Config(model_path=_pruned_digits_cnn()))
    finally:
        S.use_sparse_kernels(True)
    assert all(s.kernel.kind != "sparse" for s in pred.session.steps)
    x = np.random.default_rng(2).random((4, 1, 8, 8), np.float32)
    _close(pred.run({"x": x})["logits"], Predictor(Config(model_path=_pruned_digits_cnn())).run({"x": x})["logits"])
