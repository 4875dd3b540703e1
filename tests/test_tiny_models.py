"""MLPerf Tiny's other models in the zoo (keyword spotting, visual wake words, anomaly detection)
equal onnxruntime's outputs, and the autoencoder's BatchNormalizations fold into its products."""
from __future__ import annotations

import numpy as np
import pytest

from inference import Config, Predictor, zoo
from inference.onnx_export import model_to_proto

RTOL, ATOL = 1e-4, 1e-5


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("name", ["ds_cnn_kws", "mobilenet_v1_vww", "fc_autoencoder"])
def test_tiny_model_equals_onnxruntime(name, threads):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    proto = model_to_proto(zoo.ZOO[name]())
    onnx.checker.check_model(proto, full_check=True)
    x = np.random.default_rng(3).standard_normal(zoo.input_shape(name, 3)).astype(np.float32)
    feed = proto.graph.input[0].name
    want = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {feed: x})[0]
    p = Predictor(Config(model_path=proto.SerializeToString(), num_threads=threads))
    for rows in (3, 1):  # a batch, then one row (another plan of the same session)
        got = list(p.run({feed: x[:rows]}).values())[0]
        np.testing.assert_allclose(got, want[:rows], rtol=RTOL, atol=ATOL)


def test_autoencoder_runs_one_fused_product_per_layer():
    """Each Dense -> BatchNormalization -> Relu of the autoencoder is one FusedMatMul step with
    the Relu in its epilogue (the BatchNormalization folded into the Gemm's weight and bias)."""
    p = Predictor(Config(model_path=model_to_proto(zoo.fc_autoencoder()).SerializeToString(), num_threads=1))
    steps = [(s.node.op_type, s.node.attrs.get("activation", "")) for s in p.session.steps]
    assert steps == [("FusedMatMul", "Relu")] * 9 + [("FusedMatMul", "")]
