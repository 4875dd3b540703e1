"""Winograd's F(2x2, 3x3) (``inference.kernels.winograd``) and the pass that picks it: outputs equal
to the direct convolution's through every edge case of the tiling (odd maps, uneven pads, several
blocks and channel panels, residuals, activations, one and two threads), the convolutions it takes
and leaves, the standard-ONNX export and a saved optimized model."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from inference import Config, Predictor, zoo
from inference.builder import GraphBuilder
from inference.errors import KernelError
from inference.kernels import winograd
from inference.kernels.activations import activation_code
from inference.kernels.nhwc import (DIRECT, OP, WINOGRAD, conv_window, fused_conv_nhwc_packed,
                                    fused_conv_nhwc_reference, prepare_conv_nhwc)
from inference.onnx_export import model_to_proto
from inference.onnx_import import load_model
from inference.passes import layout, mark_optimized, optimize
from inference.session import CONSTANT_WEIGHT_KINDS, Session
from tests.conftest import run_as_standard_onnx

RTOL, ATOL = 1e-4, 1e-5


def _conv(rng, n, h, w, c, m, pads, residual):
    x = rng.standard_normal((n, h, w, c)).astype(np.float32)
    wt = (rng.standard_normal((3, 3, c, m)) / np.sqrt(9 * c)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    win = conv_window((h, w), wt.shape, {"pads": list(pads)}, "test")
    z = rng.standard_normal((n,) + win.out_shape + (m,)).astype(np.float32) if residual else None
    return x, wt, b, z, win


CASES = {  # n, h, w, c, m, pads (top, left, bottom, right)
    "resnet-like": (1, 14, 14, 64, 64, (1, 1, 1, 1)),
    "odd-map-batch-3": (3, 7, 9, 16, 24, (1, 1, 1, 1)),
    "unpadded": (1, 9, 8, 32, 64, (0, 0, 0, 0)),
    "uneven-pads": (2, 6, 5, 3, 17, (2, 1, 0, 2)),
    "narrow-panels": (1, 10, 11, 8, 70, (1, 1, 1, 1)),
    "slim-panel": (1, 5, 5, 8, 16, (1, 1, 1, 1)),
    "several-panels": (1, 6, 6, 24, 200, (1, 1, 1, 1)),
    "one-pixel": (1, 1, 1, 4, 8, (1, 1, 1, 1)),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
def test_kernel_matches_the_direct_convolution(case, residual, threads):
    n, h, w, c, m, pads, = CASES[case]
    x, wt, b, z, win = _conv(np.random.default_rng(0), n, h, w, c, m, pads, residual)
    want = fused_conv_nhwc_reference(x, wt, b, z, pads=list(pads), activation="Relu")
    run = winograd.PreparedWinograd(x.shape, m, win.pads_begin, win.out_shape)
    for keep in (None, wt):  # the weight transformed per call, and kept with a constant one
        got = run(x, wt, b, z, np.float32(0), np.float32(np.inf), keep)
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_sum_not_finite_hands_the_call_to_the_direct_algorithm(bad, threads):
    """Winograd would spread it over its 2x2 tile (inf - inf: NaN): the call says None instead."""
    x, wt, b, z, win = _conv(np.random.default_rng(2), 1, 10, 10, 16, 24, (1, 1, 1, 1), False)
    run = winograd.PreparedWinograd(x.shape, 24, win.pads_begin, win.out_shape)
    assert run(x, wt, b, z, np.float32(-np.inf), np.float32(np.inf)) is not None
    x[0, 4, 5, 3] = bad
    assert run(x, wt, b, z, np.float32(-np.inf), np.float32(np.inf)) is None
    assert run(x, wt, b, z, np.float32(0), np.float32(6), wt) is None  # a clamp would hide an inf: counted before it


@pytest.mark.parametrize("block_bytes", [1, 20_000], ids=["one-tile-row-per-block", "a few rows per block"])
def test_many_blocks_and_a_partial_last_one(monkeypatch, block_bytes, threads):
    """Blocks of tiles (each unit's share of L2) small enough that the batch spans many, the last partial."""
    monkeypatch.setattr(winograd, "BLOCK_BYTES", block_bytes)
    x, wt, b, z, win = _conv(np.random.default_rng(1), 2, 11, 13, 16, 40, (1, 1, 1, 1), True)
    run = winograd.PreparedWinograd(x.shape, 40, win.pads_begin, win.out_shape)
    assert run.units > 2 * 2  # several blocks of each of the two panels
    want = fused_conv_nhwc_reference(x, wt, b, z, pads=[1, 1, 1, 1])
    np.testing.assert_allclose(run(x, wt, b, z, np.float32(-np.inf), np.float32(np.inf)), want, rtol=RTOL,
                               atol=ATOL)


@pytest.mark.parametrize("activation", ["Relu", "Sigmoid", ""])
def test_prepared_call_runs_winograd_with_any_activation(activation, threads):
    """Through ``prepare_conv_nhwc``: a clamp in the output transform, other activations after it;
    too little work for Winograd runs direct."""
    x, wt, b, z, win = _conv(np.random.default_rng(2), 1, 28, 28, 64, 96, (1, 1, 1, 1), True)
    code = activation_code(activation)
    call = prepare_conv_nhwc(x.shape, wt.shape, win, 1, code, 0.0, 0.0, True, algorithm=WINOGRAD)
    assert call.__name__ == "minimal"
    want = fused_conv_nhwc_reference(x, wt, b, z, pads=[1, 1, 1, 1], activation=activation)
    np.testing.assert_allclose(call(x, wt, b, z), want, rtol=RTOL, atol=ATOL)
    small = prepare_conv_nhwc((1, 12, 12, 64), wt.shape, conv_window((12, 12), wt.shape, {"pads": [1] * 4}, "t"),
                              1, code, 0.0, 0.0, True, algorithm=WINOGRAD)
    assert small.__name__ == "gathered"  # 36 tiles x 64 channels


def test_multiply_ratio_and_where_it_applies():
    assert winograd.multiply_ratio(56, 56) == 2.25
    assert winograd.multiply_ratio(7, 7) == pytest.approx(9 * 49 / (16 * 16))
    win = lambda h, k=3, s=1, d=1: conv_window((h, h), (k, k), dict(strides=[s, s], dilations=[d, d],  # noqa: E731
                                                                   pads=[k // 2 * d] * 4), "test")
    assert winograd.applies((1, 56, 56, 64), (3, 3, 64, 64), win(56))
    assert winograd.eligible(512, (3, 3, 512, 512), win(7))  # marked; run by Winograd from batch 2
    assert not winograd.applies((1, 7, 7, 512), (3, 3, 512, 512), win(7))
    assert winograd.applies((2, 7, 7, 512), (3, 3, 512, 512), win(7))
    assert not winograd.applies((1, 56, 56, 32), (3, 3, 32, 64), win(56))  # too few channels
    assert not winograd.applies((1, 56, 56, 64), (3, 3, 64, 64), win(56, s=2))
    assert not winograd.applies((1, 56, 56, 64), (3, 3, 64, 64), win(56, d=2))
    assert not winograd.applies((1, 56, 56, 64), (5, 5, 64, 64), win(56, k=5))
    assert not winograd.applies((1, 1, 1, 64), (3, 3, 64, 64), win(1))  # one output in a 2x2 tile


def test_transformed_weight_is_g_w_gt():
    rng = np.random.default_rng(3)
    wt = rng.standard_normal((3, 3, 5, 7)).astype(np.float32)
    panels = winograd.transformed_weight(wt, 16).reshape(16, 5, 16)  # one panel of 16 lanes per point
    g = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
    for c, m in [(0, 0), (4, 6), (2, 3)]:
        u = g @ wt[:, :, c, m].astype(np.float64) @ g.T
        np.testing.assert_allclose(panels[:, c, m], u.reshape(16), rtol=1e-6)
    assert not panels[:, :, 7:].any()  # the panel's padding lanes


def test_shapes_other_than_prepared_are_named():
    x, wt, b, _, win = _conv(np.random.default_rng(5), 1, 6, 6, 8, 16, (1, 1, 1, 1), False)
    run = winograd.PreparedWinograd(x.shape, 16, win.pads_begin, win.out_shape)
    with pytest.raises(KernelError, match=r"X \(1, 6, 5, 8\) and W \(3, 3, 8, 16\), prepared for X \(1, 6, 6, 8\)"):
        run(x[:, :, :5], wt, b, None, np.float32(0), np.float32(np.inf))
    with pytest.raises(KernelError, match=r"W \(3, 3, 8, 8\)"):
        run(x, wt[..., :8], b, None, np.float32(0), np.float32(np.inf))


def test_a_wrong_algorithm_is_named():
    x, wt, b, _, _ = _conv(np.random.default_rng(4), 1, 4, 4, 2, 2, (1, 1, 1, 1), False)
    with pytest.raises(KernelError, match="algorithm must be 'direct' or 'winograd', got 'fft'"):
        fused_conv_nhwc_packed(x, wt, b, pads=[1, 1, 1, 1], algorithm="fft")
    with pytest.raises(KernelError, match="got 'fft'"):
        fused_conv_nhwc_reference(x, wt, b, pads=[1, 1, 1, 1], algorithm="fft")


# -- the pass ---------------------------------------------------------------------------------------------
@pytest.fixture()
def channels_last(monkeypatch):
    monkeypatch.setattr(layout, "MIN_GEMM_MACS_PER_BOUNDARY", 0.0)  # toy graphs: convert them anyway


def _net(c=64, size=10, merged_1x1=False, stride=1):
    """x -> 3x3 conv + Relu -> 3x3 conv (+ x) -> y; ``merged_1x1``: the second conv's last half of
    outputs is a 1x1 (its weight's outer taps zero, as concat_convs leaves a merged fire module)."""
    rng = np.random.default_rng(5)
    b = GraphBuilder("convs", opset=17)
    x = b.input("x", np.float32, [1, c, size, size])

    def conv(src, zero_outer=False, s=1):
        w = (rng.standard_normal((c, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
        if zero_outer:
            w[c // 2:] *= np.pad(np.ones((1, 1)), 1).astype(np.float32)
        return b.op("Conv", src, b.const(w), b.const(rng.standard_normal(c).astype(np.float32) * 0.1),
                    kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[s, s])

    h = b.op("Relu", conv(x))
    y = conv(h, merged_1x1, stride)
    b.op("Identity", y if stride > 1 else b.op("Add", y, x), outputs=["y"])
    out = size if stride == 1 else (size - 1) // stride + 1
    b.output("y", np.float32, [1, c, out, out])
    return b.build()


def _feeds(c=64, size=10):
    return {"x": np.random.default_rng(6).standard_normal((1, c, size, size)).astype(np.float32)}


def _algorithms(model) -> list[str]:
    return [n.attrs.get("algorithm", DIRECT) for n in model.graph.nodes if n.op_type == OP]


NETS = {  # the net, each conv's algorithm
    "both": (dict(), [WINOGRAD, WINOGRAD]),
    "merged-1x1-stays-direct": (dict(merged_1x1=True), [WINOGRAD, DIRECT]),
    "strided-stays-direct": (dict(stride=2), [WINOGRAD, DIRECT]),
    "few-channels": (dict(c=32), [DIRECT, DIRECT]),
}


@pytest.mark.parametrize("case", NETS)
def test_pass_marks_the_convolutions_it_serves(channels_last, case):
    kwargs, algorithms = NETS[case]
    model = _net(**kwargs)
    applied = optimize(model)
    assert _algorithms(model) == algorithms
    assert ("winograd_conv" in applied) == (WINOGRAD in algorithms)
    feeds = _feeds(kwargs.get("c", 64))
    want = Session(_net(**kwargs), kinds=("reference",)).run(feeds)[0]
    for kinds in (CONSTANT_WEIGHT_KINDS, ("fast", "reference"), ("reference",)):
        np.testing.assert_allclose(Session(model, kinds=kinds).run(feeds)[0], want, rtol=RTOL, atol=ATOL)


def test_pass_takes_back_a_mark_that_no_longer_holds(channels_last):
    model = _net()
    optimize(model)
    conv = next(n for n in model.graph.nodes if n.op_type == OP)
    conv.attrs["strides"] = [2, 2]
    assert optimize(model, switches={"fold_constants": False}) == ["winograd_conv"]
    assert "algorithm" not in conv.attrs


def test_switched_off_every_convolution_stays_direct(channels_last):
    model = _net()
    optimize(model, switches={"winograd_conv": False})
    assert _algorithms(model) == [DIRECT, DIRECT]
    optimize(model)
    assert optimize(model, switches={"winograd_conv": False}) == ["winograd_conv"]  # marks taken back
    assert _algorithms(model) == [DIRECT, DIRECT]


@pytest.mark.parametrize("reoptimize", [False, True])
def test_switched_off_takes_back_a_saved_models_marks(channels_last, reoptimize):
    model = _net()
    optimize(model)
    mark_optimized(model, ["winograd_conv"])
    proto = model_to_proto(model)  # as edgelearn optimize saves it
    kept = Predictor(Config(model_path=proto))
    assert kept.applied_passes == [] and _algorithms(kept.model) == [WINOGRAD, WINOGRAD]
    off = Predictor(Config(model_path=proto, passes={"winograd_conv": False}, reoptimize=reoptimize))
    assert _algorithms(off.model) == [DIRECT, DIRECT]
    assert "winograd_conv" in off.applied_passes
    want = Session(_net(), kinds=("reference",)).run(_feeds())[0]
    np.testing.assert_allclose(off.run(_feeds())["y"], want, rtol=RTOL, atol=ATOL)


def test_exports_as_standard_onnx_and_loads_saved(channels_last):
    model = _net()
    optimize(model)
    want = ort.InferenceSession(model_to_proto(_net()).SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, _feeds())[0]
    np.testing.assert_allclose(run_as_standard_onnx(model, _feeds())[0], want, rtol=RTOL, atol=ATOL)
    saved = load_model(model_to_proto(model))  # the optimized graph as edgelearn optimize saves it
    assert _algorithms(saved) == [WINOGRAD, WINOGRAD]
    np.testing.assert_allclose(Session(saved, kinds=CONSTANT_WEIGHT_KINDS).run(_feeds())[0], want, rtol=RTOL,
                               atol=ATOL)


def test_resnet18_takes_its_stride_1_convolutions(monkeypatch):
    proto = model_to_proto(zoo.resnet18(size=112))
    on = Predictor(Config(model_path=proto))
    off = Predictor(Config(model_path=proto, passes={"winograd_conv": False}))
    assert _algorithms(on.model).count(WINOGRAD) == 13  # 16 3x3 layers, 3 of them strided
    assert WINOGRAD not in _algorithms(off.model)
    calls = []
    real = winograd.PreparedWinograd.__call__
    monkeypatch.setattr(winograd.PreparedWinograd, "__call__", lambda self, *a: calls.append(real(self, *a)) or calls[-1])
    x = {"input": np.random.default_rng(0).standard_normal((2, 3, 112, 112)).astype(np.float32)}
    want = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, x)[0]
    np.testing.assert_allclose(on.run(x)["logits"], want, rtol=RTOL, atol=ATOL)
    assert len(calls) == 7  # on 28x28 and 14x14 maps; 7x7 and 4x4 ones too small at batch 2 (MIN_TILE_CHANNELS)
    assert all(y is not None for y in calls)  # every sum finite: none handed back to the direct algorithm
    np.testing.assert_allclose(on.run(x)["logits"], off.run(x)["logits"], rtol=RTOL, atol=ATOL)


def test_squeezenet_merged_fire_convolutions_stay_direct():
    """Its 3x3 convolutions of at least 64 channels are 1x1 + 3x3 merged: their zero taps are cheaper skipped."""
    model = Predictor(Config(model_path=zoo.light_model("squeezenet"))).model
    merged = [n for n in model.graph.nodes if n.op_type == OP and n.attrs.get("kernel_shape") == [3, 3]]
    assert merged and WINOGRAD not in _algorithms(model)
