"""A batch of zero rows runs and gives empty outputs of the right shape, as onnxruntime does, through
every fused kernel family of the benchmark models (MobileNetV2's fused blocks divided by the batch
to size their bands and raised ZeroDivisionError)."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from inference import Config, Predictor, zoo
from inference.onnx_export import model_to_proto

MODELS = {
    "mobilenet_v2": lambda: model_to_proto(zoo.mobilenet_v2(size=64)),
    "resnet18": lambda: model_to_proto(zoo.resnet18(size=64)),
    "transformer": lambda: model_to_proto(zoo.transformer_encoder(seq=16, dim=32, heads=2, layers=1, ffn=64)),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_zero_rows_give_empty_outputs(name, threads):
    proto = MODELS[name]()
    inp = proto.graph.input[0]
    shape = [0] + [d.dim_value for d in inp.type.tensor_type.shape.dim[1:]]
    x = {inp.name: np.zeros(shape, np.float32)}
    got = Predictor(Config(model_path=proto.SerializeToString())).run(x)
    want = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, x)
    assert [v.shape for v in got.values()] == [w.shape for w in want] and want[0].shape[0] == 0
