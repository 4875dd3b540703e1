"""``fuse_inverted_residual`` and ``edgelearn::InvertedResidualNHWC``: MobileNetV2's blocks as one
node, run a band of rows at a time; outputs unchanged against the convolutions apart, at one and
two threads, through the ring's wrap-around and the stages-apart path; the cases that stay apart;
the standard-ONNX export."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from inference import Config, Predictor, zoo
from inference.builder import GraphBuilder
from inference.errors import KernelError
from inference.kernels import inverted_residual as ir
from inference.onnx_export import model_to_proto
from inference.passes import layout, optimize
from inference.session import CONSTANT_WEIGHT_KINDS, Session
from tests.conftest import run_as_standard_onnx

RTOL, ATOL = 1e-4, 1e-5
CLIP6 = dict(activation="Clip", alpha=0.0, beta=6.0)


def _block(rng, n, h, w, cin, e, m, stride, residual, depthwise_act="Clip", pads=None, k=3):
    """Inputs and attributes of one block (``e`` None: no expansion; ``k`` the depthwise's size)."""
    c = cin if e is None else e
    pads = pads or (k // 2,) * 4
    arrays = dict(
        x=rng.standard_normal((n, h, w, cin)).astype(np.float32),
        w1=None if e is None else (rng.standard_normal((1, 1, cin, c)) / np.sqrt(cin)).astype(np.float32),
        b1=None if e is None else rng.standard_normal(c).astype(np.float32),
        wd=(rng.standard_normal((k, k, 1, c)) / k).astype(np.float32), bd=rng.standard_normal(c).astype(np.float32),
        w2=(rng.standard_normal((1, 1, c, m)) / np.sqrt(c)).astype(np.float32), b2=rng.standard_normal(m).astype(np.float32))
    attrs = dict(strides=[stride, stride], pads=list(pads), expand_activation="Clip", expand_alpha=0.0,
                 expand_beta=6.0, depthwise_activation=depthwise_act, depthwise_alpha=0.0, depthwise_beta=6.0)
    oh = (h + pads[0] + pads[2] - k) // stride + 1
    ow = (w + pads[1] + pads[3] - k) // stride + 1
    arrays["z"] = rng.standard_normal((n, oh, ow, m)).astype(np.float32) if residual else None
    return arrays, attrs


BLOCKS = {  # n, h, w, cin, expanded (None: none), m, stride, residual
    "mobilenet-block-2": (1, 28, 28, 16, 96, 24, 2, False),
    "residual": (1, 14, 14, 24, 144, 24, 1, True),
    "no-expansion": (1, 16, 16, 32, None, 16, 1, False),
    "batch-3-odd-map": (3, 9, 5, 8, 20, 7, 2, False),
    "narrow-tiles": (2, 13, 11, 8, 40, 40, 1, True),
    "7x7-deep": (1, 7, 7, 160, 960, 160, 1, True),
}


@pytest.mark.parametrize("case", BLOCKS)
@pytest.mark.parametrize("constant", [True, False], ids=["packed", "fast"])
@pytest.mark.parametrize("k", [3, 5], ids=["3x3", "5x5"])
def test_kernel_matches_the_stages_apart(case, constant, k, threads):
    arrays, attrs = _block(np.random.default_rng(3), *BLOCKS[case], k=k)
    want = ir.inverted_residual_reference(**arrays, **attrs)
    got = ir._binder(ir.inverted_residual, constant)(**attrs)(*arrays.values())
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("band_bytes", [1, 3 * 1024, 40 * 1024])
def test_ring_wraps_around_and_bands_of_any_height(monkeypatch, band_bytes, threads):
    """Small rings: expanded rows wrap around the ring's end mid-band; one-row bands."""
    monkeypatch.setattr(ir, "BAND_BYTES", band_bytes)
    monkeypatch.setattr(ir, "MIN_BAND_PIXELS", 1)
    for stride, k in ((1, 3), (2, 3), (1, 5), (2, 5)):
        arrays, attrs = _block(np.random.default_rng(stride), 2, 17, 6, 8, 24, 8, stride, stride == 1, k=k)
        got = ir._binder(ir.inverted_residual, True)(**attrs)(*arrays.values())
        np.testing.assert_allclose(got, ir.inverted_residual_reference(**arrays, **attrs), rtol=RTOL, atol=ATOL)


def test_non_clamp_depthwise_activation_and_uneven_pads(threads):
    arrays, attrs = _block(np.random.default_rng(5), 1, 10, 12, 8, 16, 8, 2, False, depthwise_act="HardSwish",
                           pads=(1, 0, 0, 1))
    got = ir._binder(ir.inverted_residual, True)(**attrs)(*arrays.values())
    np.testing.assert_allclose(got, ir.inverted_residual_reference(**arrays, **attrs), rtol=RTOL, atol=ATOL)


def test_absent_biases_are_zero(threads):
    arrays, attrs = _block(np.random.default_rng(6), *BLOCKS["residual"])
    arrays.update(b1=None, bd=None, b2=None)
    got = ir._binder(ir.inverted_residual, True)(**attrs)(**arrays)
    np.testing.assert_allclose(got, ir.inverted_residual_reference(**arrays, **attrs), rtol=RTOL, atol=ATOL)
    with pytest.raises(KernelError, match="projection weight W2 .* required"):
        ir._binder(ir.inverted_residual, True)(**attrs)(arrays["x"], arrays["w1"], None, arrays["wd"])


@pytest.mark.parametrize("ratio,heavy", [(0.0, True), (float("inf"), False)])
@pytest.mark.parametrize("case", ["residual", "no-expansion"])
def test_weight_heavy_blocks_at_two_threads(monkeypatch, two_threads, ratio, heavy, case):
    """At 2 threads a block whose weights outweigh its rows splits by expanded channels (with an
    expansion) or runs its stages apart (without): same outputs either way."""
    monkeypatch.setattr(ir, "APART_RATIO", ratio)
    calls = {"apart": [], "split": []}
    real_apart, real_split = ir._stages_apart, ir.ChannelSplit.__call__
    monkeypatch.setattr(ir, "_stages_apart", lambda *a: calls["apart"].append(a) or real_apart(*a))
    monkeypatch.setattr(ir.ChannelSplit, "__call__", lambda *a: calls["split"].append(a) or real_split(*a))
    arrays, attrs = _block(np.random.default_rng(9), *BLOCKS[case])
    got = ir._binder(ir.inverted_residual, True)(**attrs)(*arrays.values())
    took = heavy and two_threads > 1
    assert bool(calls["split"]) == (took and case != "no-expansion")
    assert bool(calls["apart"]) == (took and case == "no-expansion")
    np.testing.assert_allclose(got, ir.inverted_residual_reference(**arrays, **attrs), rtol=RTOL, atol=ATOL)


def test_bands():
    assert ir._band(112, 112, 2, 112 * 96 * 4, 3) == 2  # 5 rows of 43 KB in a 256 KB ring
    assert ir._band(7, 7, 2, 14 * 576 * 4, 3) == 7  # at least 64 outputs: the whole 7x7 map
    assert ir._band(40, 5, 1, 1 << 30, 3) == 13  # no row fits the ring: still 64 outputs a band
    assert ir._even_band(10, 28, 2) == 7  # 3 bands of 10 -> 4 of 7: two equal runs of rows
    assert ir._even_band(14, 14, 2) == 7 and ir._even_band(7, 14, 1) == 7


def test_a_stage_that_is_not_a_clamp_is_named():
    arrays, attrs = _block(np.random.default_rng(0), *BLOCKS["residual"])
    with pytest.raises(KernelError, match="the projection's activation 'Sigmoid' is not a clamp"):
        ir._binder(ir.inverted_residual, True)(**attrs, activation="Sigmoid")(*arrays.values())


def test_shapes_that_do_not_chain_are_named():
    arrays, attrs = _block(np.random.default_rng(0), *BLOCKS["residual"])
    arrays["w2"] = arrays["w2"][:, :, :100]
    with pytest.raises(KernelError, match=r"do not chain.*W2 \(1, 1, 100, 24\)"):
        ir._binder(ir.inverted_residual, True)(**attrs)(*arrays.values())
    arrays, attrs = _block(np.random.default_rng(0), *BLOCKS["residual"])
    arrays["z"] = arrays["z"][:, :5]
    with pytest.raises(KernelError, match=r"residual Z has shape \(1, 5, 14, 24\)"):
        ir._binder(ir.inverted_residual, True)(**attrs)(*arrays.values())


# -- the pass ---------------------------------------------------------------------------------------------
def _net(expand=True, act="Clip", project_act=None, tap=None, dilation=1, expand_residual=False):
    """x -> 1x1 stem -> [1x1 expansion + act] -> depthwise 3x3 + act -> 1x1 projection [+ act] + x -> y."""
    rng = np.random.default_rng(11)
    b = GraphBuilder("block", opset=17)
    c, e = 16, 48
    x = b.input("x", np.float32, [1, c, 12, 12])

    def conv(src, cin, cout, k=1, group=1, **attrs):
        w = (rng.standard_normal((cout, cin // group, k, k)) / np.sqrt(cin // group * k * k)).astype(np.float32)
        return b.op("Conv", src, b.const(w), b.const((rng.standard_normal(cout) * 0.1).astype(np.float32)),
                    group=group, kernel_shape=[k, k], **attrs)

    def activate(h, name):
        return b.op("Clip", h, b.const(np.float32(0)), b.const(np.float32(6))) if name == "Clip" else b.op(name, h)

    stem = b.op("Relu", conv(x, c, c))
    h = stem
    if expand:
        h = conv(stem, c, e)
        if expand_residual:
            h = b.op("Add", h, conv(stem, c, e))
        h = activate(h, act)
    width = e if expand else c
    d = activate(conv(h, width, width, 3, width, pads=[dilation] * 4, dilations=[dilation] * 2), "Clip")
    if tap == "depthwise":
        b.op("Identity", d, outputs=["side"])
    p = b.op("Add", conv(d, width, c), stem)
    if project_act:
        p = activate(p, project_act)
    b.op("Identity", p, outputs=["y"])
    b.output("y", np.float32, [1, c, 12, 12])
    if tap:
        b.output("side", np.float32, [1, width, 12, 12])
    return b.build()


def _feeds():
    return {"x": np.random.default_rng(7).standard_normal((1, 16, 12, 12)).astype(np.float32)}


@pytest.fixture()
def channels_last(monkeypatch):
    monkeypatch.setattr(layout, "MIN_DEPTHWISE_PER_BOUNDARY", 0.0)  # toy graphs: convert them anyway
    monkeypatch.setattr(layout, "MIN_GEMM_MACS_PER_BOUNDARY", 0.0)


@pytest.mark.parametrize("expand", [True, False], ids=["with-expansion", "without"])
def test_block_becomes_one_node(channels_last, expand):
    model = _net(expand=expand)
    assert "fuse_inverted_residual" in optimize(model)
    blocks = [n for n in model.graph.nodes if n.op_type == ir.OP]
    assert len(blocks) == 1 and len(blocks[0].inputs) == 8  # the residual read too
    assert bool(blocks[0].inputs[1]) == expand
    want = Session(_net(expand=expand), kinds=("reference",)).run(_feeds())[0]
    for kinds in (CONSTANT_WEIGHT_KINDS, ("fast", "reference"), ("reference",)):
        np.testing.assert_allclose(Session(model, kinds=kinds).run(_feeds())[0], want, rtol=RTOL, atol=ATOL)


STAY = {  # what stops the fusion, and how many convs the block keeps apart
    "depthwise-read-elsewhere": dict(tap="depthwise"),
    "dilated-depthwise": dict(dilation=2),
    "projection-not-a-clamp": dict(project_act="Sigmoid"),
}


@pytest.mark.parametrize("case", STAY)
def test_blocks_that_stay_apart(channels_last, case):
    model = _net(**STAY[case])
    assert "fuse_inverted_residual" not in optimize(model)
    assert not any(n.op_type == ir.OP for n in model.graph.nodes)
    want = Session(_net(**STAY[case]), kinds=("reference",)).run(_feeds())
    for g, w in zip(Session(model, kinds=CONSTANT_WEIGHT_KINDS).run(_feeds()), want):
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("case", [dict(act="Sigmoid"), dict(expand_residual=True)], ids=["sigmoid", "residual"])
def test_an_expansion_that_cannot_fuse_stays_its_own_conv(channels_last, case):
    """The depthwise and projection still fuse (a block without expansion) after it."""
    model = _net(**case)
    optimize(model)
    blocks = [n for n in model.graph.nodes if n.op_type == ir.OP]
    assert len(blocks) == 1 and not blocks[0].inputs[1]
    want = Session(_net(**case), kinds=("reference",)).run(_feeds())[0]
    np.testing.assert_allclose(Session(model, kinds=CONSTANT_WEIGHT_KINDS).run(_feeds())[0], want, rtol=RTOL,
                               atol=ATOL)


def test_exports_as_standard_onnx(channels_last):
    model = _net()
    optimize(model)
    want = ort.InferenceSession(model_to_proto(_net()).SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, _feeds())[0]
    np.testing.assert_allclose(run_as_standard_onnx(model, _feeds())[0], want, rtol=RTOL, atol=ATOL)


def test_efficientnet_lite0_blocks_fuse_with_their_5x5_ones():
    """Its 5x5 blocks too, on every map width (14 and 7 wide at 224x224 input: they had stayed
    three convolutions each below 28 wide while the stencils' border loads were slow), equal to
    onnxruntime fused and as exported standard ONNX."""
    proto = model_to_proto(zoo.efficientnet_lite0(size=64))
    x = {"input": np.random.default_rng(1).standard_normal((2, 3, 64, 64)).astype(np.float32)}
    want = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, x)[0]
    on = Predictor(Config(model_path=proto))
    blocks = [n for n in on.model.graph.nodes if n.op_type == ir.OP]
    kernels = sorted(on.model.graph.type_of(n.inputs[3]).shape[0] for n in blocks)
    assert kernels.count(5) == 9 and len(kernels) == 16  # every block, 9 of them 5x5
    np.testing.assert_allclose(on.run(x)["logits"], want, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(run_as_standard_onnx(on.model, x)[0], want, rtol=RTOL, atol=ATOL)


def test_mobilenet_v2_blocks_all_fuse():
    proto = model_to_proto(zoo.mobilenet_v2(size=64))
    on = Predictor(Config(model_path=proto))
    off = Predictor(Config(model_path=proto, passes={"fuse_inverted_residual": False}))
    assert sum(n.op_type == ir.OP for n in on.model.graph.nodes) == 17  # every bottleneck of the 17
    x = {"input": np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)}
    want = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, x)[0]
    np.testing.assert_allclose(on.run(x)["logits"], want, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(on.run(x)["logits"], off.run(x)["logits"], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_lite0"])
def test_flops_and_batch_split_see_the_fused_blocks(name):
    """The fused blocks count the FLOPs of their stages (EfficientNet's 5x5 ones 25 taps, not 9)."""
    from inference.batch_split import check_batch_split
    from inference.flops import model_flops

    proto = model_to_proto(zoo.ZOO[name](size=64))
    on = Predictor(Config(model_path=proto)).model
    off = Predictor(Config(model_path=proto, passes={"fuse_inverted_residual": False})).model
    assert any(n.op_type == ir.OP for n in on.graph.nodes)
    assert model_flops(on, 4) == model_flops(off, 4) and model_flops(on, 4)[1] == 0
    assert check_batch_split(on.graph).ok
