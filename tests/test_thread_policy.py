"""Which pool runs a graph's work at n threads (``inference.thread_policy``), the FLOP counts it
rests on, and that a Predictor sets the pools accordingly."""
from __future__ import annotations

import numba
import numpy as np
import pytest
from threadpoolctl import threadpool_info

from inference import Config, Predictor, zoo
from inference.flops import node_flops
from inference.kernels import _jit
from inference.onnx_export import model_to_proto
from inference.thread_policy import numba_share, prefers_numba_pool


def _blas_threads() -> int:
    return max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")


@pytest.fixture(scope="module")
def resnet():
    return Predictor(Config(model_path=model_to_proto(zoo.resnet18(size=32, classes=10)), num_threads=1))


@pytest.fixture(scope="module")
def transformer():
    model = zoo.transformer_encoder(seq=8, dim=32, heads=2, layers=1, ffn=64)
    return Predictor(Config(model_path=model_to_proto(model), num_threads=1))


def test_fused_ops_count_their_multiply_adds(resnet, transformer):
    g = resnet.model.graph
    conv = next(n for n in g.nodes if n.op_type == "FusedConv" and n.attrs.get("kernel_shape") == [3, 3])
    out, w = g.concrete_shape(conv.outputs[0]), g.concrete_shape(conv.inputs[1])
    assert node_flops(g, conv) == 2 * int(np.prod(out)) * int(np.prod(w[1:]))
    t = transformer.model.graph
    mm = next(n for n in t.nodes if n.op_type == "FusedMatMul")
    a, y = t.concrete_shape(mm.inputs[0]), t.concrete_shape(mm.outputs[0])
    assert node_flops(t, mm) == 2 * int(np.prod(y)) * a[-1]


def test_a_cnn_runs_on_numba_and_a_transformer_on_blas(resnet, transformer):
    assert numba_share(resnet.model.graph) > 0.95 and prefers_numba_pool(resnet.model.graph)
    assert numba_share(transformer.model.graph) < 0.1 and not prefers_numba_pool(transformer.model.graph)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 numba threads")
def test_predictor_sets_one_busy_pool():
    cnn = model_to_proto(zoo.resnet18(size=32, classes=10))
    try:
        Predictor(Config(model_path=cnn, num_threads=2))
        assert _blas_threads() == 1 and _jit._POLICY["parallel"] and numba.get_num_threads() == 2
        Predictor(Config(model_path=model_to_proto(zoo.transformer_encoder(seq=8, dim=32, heads=2, layers=1, ffn=64)),
                         num_threads=2))
        assert _blas_threads() == 2 and not _jit._POLICY["parallel"]
    finally:
        Predictor(Config(model_path=cnn, num_threads=1))
    assert _blas_threads() == 1 and not _jit._POLICY["parallel"]
