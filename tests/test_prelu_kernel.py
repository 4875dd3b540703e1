"""The fast float32 PRelu (``inference.kernels.prelu``) gives the reference's results bit for bit
for every slope layout (one value, per channel, per last-axis element, same shape, slopes varying
along axes apart), at one and two threads; what it does not take goes to the reference; and a
model of PRelus takes the fast kernel, is replayed and matches onnxruntime."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from inference.errors import ShapeInferenceError
from inference.kernels.prelu import channel_run
from inference.ops.registry import lookup
from tests.conftest import fast_step_replays_as_onnxruntime

RNG = np.random.default_rng(11)


def _kernels(opset: int = 17):
    return lookup("PRelu", "", opset, "fast").fn, lookup("PRelu", "", opset).fn


def _data(shape: tuple[int, ...]) -> np.ndarray:
    """Normal values with the special ones PRelu must keep: -0, +-inf, NaN."""
    x = RNG.standard_normal(shape).astype(np.float32)
    flat = x.reshape(-1)
    flat[RNG.permutation(flat.size)[:min(4, flat.size)]] = [-0.0, np.inf, -np.inf, np.nan][:min(4, flat.size)]
    return x


SLOPES = [  # (x shape, slope shape): one value, per channel, per last-axis element, same shape, apart
    ((1, 128, 200), (1,)), ((2, 3, 5, 7), (3, 1, 1)), ((2, 3, 5, 7), (1, 3, 1, 1)), ((4, 6, 9), (6, 1)),
    ((4, 6, 9), (9,)), ((3, 17), (17,)), ((2, 3, 4), (2, 3, 4)), ((5,), (5,)), ((5,), (1,)), ((), ()),
    ((1, 1, 40000), (1,)), ((2, 1, 3, 1), (1, 3, 1)), ((2, 3, 5, 7), (3, 1, 7)), ((2, 3, 5, 7), (2, 1, 1, 7)),
    ((4, 6, 9), (4, 1, 9)), ((1, 70000), (1, 1)), ((2, 40000), (2, 1)),
]


@pytest.mark.parametrize("x_shape, slope_shape", SLOPES, ids=str)
def test_every_slope_layout_is_the_references_bit_for_bit(x_shape, slope_shape, threads):
    fast, ref = _kernels()
    x, slope = _data(x_shape), RNG.standard_normal(slope_shape).astype(np.float32)
    got, want = fast(x, slope), ref(x, slope)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert np.array_equal(got.view(np.int32), want.view(np.int32))  # NaNs and signed zeros too
    assert not np.shares_memory(got, x)


def test_the_layouts_found():
    assert channel_run((1, 128, 200), (1,)) == (1, 1, 25600)
    assert channel_run((2, 3, 5, 7), (3, 1, 1)) == (2, 3, 35)
    assert channel_run((4, 6, 9), (9,)) == (24, 9, 1)
    assert channel_run((2, 3, 4), (2, 3, 4)) == (1, 24, 1)
    assert channel_run((2, 1, 3, 1), (1, 3, 1)) == (2, 3, 1)  # axes of length 1 inside the run
    assert channel_run((2, 3, 5, 7), (3, 1, 7)) is None  # apart: broadcast views
    assert channel_run((2, 3), (4,)) is None and channel_run((3,), (1, 3)) is None  # not broadcasting to x


def test_a_non_contiguous_input_and_a_nan_slope():
    fast, ref = _kernels()
    x = _data((6, 8, 10))[:, ::2].transpose(0, 2, 1)
    slope = RNG.standard_normal((4,)).astype(np.float32)
    slope[1] = np.nan
    assert np.array_equal(fast(x, slope), ref(x, slope), equal_nan=True)


def test_opset_6_reads_a_1d_slope_per_channel():
    fast, ref = _kernels(6)
    x, slope = _data((2, 4, 3, 3)), RNG.standard_normal(4).astype(np.float32)
    want = ref(x, slope)
    assert np.array_equal(fast(x, slope), want, equal_nan=True)
    assert np.array_equal(fast(x, slope), np.where(x < 0, x * slope.reshape(4, 1, 1), x), equal_nan=True)


def test_what_it_does_not_take_goes_to_the_reference():
    fast, ref = _kernels()
    x64, s64 = RNG.standard_normal((3, 4)), np.float64([0.5])
    assert fast(x64, s64).dtype == np.float64 and np.array_equal(fast(x64, s64), ref(x64, s64))
    x16 = RNG.standard_normal((3, 4)).astype(np.float16)
    assert np.array_equal(fast(x16, np.float16([0.5])), ref(x16, np.float16([0.5])))
    assert fast(np.zeros((0, 3), np.float32), np.ones(3, np.float32)).shape == (0, 3)
    with pytest.raises(ShapeInferenceError, match="does not broadcast"):
        fast(np.ones((2, 3), np.float32), np.ones(4, np.float32))


@pytest.mark.parametrize("num_threads", [1, 2])
def test_a_model_of_prelus_is_replayed_and_matches_onnxruntime(num_threads):
    """8 PRelus on (1, 128, 200) with slopes as torch exports them (``nn.PReLU()``: one value;
    ``nn.PReLU(128)``: (128, 1)) and same-shape and last-axis ones; every one the fast kernel."""
    slopes = {"s1": np.float32([0.25]), "s128": (RNG.standard_normal((128, 1)) / 4).astype(np.float32),
              "sfull": (RNG.standard_normal((128, 200)) / 4).astype(np.float32),
              "slast": (RNG.standard_normal(200) / 4).astype(np.float32)}
    order = ["s1", "s128", "sfull", "slast"] * 2
    nodes = [helper.make_node("PRelu", [f"h{i}" if i else "x", order[i]], [f"h{i + 1}" if i < 7 else "y"])
             for i in range(8)]
    fast_step_replays_as_onnxruntime(nodes, lambda rng: {"x": rng.standard_normal((1, 128, 200)).astype(np.float32)},
                                     {"y": onnx.TensorProto.FLOAT}, slopes, ("PRelu",), threads=num_threads)


def test_a_prelu_runs_in_place_of_its_dying_input():
    """PRelu is elementwise (each output from its own input element and a slope), so the memory
    plan gives it its dying input's block (``memory_plan.IN_PLACE_OPS``); outputs still match
    onnxruntime through the arena and the replay."""
    from inference.memory_plan import plan_memory
    nodes = [helper.make_node("Mul", ["x", "two"], ["doubled"]), helper.make_node("PRelu", ["doubled", "slope"], ["p"]),
             helper.make_node("Add", ["p", "x"], ["y"])]

    def feeds(rng):
        return {"x": rng.standard_normal((2, 16, 30)).astype(np.float32)}

    p = fast_step_replays_as_onnxruntime(nodes, feeds, {"y": onnx.TensorProto.FLOAT},
                                         {"two": np.float32([2.0]), "slope": (RNG.random((16, 1)) * 0.5).astype(np.float32)},
                                         ("PRelu",))
    plan = plan_memory(p.session, batch=2)
    assert plan.buffers["p"].shares_with == "doubled", plan.report()
