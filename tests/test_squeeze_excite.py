"""``fuse_squeeze_excite`` and ``edgelearn::SqueezeExciteNHWC``: MobileNetV3's gates (and
EfficientNet-B0's SiLU / Sigmoid ones) as one node; the kernel against the four ops apart at one
and two threads (split steps included), the gates that stay apart, the saved and the
standard-ONNX forms, FLOPs and batch splitting."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from inference import Config, Predictor, zoo
from inference.errors import KernelError
from inference.kernels import squeeze_excite as se
from inference.onnx_export import model_to_proto
from inference.onnx_import import load_model
from inference.passes.squeeze_excite import fuse_squeeze_excite
from tests.conftest import run_as_standard_onnx

RTOL, ATOL = 1e-4, 1e-5
MOBILENET_V3 = dict(reduce_activation="Relu", activation="HardSigmoid", alpha=1 / 6, beta=0.5)
ACTIVATIONS = {
    "relu-hardsigmoid": MOBILENET_V3,
    "silu-sigmoid": dict(reduce_activation="Silu", activation="Sigmoid"),  # EfficientNet-B0's
    "clip-none": dict(reduce_activation="Clip", reduce_alpha=0.0, reduce_beta=6.0),
    "none-hardsigmoid-default": dict(activation="HardSigmoid", alpha=0.2, beta=0.5),
}
GATES = {  # n, h, w, c, r
    "mobilenet-28x28x72": (1, 28, 28, 72, 18),  # its pixels split at two threads, its products not
    "mobilenet-7x7x960": (1, 7, 7, 960, 240),  # pixels and products split
    "batch-3-odd": (3, 5, 9, 40, 10),
    "batch-2-deep": (2, 14, 14, 672, 168),
    "one-pixel": (1, 1, 1, 16, 4),
    "odd-channels": (1, 3, 3, 5, 3),
}


def _gate(rng, n, h, w, c, r, biases=True):
    return dict(x=rng.standard_normal((n, h, w, c)).astype(np.float32),
                w1=(rng.standard_normal((1, 1, c, r)) / np.sqrt(c)).astype(np.float32),
                b1=rng.standard_normal(r).astype(np.float32) if biases else None,
                w2=(rng.standard_normal((1, 1, r, c)) / np.sqrt(r)).astype(np.float32),
                b2=rng.standard_normal(c).astype(np.float32) if biases else None)


def _fast(attrs: dict):
    return se._binder(se.squeeze_excite)(**attrs)


@pytest.mark.parametrize("case", GATES)
@pytest.mark.parametrize("acts", ACTIVATIONS)
def test_kernel_matches_the_ops_apart(case, acts, threads):
    a = _gate(np.random.default_rng(0), *GATES[case])
    want = se.squeeze_excite_reference(**a, **ACTIVATIONS[acts])
    np.testing.assert_allclose(_fast(ACTIVATIONS[acts])(*a.values()), want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("case", ["mobilenet-28x28x72", "batch-2-deep"])
def test_in_place_over_its_input(case, threads):
    """Given X's own memory for Y (an arena slot where X dies), the result is the same."""
    from inference.kernels.arena_slot import arm

    a = _gate(np.random.default_rng(6), *GATES[case])
    want = se.squeeze_excite_reference(**a, **MOBILENET_V3)
    x = a["x"]
    arm(x)
    got = _fast(MOBILENET_V3)(*a.values())
    assert np.shares_memory(got, x)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_absent_biases_are_zero(threads):
    a = _gate(np.random.default_rng(1), *GATES["mobilenet-7x7x960"], biases=False)
    zeros = dict(a, b1=np.zeros(240, np.float32), b2=np.zeros(960, np.float32))
    np.testing.assert_allclose(_fast(MOBILENET_V3)(*a.values()), se.squeeze_excite_reference(**zeros, **MOBILENET_V3),
                               rtol=RTOL, atol=ATOL)


def test_nan_in_an_image_reaches_all_of_it_and_nothing_else(threads):
    """A NaN pixel makes its channel's mean NaN, so every gate of its image and every output there;
    the other image is untouched (as the ops apart compute it)."""
    a = _gate(np.random.default_rng(2), 2, 14, 14, 672, 168)
    a["x"][1, 3, 4, 100] = np.nan
    got = _fast(MOBILENET_V3)(*a.values())
    assert np.isnan(got[1]).all() and not np.isnan(got[0]).any()
    np.testing.assert_allclose(got, se.squeeze_excite_reference(**a, **MOBILENET_V3), rtol=RTOL, atol=ATOL)


