"""The float32 linear Resize (``inference.kernels.resize``) and InstanceNormalization
(``inference.kernels.norm``) kernels give what the reference ops give, for every coordinate mode,
up and down, scales or sizes, NCHW or channels-last, 1-D to 3-D; and torch's exports of bilinear
upsampling, GroupNorm and InstanceNorm2d run on them and match onnxruntime."""
from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from inference import Config, Predictor
from inference.kernels.norm import instance_normalization as instance_norm_fast
from inference.kernels.resize import resize_fast
from inference.ops.normalization import instance_normalization
from inference.ops.resize import resize

RNG = np.random.default_rng(7)
COORDINATES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
               "tf_half_pixel_for_nn")
GEOMETRY = {  # name: (input shape, scales, sizes, axes, policy)
    "up-2x": ((2, 3, 7, 5), [1, 1, 2, 2], None, None, "stretch"),
    "up-3x-1.5x": ((2, 3, 7, 5), [1, 1, 3, 1.5], None, None, "stretch"),
    "down": ((2, 3, 9, 10), [1, 1, 0.5, 0.6], None, None, "stretch"),
    "non-integer": ((1, 2, 6, 11), [1, 1, 1.37, 0.83], None, None, "stretch"),
    "sizes": ((2, 3, 7, 5), None, [2, 3, 13, 4], None, "stretch"),
    "one-pixel": ((2, 3, 1, 1), None, [2, 3, 4, 1], None, "stretch"),
    "to-one-pixel": ((2, 3, 5, 4), None, [2, 3, 1, 1], None, "stretch"),
    "width-only": ((2, 3, 7, 5), [2.5], None, [3], "stretch"),
    "height-only": ((2, 3, 7, 5), [1, 1, 1.5, 1], None, None, "stretch"),
    "not-larger": ((2, 3, 7, 5), None, [11, 20], [2, 3], "not_larger"),
    "channels-last": ((2, 7, 5, 3), [1, 2, 2, 1], None, None, "stretch"),
    "channels-last-mixed": ((2, 7, 5, 16), [1, 1.5, 0.6, 1], None, None, "stretch"),
    "1-d": ((3, 4, 9), [1, 1, 2.3], None, None, "stretch"),
    "3-d": ((1, 2, 4, 5, 6), [1, 1, 2, 1.5, 0.5], None, None, "stretch"),
    "depth-only": ((1, 2, 4, 5, 6), [1, 1, 1.75, 1, 1], None, None, "stretch"),
    "batch-axis": ((3, 2, 4), [2, 1, 1], None, None, "stretch"),
    "identity": ((2, 3, 4, 5), [1, 1, 1, 1], None, None, "stretch"),
}


@pytest.mark.parametrize("ctm", COORDINATES)
@pytest.mark.parametrize("geometry", list(GEOMETRY))
def test_linear_resize_matches_the_reference(ctm, geometry):
    shape, scales, sizes, axes, policy = GEOMETRY[geometry]
    x = RNG.standard_normal(shape).astype(np.float32)
    args = (x, None, None if scales is None else np.array(scales, np.float32),
            None if sizes is None else np.array(sizes, np.int64))
    kw = dict(mode="linear", coordinate_transformation_mode=ctm, axes=axes, keep_aspect_ratio_policy=policy)
    want = resize(*args, **kw)
    got = resize_fast(*args, **kw)
    assert got.dtype == np.float32 and got.shape == want.shape and got.flags.c_contiguous
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_an_empty_output():
    x = RNG.standard_normal((2, 3, 4, 5)).astype(np.float32)
    sizes = np.array([2, 3, 0, 5], np.int64)
    assert resize_fast(x, None, None, sizes, mode="linear").shape == resize(x, None, None, sizes, mode="linear").shape


@pytest.mark.parametrize("exclude_outside", [0, 1])
def test_exclude_outside_changes_nothing_for_linear(exclude_outside):
    x = RNG.standard_normal((1, 2, 3, 4)).astype(np.float32)
    scales = np.array([1, 1, 3.3, 0.7], np.float32)
    kw = dict(mode="linear", coordinate_transformation_mode="half_pixel", exclude_outside=exclude_outside)
    np.testing.assert_allclose(resize_fast(x, None, scales, **kw), resize(x, None, scales, **kw), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", ["antialias", "float64", "cubic", "crop"])
def test_what_the_kernel_does_not_do_goes_to_the_reference(case):
    x = RNG.standard_normal((1, 2, 8, 6)).astype(np.float64 if case == "float64" else np.float32)
    scales = np.array([1, 1, 0.5, 1.5], np.float32)
    kw = dict(mode="cubic" if case == "cubic" else "linear", antialias=int(case == "antialias"))
    roi = None
    if case == "crop":
        kw["coordinate_transformation_mode"] = "tf_crop_and_resize"
        roi = np.array([0, 0, 0.2, 0.1, 1, 1, 0.9, 0.8], np.float32)
    np.testing.assert_array_equal(resize_fast(x, roi, scales, **kw), resize(x, roi, scales, **kw))


@pytest.mark.parametrize("shape", [(2, 4, 64), (2, 8, 6, 5), (1, 3, 2, 3, 4), (3, 1, 1, 1), (2, 3, 0, 4)])
@pytest.mark.parametrize("epsilon", [1e-5, 0.5])
def test_instance_norm_matches_the_reference(shape, epsilon):
    x = (RNG.standard_normal(shape) * 3 + 40).astype(np.float32)  # a mean far above the spread
    scale = RNG.standard_normal(shape[1]).astype(np.float32)
    b = RNG.standard_normal(shape[1]).astype(np.float32)
    with warnings.catch_warnings():  # numpy's mean of an empty plane
        warnings.simplefilter("ignore", RuntimeWarning)
        want = instance_normalization(x, scale, b, epsilon=epsilon)
    got = instance_norm_fast(x, scale, b, epsilon=epsilon)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# -- torch exports, end to end ---------------------------------------------------------------------
torch = pytest.importorskip("torch")
from benchmarks.resize_norm import export as _export  # noqa: E402


def _run_both(model: onnx.ModelProto, shape):
    x = RNG.standard_normal(shape).astype(np.float32)
    p = Predictor(Config(model_path=model))
    got = p.run({"x": x})["y"]
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    return {s.node.op_type: s.kernel.fn for s in p.session.steps}


@pytest.mark.parametrize("align_corners", [False, True])
def test_torch_bilinear_upsampling_runs_the_fast_kernel(align_corners):
    module = torch.nn.Upsample(scale_factor=2, mode="bilinear", align_corners=align_corners)
    assert _run_both(_export(module, (2, 5, 9, 12)), (2, 5, 9, 12))["Resize"] is resize_fast


def test_torch_group_norm_runs_the_fast_kernel():
    module = torch.nn.GroupNorm(4, 16)
    with torch.no_grad():
        module.weight.normal_()
        module.bias.normal_()
    assert _run_both(_export(module, (2, 16, 10, 7)), (2, 16, 10, 7))["InstanceNormalization"] is instance_norm_fast


def test_torch_instance_norm_runs_the_fast_kernel():
    module = torch.nn.InstanceNorm2d(6, affine=True)
    with torch.no_grad():
        module.weight.normal_()
        module.bias.normal_()
    assert _run_both(_export(module, (2, 6, 11, 8)), (2, 6, 11, 8))["InstanceNormalization"] is instance_norm_fast
