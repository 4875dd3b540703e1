"""Dynamic batching and the predictor pool under concurrent load, every result checked."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from inference import Config, Predictor
from inference.batching import DynamicBatcher, PredictorPool
from inference.errors import ConfigError, InputError
from tests.conftest import mlp_reference


def _hammer(call, model, threads: int = 12, per_thread: int = 15) -> list[str]:
    errors: list[str] = []

    def worker(tid: int) -> None:
        rng = np.random.default_rng(tid)
        for i in range(per_thread):
            x = rng.normal(size=(int(rng.integers(1, 4)), 8)).astype(np.float32)
            got = call({"x": x})["y"]
            if got.shape != (len(x), 4) or not np.allclose(got, mlp_reference(model, x), rtol=1e-5, atol=1e-6):
                errors.append(f"thread {tid} request {i}: wrong result")

    ts = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return errors


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