def test_empty_batch():
    a = _gate(np.random.default_rng(3), 1, 7, 7, 32, 8)
    a["x"] = a["x"][:0]
    assert _fast(MOBILENET_V3)(*a.values()).shape == (0, 7, 7, 32)


@pytest.mark.parametrize("size, work, threads, align, want", [
    (960, 10 ** 6, 2, 16, [0, 480, 960]),
    (72, 56_448, 2, 16, [0, 32, 72]),  # at a multiple of 16
    (72, 1_296, 2, 16, [0, 72]),  # too little work to share
    (18, 10 ** 6, 2, 16, [0, 18]),  # fewer channels than a block
    (960, 10 ** 6, 1, 16, [0, 960]),
    (100, 10 ** 6, 3, 16, [0, 32, 64, 100]),
    (49, 47_040, 2, 1, [0, 24, 49]),  # a 7x7 map's pixels
])
def test_blocks(size, work, threads, align, want):
    assert se._cuts(size, work, threads, align).tolist() == want


@pytest.mark.parametrize("bad, where", [("w2", "W2"), ("b1", "B1"), ("x", "X")])
def test_shapes_that_do_not_chain_are_named(bad, where):
    a = _gate(np.random.default_rng(4), 1, 7, 7, 32, 8)
    a[bad] = a[bad][..., :-1]  # one channel short
    with pytest.raises(KernelError, match=rf"{se.OP}: shapes do not chain: .*{where} \("):
        _fast(MOBILENET_V3)(*a.values())


def test_non_float32_inputs_run_the_reference():
    a = {k: v.astype(np.float64) for k, v in _gate(np.random.default_rng(5), 1, 4, 4, 16, 4).items()}
    got = _fast(MOBILENET_V3)(*a.values())
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, se.squeeze_excite_reference(**a, **MOBILENET_V3), rtol=1e-12)


# -- the pass --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mobilenet_v3():
    proto = model_to_proto(zoo.mobilenet_v3_style(size=64))
    x = {"input": np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)}
    want = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, x)[0]
    return proto, x, want


def _count(model, op: str = se.OP) -> int:
    return sum(n.op_type == op for n in model.graph.nodes)


def test_mobilenet_v3_gates_all_fuse(mobilenet_v3, threads):
    proto, x, want = mobilenet_v3
    on = Predictor(Config(model_path=proto, num_threads=threads))
    off = Predictor(Config(model_path=proto, num_threads=threads, passes={"fuse_squeeze_excite": False}))
    assert _count(on.model) == 8 and _count(off.model) == 0  # its eight gates
    assert _count(on.model, "Mul") == 0 and _count(on.model, "AveragePoolNHWC") == 1  # the classifier's pool
    np.testing.assert_allclose(on.run(x)["logits"], want, rtol=RTOL, atol=1e-4)
    np.testing.assert_allclose(on.run(x)["logits"], off.run(x)["logits"], rtol=RTOL, atol=1e-4)


def _unfused(proto):
    """The model after the pipeline with the gates apart, and the pass still to run."""
    return Predictor(Config(model_path=proto, passes={"fuse_squeeze_excite": False})).model


def _first_gate(model):
    """(pool, reduction, expansion, Mul) of the model's first gate, apart."""
    g = model.graph
    pool = next(n for n in g.nodes if n.op_type == "AveragePoolNHWC")
    reduce_ = next(n for n in g.nodes if pool.outputs[0] in n.inputs)
    expand = next(n for n in g.nodes if reduce_.outputs[0] in n.inputs)
    mul = next(n for n in g.nodes if expand.outputs[0] in n.inputs)
    return pool, reduce_, expand, mul


def _graph_output(model, name: str) -> None:
    from inference.ir import Value

    model.graph.outputs.append(Value(name, model.graph.type_of(name)))


@pytest.mark.parametrize("change", ["gate-is-an-output", "reduction-read-twice", "pool-window-smaller",
                                    "pool-padded", "mul-of-another-map", "reduction-with-residual"])
