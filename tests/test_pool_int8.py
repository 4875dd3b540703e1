"""Max pools on the uint8 / int8 tensors of quantized models (our quantizer leaves ResNet's stem
pool between two quantized convolutions): the float kernels' plans that read no padding run on
8-bit values with the reference's bytes; plans that would pad (no 8-bit -inf) run the reference.
A quantized model with such a pool runs in compiled calls only, so it is replayed."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from inference import Config, Predictor
from inference.ops.registry import KernelContext, lookup
from tests.test_pool_nan import CASES


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_eight_bit_max_pool_equals_reference(case, dtype):
    info = np.iinfo(dtype)
    x = np.random.default_rng(7).integers(info.min, info.max, (2, 5, 7, 9), endpoint=True).astype(dtype)
    x[0, 0, 0, :3] = [info.min, info.max, info.min]  # the type's extremes at the image's edge
    ctx = KernelContext(None, 13, 1)
    want = lookup("MaxPool", "", 13, "reference").fn(x, **CASES[case], ctx=ctx)
    got = lookup("MaxPool", "", 13, "fast").fn(x, **CASES[case], ctx=ctx)
    assert got.dtype == want.dtype == dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_a_quantized_max_pool_is_replayed_and_matches_onnxruntime():
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("MaxPool", ["q"], ["p"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("DequantizeLinear", ["p", "s", "z"], ["y"])]
    inits = [numpy_helper.from_array(np.asarray(0.05, np.float32), "s"),
             numpy_helper.from_array(np.asarray(128, np.uint8), "z")]
    graph = helper.make_graph(nodes, "qpool", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 28, 28])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 14, 14])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(proto)
    p = Predictor(Config(model_path=proto.SerializeToString(), num_threads=1))
    pool = next(s for s in p.session.steps if s.node.op_type == "MaxPool")
    assert pool.kernel.kind == "fast" and p.session.graph.type_of(pool.node.inputs[0]).elem_type == TensorProto.UINT8
    peer = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for _ in range(5):
        x = (rng.standard_normal((1, 8, 28, 28)) * 3).astype(np.float32)
        np.testing.assert_array_equal(p.run({"x": x})["y"], peer.run(None, {"x": x})[0])
    assert "replayed" in p.replay_report(), p.replay_report()
