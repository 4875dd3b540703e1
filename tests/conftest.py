"""Shared fixtures: small models built in code and the real models onnx ships."""
from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Callable

import numba
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from inference import Config, Predictor
from inference.builder import GraphBuilder
from inference.kernel_replay import CAPTURE_AFTER
from inference.kernels import _jit

LIGHT_MODELS = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def build_mlp(opset: int = 17, seed: int = 0):
    """x[batch, 8] -> Gemm -> Relu -> MatMul -> Add -> Softmax: a tiny classifier."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder("mlp", opset=opset)
    x = b.input("x", np.float32, ["batch", 8])
    h = b.op("Relu", b.op("Gemm", x, b.const(rng.normal(size=(8, 16)).astype(np.float32), "w1"),
                          b.const(rng.normal(size=16).astype(np.float32), "b1")))
    logits = b.op("Add", b.op("MatMul", h, b.const(rng.normal(size=(16, 4)).astype(np.float32), "w2")),
                  b.const(np.zeros(4, np.float32), "b2"))
    b.op("Softmax", logits, axis=-1, outputs=["y"])
    b.output("y", np.float32, ["batch", 4])
    return b.build()


def mlp_reference(model, x: np.ndarray) -> np.ndarray:
    init = model.graph.initializers
    h = np.maximum(x @ init["w1"] + init["b1"], 0)
    z = h @ init["w2"] + init["b2"]
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.fixture
def mlp_model():
    return build_mlp()


@pytest.fixture
def mlp_path(tmp_path, mlp_model):
    from inference import save_model

    path = tmp_path / "mlp.onnx"
    save_model(mlp_model, path)
    return path


@pytest.fixture
def squeezenet_path() -> Path:
    return LIGHT_MODELS / "light_squeezenet.onnx"


@contextlib.contextmanager
def kernel_threads(n: int):
    """Our kernels on ``n`` threads (numba's pool, as many as it has, and the parallel twins, on
    test-sized arrays too: ``_jit.PARALLEL_FROM`` lowered), restored after."""
    before, parallel, from_ = numba.get_num_threads(), _jit._POLICY["parallel"], _jit.PARALLEL_FROM
    _jit.use_parallel_kernels(n > 1)
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    _jit.PARALLEL_FROM = 0 if n > 1 else from_
    try:
        yield numba.get_num_threads()
    finally:
        _jit.use_parallel_kernels(parallel)
        numba.set_num_threads(before)
        _jit.PARALLEL_FROM = from_


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def threads(request):
    """The kernels' thread count for the test, restored after."""
    with kernel_threads(request.param):
        yield request.param


@pytest.fixture
def two_threads():
    """Our kernels on two threads for the test (where numba has them); the count numba gives."""
    with kernel_threads(2) as n:
        yield n


def run_as_standard_onnx(model, feeds: dict) -> list:
    """``model`` (optimized: our ops in it) decomposed to standard ONNX, checked (onnx.checker, no
    custom domain, no initializer left unread), and run in onnxruntime on ``feeds``."""
    import onnxruntime as ort

    from inference.decompose import decompose_to_standard
    from inference.onnx_export import model_to_proto

    standard = model_to_proto(decompose_to_standard(model))
    onnx.checker.check_model(standard)
    assert not any(n.domain for n in standard.graph.node)
    read = {i for n in standard.graph.node for i in n.input}
    assert {t.name for t in standard.graph.initializer} <= read  # e.g. no HWIO weight beside its OIHW copy
    return ort.InferenceSession(standard.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def in_threads(work: Callable[[int], None], threads: int) -> list[BaseException]:
    """Run ``work(0)`` ... ``work(threads - 1)`` each on its own thread, all at once, and return what
    they raised (a worker asserts its own results; the test asserts this list is empty)."""
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            work(i)
        except BaseException as e:  # noqa: BLE001 - handed to the test's thread
            errors.append(e)

    runners = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in runners:
        t.start()
    for t in runners:
        t.join()
    return errors


def on_each_step_call(session, note) -> None:
    """Call ``note(step)`` at every call of ``session``'s steps from now on (a run made by kernel
    replay makes none)."""
    for step in session.steps:
        def noted(*args, _call=step.call, _step=step):
            note(_step)
            return _call(*args)

        step.call = noted


def count_step_calls(predictor) -> list[int]:
    """A counter (``[n]``) of the calls of ``predictor``'s session steps from now on."""
    count = [0]

    def note(step) -> None:
        count[0] += 1

    on_each_step_call(predictor.session, note)
    return count


def fast_step_replays_as_onnxruntime(nodes: list, make_feeds: Callable[[np.random.Generator], dict[str, np.ndarray]],
                                     outputs: dict[str, int], inits: dict[str, np.ndarray], ops: tuple[str, ...],
                                     opset: int = 17, threads: int = 1, rtol: float = 1e-5,
                                     atol: float = 1e-6) -> Predictor:
    """A model of ``nodes`` (feeds from ``make_feeds``, ``outputs``: name -> ONNX elem type):
    every step of the op types ``ops`` (each present) takes a fast kernel, CAPTURE_AFTER + 3 runs on
    new feeds match onnxruntime (floats within ``rtol``/``atol``, other types exactly), and the
    runs are replayed."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    first = make_feeds(rng)
    graph = helper.make_graph(
        nodes, "_".join(ops).lower(),
        [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for k, v in first.items()],
        [helper.make_tensor_value_info(k, t, None) for k, t in outputs.items()],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    proto = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]),
                                              strict_mode=True)  # the outputs' shapes, which the checker wants
    onnx.checker.check_model(proto)
    p = Predictor(Config(model_path=proto.SerializeToString(), num_threads=threads))
    kinds = {(s.node.op_type, s.kernel.kind) for s in p.session.steps if s.node.op_type in ops}
    assert kinds == {(op, "fast") for op in ops}, [(s.node.op_type, s.kernel.kind) for s in p.session.steps]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    for feeds in [first] + [make_feeds(rng) for _ in range(CAPTURE_AFTER + 2)]:
        got, want = p.run(feeds), sess.run(list(outputs), feeds)
        for name, w in zip(outputs, want):
            assert got[name].dtype == w.dtype and got[name].shape == w.shape, name
            if w.dtype.kind == "f":
                np.testing.assert_allclose(got[name], w, rtol=rtol, atol=atol, err_msg=name)
            else:
                np.testing.assert_array_equal(got[name], w, err_msg=name)
    assert "replayed" in p.replay_report(), p.replay_report()
    return p
