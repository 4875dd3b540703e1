"""An inverted-residual block split among threads by its expanded channels
(``inference.kernels.inverted_residual_channels``): outputs equal the stages apart for any number of
parts, both depthwise sizes, strides, residuals, clamps and a depthwise activation that is not one;
NaN and inf reach the outputs the reference says; the parts' bounds and tile; MobileNetV2 at two
threads takes it and still matches onnxruntime."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from inference import Config, Predictor, zoo
from inference.kernels import inverted_residual as ir
from inference.kernels._prepack import is_released
from inference.kernels.inverted_residual_channels import ChannelSplit, expansion_tile, part_bounds
from inference.kernels.rows_gemm import NARROW, WIDE, tile_shape
from inference.onnx_export import model_to_proto
from tests.test_inverted_residual import RTOL, ATOL, _block

SPLIT_BLOCKS = {  # n, h, w, cin, expanded, m, stride, residual
    "7x7-deep": (1, 7, 7, 160, 960, 160, 1, True),
    "14x14-to-7x7": (1, 14, 14, 96, 576, 160, 2, False),
    "batch-2-odd-map": (2, 9, 5, 8, 100, 7, 2, False),
    "one-panel": (1, 6, 6, 8, 40, 24, 1, True),
}


def _split_call(arrays: dict, attrs: dict, parts: int, constant: bool = True, k: int = 3) -> np.ndarray:
    """The block through :class:`ChannelSplit` with ``parts`` parts (whatever the thread count)."""
    x, w1, w2 = arrays["x"], arrays["w1"], arrays["w2"]
    c, m = w1.shape[3], w2.shape[3]
    win = ir._window(x.shape[1:3], attrs, "test", (k, k))
    expansion = ir._Stage(x.shape[3], c, attrs, "expand_", "test", expansion_tile(c, parts))
    split = ChannelSplit(x.shape, c, m, win.out_shape, k, win.strides, win.pads_begin, expansion, tile_shape(m), parts)
    p_lim = ir._Stage(c, m, attrs, "", "test").lim
    d = ir.stage_epilogue(attrs, "depthwise_")
    code = ir.activation_code(d["activation"])
    clamps, amin, amax = ir.clamp_epilogue(code, float(d["alpha"]), float(d["beta"]))
    d_lim = np.array([amin, amax] if clamps else [-np.inf, np.inf], np.float32)
    return split(x, w1, arrays["b1"], arrays["wd"], ir._vector(arrays["bd"], c), code, float(d["alpha"]),
                 float(d["beta"]), d_lim, not clamps, w2, ir._vector(arrays["b2"], m), arrays["z"], p_lim, constant)


@pytest.mark.parametrize("case", SPLIT_BLOCKS)
@pytest.mark.parametrize("parts", [1, 2, 3])
@pytest.mark.parametrize("k", [3, 5], ids=["3x3", "5x5"])
def test_split_matches_the_stages_apart(case, parts, k, threads):
    arrays, attrs = _block(np.random.default_rng(11), *SPLIT_BLOCKS[case], k=k)
    want = ir.inverted_residual_reference(**arrays, **attrs)
    for constant in (True, False):  # weights split once and kept, or split per call
        np.testing.assert_allclose(_split_call(arrays, attrs, parts, constant, k), want, rtol=RTOL, atol=ATOL)


def test_projection_clamp_and_non_clamp_depthwise_activation(threads):
    """The clamp applies to the summed partials, not to each part; a HardSwish depthwise runs its pass."""
    arrays, attrs = _block(np.random.default_rng(12), 1, 7, 7, 16, 96, 24, 1, True, depthwise_act="HardSwish")
    attrs.update(activation="Clip", alpha=-0.5, beta=0.5)
    want = ir.inverted_residual_reference(**arrays, **attrs)
    assert (want == 0.5).any() and (want == -0.5).any() and (np.abs(want) < 0.5).any()
    np.testing.assert_allclose(_split_call(arrays, attrs, 2), want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_and_inf_reach_what_the_reference_says(bad):
    arrays, attrs = _block(np.random.default_rng(13), 1, 7, 7, 16, 96, 24, 1, True)
    arrays["x"][0, 3, 2, 5] = bad
    attrs.update(expand_activation="", depthwise_activation="")
    want = ir.inverted_residual_reference(**arrays, **attrs)
    got = _split_call(arrays, attrs, 2)
    assert np.isnan(want).any()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=RTOL, atol=ATOL)


def test_parts_are_whole_panels_split_evenly():
    assert part_bounds(576, 64, 2) == (0, 256, 576)  # 9 panels: 4 and 5
    assert part_bounds(576, 32, 2) == (0, 288, 576)  # 18: 9 and 9
    assert part_bounds(100, 32, 3) == (0, 32, 64, 100)  # the last part ends at the channels
    assert part_bounds(40, 64, 2) == (0, 40)  # one panel: one part
    assert expansion_tile(576, 2) == NARROW and expansion_tile(960, 2) == NARROW  # 9/9 and 15/15 of 32
    assert expansion_tile(512, 2) == tile_shape(512) == WIDE  # 8 panels of 64 split evenly: its own tile


def test_mobilenet_v2_at_two_threads_splits_its_deep_blocks(monkeypatch, two_threads):
    """At batch 2 each thread takes an image (the batch split) and runs its blocks by rows, packing
    their weights for those tiles, after which the Predictor releases the weights; at batch 1 the
    deep blocks split by channels, their parts packed from the released weights' panels. Both
    batches match onnxruntime."""
    if two_threads < 2:
        pytest.skip("numba has one thread here")
    calls = []
    real = ChannelSplit.__call__
    monkeypatch.setattr(ChannelSplit, "__call__", lambda *a: calls.append(a[0].out_shape) or real(*a))
    proto = model_to_proto(zoo.mobilenet_v2())
    rng = np.random.default_rng(0)
    ort_session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    predictor = Predictor(Config(model_path=proto, num_threads=2))
    x2 = {"input": rng.standard_normal((2, 3, 224, 224)).astype(np.float32)}
    np.testing.assert_allclose(predictor.run(x2)["logits"], ort_session.run(None, x2)[0], rtol=RTOL, atol=ATOL)
    assert not calls  # one image per thread: every block by rows, on one thread
    blocks = [n for n in predictor.model.graph.nodes if n.op_type == ir.OP]
    w1 = [predictor.model.graph.initializers.get(n.inputs[1]) for n in blocks if n.inputs[1]]
    assert any(w is not None and is_released(w) for w in w1)
    calls.clear()
    x1 = {"input": x2["input"][:1].copy()}
    got = predictor.run(x1)["logits"]
    assert {shape[1] for shape in calls} == {7, 14}  # the 14x14 blocks of 576 channels and the 7x7 ones
    np.testing.assert_allclose(got, ort_session.run(None, x1)[0], rtol=RTOL, atol=ATOL)
