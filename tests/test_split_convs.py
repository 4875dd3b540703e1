"""The split_conv_outputs pass: a convolution whose output only a Split along the channels reads
becomes one convolution per part, with the same outputs (a YOLOv8-style detector's C2f blocks)."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from inference import Config, Predictor, zoo
from inference.builder import GraphBuilder
from inference.errors import KernelError
from inference.onnx_export import model_to_proto
from inference.passes import optimize
from inference.session import Session
from tests.conftest import run_as_standard_onnx

RTOL, ATOL = 1e-4, 1e-5
RNG = np.random.default_rng(12)


def _ops(p: Predictor) -> list[str]:
    return [n.op_type for n in p.model.graph.nodes]


def test_yolov8_style_runs_without_its_splits():
    proto = model_to_proto(zoo.yolov8_style(size=64))
    x = {"input": RNG.standard_normal((2, 3, 64, 64)).astype(np.float32)}
    want = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, x)
    p = Predictor(Config(model_path=proto))
    kept = Predictor(Config(model_path=proto, passes={"split_conv_outputs": False}))
    assert "Split" not in _ops(p) and _ops(kept).count("Split") == 6
    assert _ops(p).count("FusedConvNHWC") == _ops(kept).count("FusedConvNHWC") + 6  # each 1x1 now two
    got = p.run(x)
    for name, w in zip(("scale8", "scale16"), want):
        np.testing.assert_allclose(got[name], w, rtol=RTOL, atol=ATOL)
    for got_std, w in zip(run_as_standard_onnx(p.model, x), want):
        np.testing.assert_allclose(got_std, w, rtol=RTOL, atol=ATOL)


def _net(split: str, opset: int = 17, group: int = 1, tap: bool = False):
    """Conv (+Relu) -> Split of its 24 channels -> each part through a Sigmoid -> Concat."""
    b = GraphBuilder("split_net", opset=opset)
    x = b.input("x", np.float32, [2, 8, 6, 6])
    w = RNG.standard_normal((24, 8 // group, 3, 3)).astype(np.float32) * 0.3
    h = b.op("Relu", b.op("Conv", x, b.const(w), b.const(RNG.standard_normal(24).astype(np.float32)),
                          kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=group))
    if split == "sizes":
        parts = b.op("Split", h, b.const(np.array([8, 16], np.int64)), axis=1, outputs=2)
    elif split == "ragged":  # Split-18: ceil(24 / 5) = 5 channels each, 4 in the last
        parts = b.op("Split", h, axis=1, num_outputs=5, outputs=5)
    elif split == "equal":
        parts = b.op("Split", h, axis=-3, outputs=3)
    else:  # along the height: not channels
        parts = b.op("Split", h, b.const(np.array([2, 4], np.int64)), axis=2, outputs=2)
    outs = [b.op("Sigmoid", t) for t in parts] + ([h] if tap else [])
    b.op("Concat", *outs, axis=2 if split == "height" else 1, outputs=["y"])
    y = [2, 24 * (2 if tap else 1), 6, 6] if split != "height" else [2, 24, 6 * (2 if tap else 1), 6]
    b.output("y", np.float32, y)
    return b.build()


@pytest.mark.parametrize("split,opset", [("sizes", 17), ("ragged", 18), ("equal", 13)])
def test_channel_splits_become_convolutions(split, opset):
    model = _net(split, opset)
    x = {"x": RNG.standard_normal((2, 8, 6, 6)).astype(np.float32)}
    want = Session(model, kinds=("reference",)).run(x)[0]
    assert "split_conv_outputs" in optimize(model)
    ops = [n.op_type for n in model.graph.nodes]
    assert "Split" not in ops and ops.count("FusedConv") == {"sizes": 2, "ragged": 5, "equal": 3}[split]
    np.testing.assert_allclose(Session(model).run(x)[0], want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("case", ["height", "grouped", "conv-read-elsewhere"])
def test_other_splits_stay(case):
    model = _net("height" if case == "height" else "sizes", group=2 if case == "grouped" else 1,
                 tap=case == "conv-read-elsewhere")
    x = {"x": RNG.standard_normal((2, 8, 6, 6)).astype(np.float32)}
    want = Session(model, kinds=("reference",)).run(x)[0]
    assert "split_conv_outputs" not in optimize(model)
    assert "Split" in [n.op_type for n in model.graph.nodes]
    np.testing.assert_allclose(Session(model).run(x)[0], want, rtol=RTOL, atol=ATOL)


def test_an_invalid_split18_is_left_for_its_kernel_to_name():
    """Both the sizes and num_outputs: the pass leaves it, and the run names the problem."""
    b = GraphBuilder("bad_split", opset=18)
    x = b.input("x", np.float32, [1, 4, 3, 3])
    h = b.op("Conv", x, b.const(RNG.standard_normal((8, 4, 1, 1)).astype(np.float32)))
    b.op("Split", h, b.const(np.array([4, 4], np.int64)), axis=1, num_outputs=2, outputs=["p", "q"])
    b.output("p", np.float32, [1, 4, 3, 3])
    b.output("q", np.float32, [1, 4, 3, 3])
    model = b.build()
    assert "split_conv_outputs" not in optimize(model)
    with pytest.raises(KernelError, match="either the split input or the num_outputs"):
        Session(model).run({"x": RNG.standard_normal((1, 4, 3, 3)).astype(np.float32)})