def test_gates_that_stay_apart(mobilenet_v3, change):
    """Each change breaks the first gate's pattern only: the seven others still fuse."""
    model = _unfused(mobilenet_v3[0])
    pool, reduce_, expand, mul = _first_gate(model)
    if change == "gate-is-an-output":
        _graph_output(model, expand.outputs[0])
    elif change == "reduction-read-twice":
        _graph_output(model, reduce_.outputs[0])
    elif change == "pool-window-smaller":
        pool.attrs["kernel_shape"] = [k - 1 for k in pool.attrs["kernel_shape"]]
    elif change == "pool-padded":
        pool.attrs["pads"] = [1, 1, 1, 1]
    elif change == "mul-of-another-map":
        other = next(n for n in model.graph.nodes if n.outputs[0] == pool.inputs[0]).inputs[0]
        mul.inputs = [other if i == pool.inputs[0] else i for i in mul.inputs]
        model.graph.value_info.pop(mul.outputs[0], None)
    else:
        r = model.graph.type_of(reduce_.outputs[0]).shape[3]
        model.graph.initializers["residual"] = np.zeros((1, 1, 1, r), np.float32)
        reduce_.inputs = (reduce_.inputs + ["", ""])[:3] + ["residual"]
    assert fuse_squeeze_excite(model)
    assert _count(model) == 7
    assert [n.op_type for n in _first_gate(model)] == ["AveragePoolNHWC", "FusedConvNHWC", "FusedConvNHWC", "Mul"]


def test_saved_optimized_model_loads_and_runs_without_passes(mobilenet_v3, tmp_path):
    from edgelearn.cli import main

    proto, x, want = mobilenet_v3
    src, dst = tmp_path / "in.onnx", tmp_path / "out.onnx"
    onnx.save(proto, str(src))
    assert main(["optimize", str(src), "-o", str(dst)]) == 0
    saved = load_model(str(dst))
    assert _count(saved) == 8
    loaded = Predictor(Config(model_path=str(dst)))
    assert loaded.preoptimized and _count(loaded.model) == 8
    np.testing.assert_allclose(loaded.run(x)["logits"], want, rtol=RTOL, atol=1e-4)


def test_exports_as_standard_onnx(mobilenet_v3):
    proto, x, want = mobilenet_v3
    on = Predictor(Config(model_path=proto))
    np.testing.assert_allclose(run_as_standard_onnx(on.model, x)[0], want, rtol=RTOL, atol=1e-4)


def test_flops_and_batch_split_see_the_fused_gates(mobilenet_v3):
    from inference.batch_split import check_batch_split
    from inference.flops import model_flops

    on = Predictor(Config(model_path=mobilenet_v3[0])).model
    off = _unfused(mobilenet_v3[0])
    assert _count(on) == 8
    assert model_flops(on, 4) == model_flops(off, 4) and model_flops(on, 4)[1] == 0
    assert check_batch_split(on.graph).ok


def _efficientnet_b0_like(size: int = 32):
    """Two EfficientNet-B0 blocks: SiLU everywhere (Sigmoid and Mul, as exporters write it), gates
    reducing to a quarter of the block's input channels with SiLU and gating with Sigmoid."""
    from inference.builder import GraphBuilder
    from inference.zoo import BATCH, _classifier, _silu, _Weights

    b = GraphBuilder("efficientnet_b0_like", opset=17)
    w = _Weights(b, 0)
    x = _silu(b, w.bn(w.conv(b.input("input", np.float32, [BATCH, 3, size, size]), 3, 32, 3, 2), 32))
    cin = 32
    for e, c, k, stride in ((96, 24, 3, 2), (144, 40, 5, 1)):
        h = _silu(b, w.bn(w.conv(x, cin, e, 1), e))
        h = _silu(b, w.bn(w.conv(h, e, e, k, stride, group=e), e))
        g = _silu(b, w.conv(b.op("GlobalAveragePool", h), e, cin // 4, 1))
        h = b.op("Mul", h, b.op("Sigmoid", w.conv(g, cin // 4, e, 1)))
        x, cin = w.bn(w.conv(h, e, c, 1), c), c
    _classifier(w, x, cin, 10, 0.1)
    return b.build()


def test_efficientnet_gates_with_silu_and_sigmoid_fuse(threads):
    proto = model_to_proto(_efficientnet_b0_like())
    x = {"input": np.random.default_rng(7).standard_normal((3, 3, 32, 32)).astype(np.float32)}
    want = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, x)[0]
    on = Predictor(Config(model_path=proto, num_threads=threads))
    gates = [n for n in on.model.graph.nodes if n.op_type == se.OP]
    assert len(gates) == 2
    assert all((n.attrs["reduce_activation"], n.attrs["activation"]) == ("Silu", "Sigmoid") for n in gates)
    name = on.get_output_names()[0]
    np.testing.assert_allclose(on.run(x)[name], want, rtol=RTOL, atol=1e-4)
    np.testing.assert_allclose(run_as_standard_onnx(on.model, x)[0], want, rtol=RTOL, atol=1e-4)
