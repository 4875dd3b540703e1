"""Dynamic batching and the predictor pool under concurrent load, every result checked."""
from __future__ import annotations

import numpy as np
import pytest

from inference import Config, Predictor
from inference.batching import DynamicBatcher, PredictorPool
from inference.errors import ConfigError, InputError
from tests.conftest import in_threads, mlp_reference


def _hammer(call, model, threads: int = 12, per_thread: int = 15) -> list[BaseException]:
    def work(tid: int) -> None:
        rng = np.random.default_rng(tid)
        for i in range(per_thread):
            x = rng.normal(size=(int(rng.integers(1, 4)), 8)).astype(np.float32)
            got = call({"x": x})["y"]
            assert got.shape == (len(x), 4), f"thread {tid} request {i}: shape {got.shape}"
            np.testing.assert_allclose(got, mlp_reference(model, x), rtol=1e-5, atol=1e-6,
                                       err_msg=f"thread {tid} request {i}")

    return in_threads(work, threads)


def test_batcher_merges_and_returns_each_callers_rows(mlp_path, mlp_model):
    predictor = Predictor(Config(model_path=str(mlp_path)))
    with DynamicBatcher(predictor, max_batch=16, max_latency_ms=20) as batcher:
        assert _hammer(batcher.run, mlp_model) == []
        stats = batcher.stats
    assert stats.requests == 12 * 15
    assert stats.batches < stats.requests  # requests really were merged
    assert stats.rows <= stats.batches * 16 + 3


def test_pool_is_thread_safe(mlp_path, mlp_model):
    pool = PredictorPool(Config(model_path=str(mlp_path)), size=3)
    assert _hammer(pool.run, mlp_model) == []


def test_batcher_over_pool(mlp_path, mlp_model):
    pool = PredictorPool(Config(model_path=str(mlp_path)), size=2)
    with DynamicBatcher(pool, max_batch=8, max_latency_ms=5) as batcher:
        assert _hammer(batcher.run, mlp_model, threads=6, per_thread=10) == []


def test_bad_requests_fail_alone(mlp_path):
    predictor = Predictor(Config(model_path=str(mlp_path)))
    with DynamicBatcher(predictor, max_batch=8, max_latency_ms=1) as batcher:
        with pytest.raises(InputError, match="same leading batch dim"):
            batcher.submit({"x": np.float32(1.0)})
        bad = batcher.submit({"x": np.ones((2, 9), np.float32)})  # wrong width: its own batch
        good = batcher.submit({"x": np.ones((1, 8), np.float32)})
        with pytest.raises(InputError, match="expects dim 1 = 8"):
            bad.result(5)
        assert good.result(5)["y"].shape == (1, 4)


def test_config_errors():
    with pytest.raises(ConfigError):
        PredictorPool(Config(model_path=b"x"), size=0)


def test_pool_replicas_share_one_load_of_the_weights():
    """A pool's Predictors are replicas of one load: the same weight arrays (and so one packing
    each), their own sessions and tensor handles; a CNN hammered through it equals onnxruntime."""
    import onnxruntime as ort

    from inference import zoo
    from inference.onnx_export import model_to_proto

    proto = model_to_proto(zoo.mobilenet_v2(size=64)).SerializeToString()
    pool = PredictorPool(Config(model_path=proto), size=3)
    replicas = [pool._free.get() for _ in range(3)]
    first = replicas[0].model.graph.initializers
    for r in replicas[1:]:
        assert r.model.graph.initializers is first and r.session is not replicas[0].session
    a, b = replicas[:2]  # the handle API of one replica is its own
    xa, xb = (np.random.default_rng(s).standard_normal((1, 3, 64, 64)).astype(np.float32) for s in (1, 2))
    a.get_input_tensor("input").copy_from(xa)
    b.get_input_tensor("input").copy_from(xb)
    a.run()
    b.run()
    ya, yb = (p.get_output_tensor("logits").copy_to() for p in (a, b))
    for r in replicas:
        pool._free.put(r)
    peer = ort.InferenceSession(proto, providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(ya, peer.run(None, {"input": xa})[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(yb, peer.run(None, {"input": xb})[0], rtol=1e-4, atol=1e-5)
    def work(i: int) -> None:
        for j in range(4):
            x = np.random.default_rng(10 * i + j).standard_normal((1 + j % 2, 3, 64, 64)).astype(np.float32)
            np.testing.assert_allclose(pool.run({"input": x})["logits"], peer.run(None, {"input": x})[0], rtol=1e-4,
                                       atol=1e-5)

    assert in_threads(work, 5) == []
