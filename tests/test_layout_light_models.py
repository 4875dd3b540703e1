"""The layout pass on onnx's light shufflenet and squeezenet: pools, Concats (squeezenet's merged
into its convolutions) and channel shuffles inside channels-last regions, grouped convolutions
converted, outputs as before and as onnxruntime's, and the converted model exported as standard
ONNX that onnxruntime runs."""
from __future__ import annotations

import functools

import numpy as np
import onnxruntime as ort
import pytest

from inference import zoo
from inference.onnx_import import load_model
from inference.passes import layout, optimize
from inference.session import Session
from tests.conftest import run_as_standard_onnx

RTOL, ATOL = 1e-4, 1e-5


@functools.lru_cache(maxsize=None)
def _light(name: str):
    proto = zoo.light_model(name)
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    feeds = {proto.graph.input[0].name: x}
    want = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    return name, proto, feeds, want


@pytest.fixture(params=["shufflenet", "squeezenet"])
def light(request):
    return _light(request.param)


def _optimized(proto, monkeypatch, force: bool):
    if force:
        monkeypatch.setattr(layout, "MIN_DEPTHWISE_PER_BOUNDARY", 0.0)
        monkeypatch.setattr(layout, "MIN_GEMM_MACS_PER_BOUNDARY", 0.0)
    model = load_model(proto)
    return model, optimize(model)


def test_shufflenet_runs_channels_last_without_shuffles(monkeypatch):
    """The rule converts shufflenet; every shuffle is folded into the convolutions reading it."""
    _, proto, _, _ = _light("shufflenet")
    model, applied = _optimized(proto, monkeypatch, force=False)
    assert {"fuse_channel_shuffle", "layout_nhwc", "fold_channel_shuffle"} <= set(applied)
    hist = model.graph.op_histogram()
    assert "edgelearn::ChannelShuffle" not in hist and hist.get("Reshape", 0) <= 1  # the head's flatten
    assert hist["edgelearn::AveragePoolNHWC"] == 4 and hist["edgelearn::FusedConvNHWC"] == 49
    grouped = [n for n in model.graph.nodes if n.op_type == "FusedConvNHWC" and n.attrs.get("group") == 4]
    assert sum("input_order" in n.attrs for n in grouped) == 16
    # the RGB stem reads the NCHW input in place, its MaxPool runs channels-last; the one way back
    # moves the head pool's (1, 1, 1, 544)
    stem = model.graph.nodes[0]
    assert stem.op_type == "FusedConvNHWC" and stem.attrs["input_layout"] == "NCHW"
    assert hist["Transpose"] == 1 and hist["edgelearn::MaxPoolNHWC"] == 1
    back = next(n for n in model.graph.nodes if n.op_type == "Transpose")
    assert back.attrs["perm"] == [0, 3, 1, 2] and model.graph.type_of(back.inputs[0]).shape == (1, 1, 1, 544)


@pytest.mark.parametrize("force", [False, True], ids=["rule", "forced"])
def test_outputs_unchanged(light, monkeypatch, force):
    name, proto, feeds, want = light
    model, _ = _optimized(proto, monkeypatch, force)
    # both convert under the rule too: shufflenet for its depthwise layers, squeezenet for its MACs
    assert any(n.op_type in ("MaxPoolNHWC", "AveragePoolNHWC") for n in model.graph.nodes)
    concats = [n for n in model.graph.nodes if n.op_type == "Concat"]
    if name == "shufflenet":  # a pool beside a conv: Concats channels-last
        assert concats and all(n.attrs["axis"] == 3 for n in concats)
    else:  # each fire module's 1x1 and 3x3 expansions: one convolution writing both, no Concat
        assert not concats
        merged = [n for n in model.graph.nodes if "+" in n.name and n.op_type == "FusedConvNHWC"]
        assert len(merged) == 8 and all(n.attrs["kernel_shape"] == [3, 3] for n in merged)
    plain = load_model(proto)
    optimize(plain, switches={"layout_nhwc": False})
    before = Session(plain).run(feeds)[0]
    got = Session(model).run(feeds)[0]
    np.testing.assert_allclose(got, before, rtol=RTOL, atol=ATOL, err_msg=f"{name} vs its NCHW run")
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=f"{name} vs onnxruntime")


def test_exports_as_standard_onnx(light, monkeypatch):
    name, proto, feeds, want = light
    model, _ = _optimized(proto, monkeypatch, force=True)
    np.testing.assert_allclose(run_as_standard_onnx(model, feeds)[0], want, rtol=RTOL, atol=ATOL, err_msg=name)
