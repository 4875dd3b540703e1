"""Half-precision models (float16, bfloat16 throughout) run widened to float32: the same kernels
and fusions as their float32 twins, rounded at the outputs, the interface unchanged."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto

from inference import Config, Predictor, save_model, zoo
from inference.builder import GraphBuilder
from edgelearn.cli import main
from inference.ir import Graph, Model, Node, TensorType, Value
from inference.kernels.cast import fast_cast
from inference.onnx_export import model_to_proto
from tests.conftest import count_step_calls

HALF = {"float16": (np.float16, TensorProto.FLOAT16), "bfloat16": (ml_dtypes.bfloat16, TensorProto.BFLOAT16)}


def as_half(model: Model, dtype=np.float16) -> Model:
    return zoo.with_float_type(model, dtype)


def widened_twin(half: Model) -> Model:
    """The float32 model computing exactly what ``half`` widened does: its weights upcast."""
    return zoo.with_float_type(half, np.float32)


def _run(model, feeds: dict, **config) -> tuple[Predictor, list[np.ndarray]]:
    p = Predictor(Config(model_path=model_to_proto(model) if isinstance(model, Model) else model, **config))
    out = p.run(feeds)
    return p, [out[n] for n in p.get_output_names()]


CASES = {
    "mobilenet_v2": (lambda: zoo.mobilenet_v2(size=64, classes=10), (1, 3, 64, 64)),
    "transformer": (lambda: zoo.transformer_encoder(seq=16, dim=32, heads=2, layers=2, ffn=64), (2, 16, 32)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_float16_model_runs_its_float32_twin_rounded(name):
    build, shape = CASES[name]
    proto = model_to_proto(as_half(build()))
    onnx.checker.check_model(proto)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float16)
    feeds = {proto.graph.input[0].name: x}
    p, (got,) = _run(proto, feeds)
    q, (twin,) = _run(widened_twin(as_half(build())), {proto.graph.input[0].name: x.astype(np.float32)})
    assert got.dtype == np.float16 and got.shape == twin.shape
    np.testing.assert_array_equal(got, twin.astype(np.float16))
    g = p.model.graph
    assert not any(a.dtype == np.float16 for a in g.initializers.values())  # widened once, at load
    hist = g.op_histogram()
    assert hist.pop("Cast") == 2 and hist == q.model.graph.op_histogram()  # the twin's fusions, and two Casts
    (peer,) = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    scale = float(np.abs(twin).max())
    np.testing.assert_allclose(got.astype(np.float32), peer.astype(np.float32), atol=2e-2 * scale)


def test_switched_off_each_op_rounds_to_half():
    proto = model_to_proto(as_half(zoo.resnet8_cifar()))
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float16)
    feeds = {proto.graph.input[0].name: x}
    p, (half,) = _run(proto, feeds, passes={"widen_float16": False})
    _, (wide,) = _run(proto, feeds)
    assert any(a.dtype == np.float16 for a in p.model.graph.initializers.values())
    assert half.dtype == wide.dtype == np.float16
    assert not np.array_equal(half, wide)  # rounded op by op, it is another computation
    np.testing.assert_allclose(half.astype(np.float32), wide.astype(np.float32),
                               atol=2e-2 * float(np.abs(wide).max()))


@pytest.mark.parametrize("kind", list(HALF))
def test_interface_keeps_its_types_and_names(kind):
    """A half input passed through, a half output other nodes also read, a constant half output
    read inside: each comes out as the graph declares it, computed in float32."""
    dtype, elem = HALF[kind]
    rng = np.random.default_rng(2)
    w, c = rng.standard_normal((8, 8)).astype(dtype), rng.standard_normal(8).astype(dtype)
    b = GraphBuilder("interface", opset=17)
    x = b.input("x", dtype, ["batch", 8])
    b.op("Relu", b.op("MatMul", x, b.const(w, "w")), outputs=["y"])
    b.op("Add", b.op("Mul", "y", "y"), b.const(c, "c"), outputs=["z"])
    for name in ("x", "y", "z", "c"):
        b.output(name, dtype, ["batch", 8] if name != "c" else [8])
    model = b.build()
    feed = rng.standard_normal((3, 8)).astype(dtype)
    p, (x_out, y, z, c_out) = _run(model, {"x": feed})
    assert [a.dtype for a in (x_out, y, z, c_out)] == [np.dtype(dtype)] * 4
    np.testing.assert_array_equal(x_out, feed)
    np.testing.assert_array_equal(c_out, c)
    y32 = np.maximum(feed.astype(np.float32) @ w.astype(np.float32), 0)
    np.testing.assert_allclose(y.astype(np.float32), y32.astype(dtype).astype(np.float32), rtol=1e-5, atol=1e-5)
    z32 = y32 * y32 + c.astype(np.float32)  # z reads y before its rounding
    np.testing.assert_allclose(z.astype(np.float32), z32.astype(dtype).astype(np.float32),
                               rtol=2 ** -7, atol=1e-2)
    assert [str(v.type) for v in p.model.graph.outputs] == [str(v.type) for v in model.graph.outputs]


def _branch(op: str, reads: str) -> Graph:
    return Graph(nodes=[Node(op, [reads], ["branch"])], outputs=[Value("branch", TensorType(TensorProto.FLOAT16))],
                 name=f"{op}_branch")


def test_casts_constants_and_branches_widen():
    """A model that keeps float32 at its boundary and one op inside (Casts to half and back), makes
    half constants from a shape and branches on a condition: all of it float32 inside, the Casts
    between float32 and half gone, the outputs as declared."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((6, 6)).astype(np.float16)
    b = GraphBuilder("casts", opset=17)
    x = b.input("x", np.float32, ["batch", 6])
    flag = b.input("flag", np.bool_, [])
    h = b.op("MatMul", b.op("Cast", x, to=TensorProto.FLOAT16), b.const(w, "w"))
    kept = b.op("Softmax", b.op("Cast", h, to=TensorProto.FLOAT), axis=-1)  # an op a converter kept in float32
    h = b.op("Add", h, b.op("Cast", kept, to=TensorProto.FLOAT16))
    n = b.op("Cast", b.op("Shape", x, start=0, end=1), to=TensorProto.FLOAT16)  # the batch, as half
    half = b.op("ConstantOfShape", b.op("Shape", h), value=np.array([0.5], np.float16))
    b.op("Mul", b.op("Add", h, half), n, outputs=["scaled"])
    picked = b.op("If", flag, then_branch=_branch("Relu", "scaled"), else_branch=_branch("Neg", "scaled"))
    b.op("Cast", picked, to=TensorProto.FLOAT, outputs=["y"])
    b.output("y", np.float32, ["batch", 6])
    model = b.build()
    onnx.checker.check_model(model_to_proto(model))
    feed = rng.standard_normal((4, 6)).astype(np.float32)
    product = feed @ w.astype(np.float32)
    e = np.exp(product - product.max(-1, keepdims=True))
    expect = (product + e / e.sum(-1, keepdims=True) + 0.5) * 4
    for on in (True, False):
        p, (y,) = _run(model, {"x": feed, "flag": np.array(on)})
        assert y.dtype == np.float32
        np.testing.assert_allclose(y, np.maximum(expect, 0) if on else -expect, rtol=1e-5, atol=1e-5)
    g = p.model.graph
    assert not any(a.dtype == np.float16 for a in g.initializers.values())
    casts = [n for n in g.nodes if n.op_type == "Cast"]  # the batch's, from int64; the rest were float32 to float32
    assert len(casts) == 1 and casts[0].attrs["to"] == TensorProto.FLOAT, g.op_histogram()


