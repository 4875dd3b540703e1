"""The fast Slice (``inference.kernels.slice``): the reference's part for every start, end, axis and
step, a view of the input where the part is one block, a copy in numba otherwise, so that a model
slicing channels (channels-last: strided) is replayed; and a channel Slice joins the layout pass's
channels-last region."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from inference import Config, Predictor
from inference.kernels.slice import slice_float32
from inference.ops.indexing import slice_

CASES = [  # starts, ends, axes, steps
    ([1], [4], [1], None), ([0, 2], [3, 5], [3, 2], None), ([5], [0], [1], [-1]), ([-3], [100], [-1], None),
    ([0], [1], [0], None), ([1, 0], [6, 9], [1, 3], [2, 3]), ([0], [2], None, None), ([2], [2], [2], None),
    ([-100], [100], [3], [1]), ([0, 0, 1], [1, 6, 4], [0, 1, 2], None), ([4], [-100], [2], [-2]),
]


def _arrays(*lists):
    return [None if v is None else np.array(v, np.int64) for v in lists]


@pytest.mark.parametrize("starts, ends, axes, steps", CASES)
@pytest.mark.parametrize("threads", [1, 2])
def test_the_part_equals_the_reference(starts, ends, axes, steps, threads):
    import numba
    numba.set_num_threads(threads)
    try:
        x = np.random.default_rng(0).standard_normal((2, 6, 5, 7)).astype(np.float32)
        args = _arrays(starts, ends, axes, steps)
        want, got = slice_(x, *args), slice_float32(x, *args)
        assert got.shape == want.shape and got.dtype == np.float32
        np.testing.assert_array_equal(got, want)
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)


def test_a_block_is_a_view_a_strided_part_a_copy():
    x = np.arange(2 * 6 * 4, dtype=np.float32).reshape(2, 6, 4)
    block = slice_float32(x, *_arrays([1], [2], [0], None))
    assert np.shares_memory(block, x) and block.flags.c_contiguous
    part = slice_float32(x, *_arrays([1], [3], [2], None))
    assert not np.shares_memory(part, x) and part.flags.c_contiguous
    np.testing.assert_array_equal(part, x[:, :, 1:3])


def test_other_dtypes_and_bad_slices_go_to_the_reference():
    x = np.arange(12, dtype=np.int64).reshape(3, 4)
    np.testing.assert_array_equal(slice_float32(x, *_arrays([1], [3], [1], None)), x[:, 1:3])
    from inference.errors import KernelError
    with pytest.raises(KernelError, match="steps must not be 0"):
        slice_float32(x.astype(np.float32), *_arrays([0], [2], [1], [0]))


def _channel_slices() -> onnx.ModelProto:
    """A 1x1 conv's output chunked in two along the channels, each half through its own 3x3 conv,
    concatenated: the C2f pattern with constant bounds."""
    rng = np.random.default_rng(1)
    w = lambda *s: numpy_helper.from_array(rng.standard_normal(s).astype(np.float32) * 0.2, f"w{len(s)}_{s[0]}_{s[2]}")
    inits = [w(32, 16, 1, 1), w(16, 16, 3, 3)] + [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
                                                    (("s0", [0]), ("s1", [16]), ("s2", [32]), ("ax", [1]))]
    nodes = [helper.make_node("Conv", ["x", "w4_32_1"], ["a"]), helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("Slice", ["r", "s0", "s1", "ax"], ["lo"]), helper.make_node("Slice", ["r", "s1", "s2", "ax"], ["hi"]),
             helper.make_node("Conv", ["hi", "w4_16_3"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Concat", ["lo", "c"], ["y"], axis=1)]
    graph = helper.make_graph(nodes, "chunks", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 16, 24, 24])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 32, 24, 24])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_channel_slices_run_channels_last_and_replay(monkeypatch):
    from inference.passes import layout
    monkeypatch.setattr(layout, "MIN_GEMM_MACS_PER_BOUNDARY", 0.0)  # a region this small pays for no transposes
    proto = _channel_slices()
    onnx.checker.check_model(proto)
    p = Predictor(Config(model_path=proto.SerializeToString(), num_threads=1))
    s = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    for batch in (2, 1, 2, 2, 2):
        x = np.random.default_rng(batch).standard_normal((batch, 16, 24, 24)).astype(np.float32)
        np.testing.assert_allclose(p.run({"x": x})["y"], s.run(None, {"x": x})[0], rtol=1e-4, atol=1e-5)
    steps = {st.node.op_type: st.kernel.kind for st in p.session.steps}
    assert steps["Slice"] == "fast" and "FusedConvNHWC" in steps and "Conv" not in steps, steps
    g = p.model.graph
    assert all(g.initializers[n.inputs[3]].tolist() == [3] for n in g.nodes if n.op_type == "Slice")
    assert g.op_histogram()["Transpose"] == 2  # one region: into it and out of it
    assert "x [2, 16, 24, 24] at 1 thread(s): replayed" in p.replay_report(), p.replay_report()
