"""The nearest Resize gather (``inference.kernels.resize``) picks what the reference's coordinate
rule picks, for every coordinate mode, nearest mode, scale, size and axis choice; and a NaN reaches
only the outputs that sample it, as in onnxruntime."""
from __future__ import annotations

import itertools

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from inference import Config, Predictor
from inference.kernels.resize import resize_fast
from inference.ops.resize import resize

RNG = np.random.default_rng(12)
COORDINATES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
               "tf_half_pixel_for_nn")
ROUNDING = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
GEOMETRY = {  # name: (scales, sizes, axes, policy)
    "up-2x": ([1, 1, 2, 2], None, None, "stretch"),
    "up-3x-1.5x": ([1, 1, 3, 1.5], None, None, "stretch"),
    "down": ([1, 1, 0.5, 0.6], None, None, "stretch"),
    "sizes": (None, [2, 3, 13, 4], None, "stretch"),
    "axes": ([2.5], None, [3], "stretch"),
    "not-larger": (None, [11, 20], [2, 3], "not_larger"),
    # the middle two axes (a channels-last image's height and width): the one-pass gather kernel
    "middle-2x": ([1, 2, 2, 1], None, None, "stretch"),
    "middle-mixed": ([1, 1.5, 0.6, 1], None, None, "stretch"),
    "middle-one-axis": ([2.5], None, [1], "stretch"),
}


@pytest.mark.parametrize("ctm, rounding", list(itertools.product(COORDINATES, ROUNDING)))
@pytest.mark.parametrize("geometry", list(GEOMETRY))
def test_same_picks_as_the_reference(ctm, rounding, geometry):
    scales, sizes, axes, policy = GEOMETRY[geometry]
    x = RNG.standard_normal((2, 3, 7, 5)).astype(np.float32)
    args = (x, None, None if scales is None else np.array(scales, np.float32),
            None if sizes is None else np.array(sizes, np.int64))
    kw = dict(coordinate_transformation_mode=ctm, nearest_mode=rounding, axes=axes, keep_aspect_ratio_policy=policy)
    want = resize(*args, mode="nearest", **kw)
    got = resize_fast(*args, **kw)
    assert got.dtype == want.dtype and got.flags.c_contiguous
    np.testing.assert_array_equal(got, want)


def test_a_nan_reaches_only_what_samples_it():
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="nearest")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])],
                              [helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 2, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = RNG.standard_normal((1, 2, 4, 4)).astype(np.float32)
    x[0, 1, 2, 3] = np.nan
    p = Predictor(Config(model_path=model))
    assert p.session.steps[0].kernel.fn is resize_fast
    got = p.run({"x": x})["y"]
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(got).sum() == 4  # the one pixel's 2x2 copies
    np.testing.assert_array_equal(got[~np.isnan(got)], want[~np.isnan(want)])


def test_an_nchw_upsampling_is_replayed():
    """Height and width of an NCHW image resize in numba too (as planes of one-value pixels), so a
    model with a nearest upsampling outside a channels-last region (a YOLO neck with a dynamic
    batch had one) is replayed: numpy's takes had kept it step by step."""
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="nearest")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 5, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 10, 8])],
                              [helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 2, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    p = Predictor(Config(model_path=model, num_threads=1))
    for seed in range(5):
        x = np.random.default_rng(seed).standard_normal((2, 3, 5, 4)).astype(np.float32)
        np.testing.assert_array_equal(p.run({"x": x})["y"], x.repeat(2, axis=2).repeat(2, axis=3))
    assert "replayed" in p.replay_report(), p.replay_report()