def test_optimized_half_model_saves_and_runs_anywhere(tmp_path):
    """``edgelearn optimize`` keeps the half interface; onnx.checker and onnxruntime accept its
    standard form, which computes what our runtime does, and both files reload in ours."""
    model = as_half(zoo.transformer_encoder(seq=8, dim=16, heads=2, layers=1, ffn=32))
    src = tmp_path / "half.onnx"
    save_model(model, src)
    x = np.random.default_rng(4).standard_normal((1, 8, 16)).astype(np.float16)
    feeds = {model.graph.inputs[0].name: x}
    _, (want,) = _run(str(src), feeds)
    for flags in ([], ["--keep-standard"]):
        dst = str(tmp_path / f"opt{len(flags)}.onnx")
        assert main(["optimize", str(src), "-o", dst, *flags]) == 0
        onnx.checker.check_model(dst)
        _, (again,) = _run(dst, feeds)
        assert again.dtype == np.float16
        np.testing.assert_array_equal(again, want)
    (peer,) = ort.InferenceSession(dst, providers=["CPUExecutionProvider"]).run(None, feeds)
    assert peer.dtype == np.float16
    np.testing.assert_allclose(peer.astype(np.float32), want.astype(np.float32), rtol=2 ** -9, atol=2e-3)


@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_precision_converts_a_half_model(precision):
    """``Config(precision=...)`` converts the widened model: a half model quantizes to the int8
    kernels as its float32 twin does, computing what the twin's conversion computes."""
    x = np.random.default_rng(5).random((4, 3, 32, 32)).astype(np.float16)
    extra = {"calibration_data": x} if precision == "int8" else {}
    p, (got,) = _run(model_to_proto(as_half(zoo.resnet8_cifar())), {"input": x}, precision=precision, **extra)
    extra = {"calibration_data": x.astype(np.float32)} if precision == "int8" else {}
    q, (twin,) = _run(model_to_proto(widened_twin(as_half(zoo.resnet8_cifar()))), {"input": x.astype(np.float32)},
                      precision=precision, **extra)
    assert got.dtype == np.float16
    hist = p.model.graph.op_histogram()
    assert hist.pop("Cast") == 2 and hist == q.model.graph.op_histogram()
    np.testing.assert_array_equal(got, twin.astype(np.float16))


