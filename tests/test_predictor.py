"""The Predictor contract: handles, dict runs, dtype/shape checks, dynamic batch, devices."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from inference import Config, Predictor
from inference.errors import ConfigError, InputError
from tests.conftest import mlp_reference


def test_handle_api_matches_numpy(mlp_path, mlp_model):
    predictor = Predictor(Config(model_path=str(mlp_path), device="cpu", optimize_graph=True,
                                 fusion=True, memory_optimization=True, num_threads=None))
    names = predictor.get_input_names()
    assert names == ["x"] and predictor.get_output_names() == ["y"]
    x = np.random.default_rng(1).normal(size=(5, 8)).astype(np.float32)
    handle = predictor.get_input_tensor(names[0])
    handle.copy_from(x)
    assert handle.name == "x" and handle.shape == (5, 8) and handle.dtype == np.float32
    predictor.run()
    out = predictor.get_output_tensor("y").copy_to()
    np.testing.assert_allclose(out, mlp_reference(mlp_model, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("source", ["path", "bytes", "proto"])
def test_accepts_path_bytes_and_proto(mlp_path, source):
    proto = onnx.load(str(mlp_path))
    given = {"path": str(mlp_path), "bytes": proto.SerializeToString(), "proto": proto}[source]
    outs = Predictor(Config(model_path=given)).run({"x": np.ones((2, 8), np.float32)})
    assert outs["y"].shape == (2, 4)


def test_dynamic_batch(mlp_path, mlp_model):
    predictor = Predictor(Config(model_path=str(mlp_path)))
    for batch in (1, 7, 64):
        x = np.random.default_rng(batch).normal(size=(batch, 8)).astype(np.float32)
        out = predictor.run({"x": x})["y"]
        np.testing.assert_allclose(out, mlp_reference(mlp_model, x), rtol=1e-5, atol=1e-6)


def test_declared_shape_before_binding(mlp_path):
    handle = Predictor(Config(model_path=str(mlp_path))).get_input_tensor("x")
    assert handle.shape == ("batch", 8) and handle.dtype == np.float32


def test_wrong_dtype_is_named(mlp_path):
    predictor = Predictor(Config(model_path=str(mlp_path)))
    with pytest.raises(InputError, match=r"input 'x' expects dtype float32, got float64"):
        predictor.get_input_tensor("x").copy_from(np.ones((2, 8)))


def test_wrong_shape_is_named(mlp_path):
    predictor = Predictor(Config(model_path=str(mlp_path)))
    predictor.run({"x": np.ones((2, 8), np.float32)})  # a shape that passed is remembered; others still checked
    with pytest.raises(InputError, match=r"input 'x' expects dtype float32, got float64"):
        predictor.run({"x": np.ones((2, 8))})
    with pytest.raises(InputError, match=r"input 'x' expects dim 1 = 8"):
        predictor.run({"x": np.ones((2, 9), np.float32)})
    with pytest.raises(InputError, match=r"expects rank 2"):
        predictor.run({"x": np.ones(8, np.float32)})


def test_missing_and_unknown_inputs(mlp_path):
    predictor = Predictor(Config(model_path=str(mlp_path)))
    with pytest.raises(InputError, match=r"missing inputs \['x'\]"):
        predictor.run({})
    with pytest.raises(InputError, match=r"unknown inputs \['z'\]"):
        predictor.run({"x": np.ones((1, 8), np.float32), "z": np.ones(1)})
    with pytest.raises(InputError, match="has no input 'nope'"):
        predictor.get_input_tensor("nope")


def test_output_before_run_is_an_error(mlp_path):
    predictor = Predictor(Config(model_path=str(mlp_path)))
    with pytest.raises(InputError, match="call run"):
        predictor.get_output_tensor("y").copy_to()


@pytest.mark.parametrize("device", ["gpu", "cuda", "npu"])
def test_other_devices_give_a_clear_error(mlp_path, device):
    with pytest.raises(ConfigError, match=f"device '{device}' is not available"):
        Predictor(Config(model_path=str(mlp_path), device=device))


def test_num_threads_validated(mlp_path):
    with pytest.raises(ConfigError, match="num_threads"):
        Predictor(Config(model_path=str(mlp_path), num_threads=0))
    out = Predictor(Config(model_path=str(mlp_path), num_threads=1)).run({"x": np.ones((1, 8), np.float32)})
    assert out["y"].shape == (1, 4)


def test_copy_to_returns_a_copy(mlp_path):
    predictor = Predictor(Config(model_path=str(mlp_path)))
    predictor.run({"x": np.ones((1, 8), np.float32)})
    first = predictor.get_output_tensor("y").copy_to()
    first[:] = -1
    assert (predictor.get_output_tensor("y").copy_to() >= 0).all()


def test_cpu_affinity_pins_and_validates(mlp_path):
    import os

    before = os.sched_getaffinity(0)
    try:
        Predictor(Config(model_path=str(mlp_path), cpu_affinity=[0]))
        assert os.sched_getaffinity(0) == {0}
    finally:
        os.sched_setaffinity(0, before)
    with pytest.raises(ConfigError, match="cores \\[999\\] do not exist"):
        Predictor(Config(model_path=str(mlp_path), cpu_affinity=[999]))


def test_memory_optimization_switch(mlp_path):
    on = Predictor(Config(model_path=str(mlp_path)))
    off = Predictor(Config(model_path=str(mlp_path), memory_optimization=False))
    assert any(step.free_after for step in on.session.steps)
    assert not any(step.free_after for step in off.session.steps)
    x = np.ones((2, 8), np.float32)
    np.testing.assert_array_equal(on.run({"x": x})["y"], off.run({"x": x})["y"])
    plan = on.memory_plan(batch=16)
    assert plan.no_reuse_bytes > 0 and plan.peak_bytes <= plan.no_reuse_bytes