def _random_float32_bits(n: int) -> np.ndarray:
    """Random float32 bit patterns (every exponent: subnormals, overflow past float16's range,
    NaNs) and the values at float16's edges."""
    edges = np.array([0.0, -0.0, np.inf, -np.inf, 65504, 65519.99, 65520, -65520, 2.0 ** -24, 2.0 ** -25,
                      2.0 ** -25 * 1.0001, 2.0 ** -14, 1 + 2.0 ** -11, 1 + 3 * 2.0 ** -11], np.float32)
    bits = np.random.default_rng(6).integers(0, 2 ** 32, n, dtype=np.uint64).astype(np.uint32)
    return np.concatenate([edges, bits.view(np.float32)])


def _same_bits_or_both_nan(got: np.ndarray, want: np.ndarray) -> None:
    nan = np.isnan(want.astype(np.float32))
    assert np.array_equal(np.isnan(got.astype(np.float32)), nan)
    np.testing.assert_array_equal(got[~nan].view(np.uint16), want[~nan].view(np.uint16))


def test_half_casts_are_numpys_and_ml_dtypes_bit_for_bit():
    every_half = np.arange(2 ** 16, dtype=np.uint16).view(np.float16).reshape(256, 256)
    got = fast_cast(every_half, to=TensorProto.FLOAT)
    assert got.dtype == np.float32 and got.shape == (256, 256)
    np.testing.assert_array_equal(got, every_half.astype(np.float32))
    every_bfloat16 = np.arange(2 ** 16, dtype=np.uint16).view(ml_dtypes.bfloat16)
    np.testing.assert_array_equal(fast_cast(every_bfloat16, to=TensorProto.FLOAT), every_bfloat16.astype(np.float32))
    x = _random_float32_bits(1 << 20)
    with np.errstate(over="ignore", invalid="ignore"):
        _same_bits_or_both_nan(fast_cast(x, to=TensorProto.FLOAT16), x.astype(np.float16))
        _same_bits_or_both_nan(fast_cast(x, to=TensorProto.BFLOAT16), x.astype(ml_dtypes.bfloat16))
        strided = x[: 2 * 4096].reshape(64, 128)[:, ::2]  # a view: converted as its values
        _same_bits_or_both_nan(fast_cast(strided, to=TensorProto.FLOAT16), strided.astype(np.float16))


def test_a_half_model_replays():
    """Its Casts in and out are numba kernels, so a run of a known shape is a replay."""
    proto = model_to_proto(as_half(zoo.mobilenet_v2(size=32, classes=10)))
    p = Predictor(Config(model_path=proto))
    x = np.random.default_rng(7).standard_normal((1, 3, 32, 32)).astype(np.float16)
    want = [p.run({"input": x})["logits"] for _ in range(3)][0]
    calls = count_step_calls(p)
    np.testing.assert_array_equal(p.run({"input": x})["logits"], want)
    assert calls == [0], p.replay_report()


@pytest.mark.parametrize("name", ["gpt", "encoder"])
def test_torch_half_exports_fuse_as_their_float32_ones(name):
    """torch.onnx's exports of ``module.half()``: GELU written out with float16 constants (1.4140625
    for sqrt 2; the tanh form's 0.0447 and 0.798), LayerNorms, attention, an int64 or a float16
    input. Widened, each fuses as its float32 export does and computes torch's float32 result to
    float16's precision."""
    torch = pytest.importorskip("torch")
    from benchmarks.torch_models import Encoder, Gpt, Size, encoder_feeds, export, gpt_feeds, run_torch

    size = Size(dim=32, heads=2, ffn=64, layers=2, vocab=100, max_positions=64)
    torch.manual_seed(0)
    module = (Gpt if name == "gpt" else Encoder)(size).eval()
    rng = np.random.default_rng(8)
    feeds = gpt_feeds(rng, 2, 16, size) if name == "gpt" else encoder_feeds(rng, 2, 16, size)
    full = Predictor(Config(model_path=export(module, feeds, 17)))
    want = run_torch(module, feeds)
    half_feeds = {k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in feeds.items()}
    half = Predictor(Config(model_path=export(module.half(), half_feeds, 17)))
    got = half.run(half_feeds)["y"]
    assert got.dtype == np.float16
    hist, full_hist = half.model.graph.op_histogram(), full.model.graph.op_histogram()
    widening_casts = len([v for v in half_feeds.values() if v.dtype == np.float16]) + 1  # and the output's
    assert hist.pop("Cast") == full_hist.pop("Cast", 0) + widening_casts
    assert hist == full_hist
    np.testing.assert_allclose(got.astype(np.float32), want, atol=2e-2 * float(np.abs(want).max()))
