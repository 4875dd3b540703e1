"""Fixed per-node cost: one-node models and a small MNIST CNN at batch 1, ours vs onnxruntime.

Run from the project root:  env -u OPENBLAS_CORETYPE python benchmarks/overhead.py [--reps 200]

Small models at batch 1 spend their time in per-node overhead (the run loop, attribute handling,
window geometry, numba dispatch), not in FLOPs. This prints, for one-node ONNX models built with
``onnx.helper`` and run through a one-node :class:`~inference.session.Session` (ours) and an
onnxruntime ``InferenceSession`` (both one thread), the min-of-``--reps`` time per call in
microseconds and ours/onnxruntime; then the MNIST CNN of ``benchmarks/quantization.py``
(conv-relu-pool x2, flatten, gemm), dense (16/32 channels) and 50 % channel-pruned (8/16), random
weights (speed does not depend on training), through our Predictor (all passes), our bare
Session.run of the same plan (the Predictor's own per-run cost is the difference) and
onnxruntime; and the per-node times of our pruned model. Rounds are interleaved (every runner
once per round), each round times ``--inner`` calls; the machine is shared, so read the ratios.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference import Config, Predictor  # noqa: E402
from inference.onnx_import import load_model  # noqa: E402
from inference.session import Session  # noqa: E402
from inference.threads import set_num_threads  # noqa: E402

F32 = TensorProto.FLOAT


def load() -> str:
    return "load avg " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def min_times(runners: dict[str, Callable[[], object]], reps: int, inner: int,
              clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Min over ``reps`` interleaved rounds of the mean seconds per call of ``inner`` calls, by
    ``clock`` (wall time; ``time.thread_time`` for the calling thread's CPU time)."""
    for f in runners.values():
        for _ in range(3):
            f()
    best = {k: float("inf") for k in runners}
    for _ in range(reps):
        for k, f in runners.items():
            t = clock()
            for _ in range(inner):
                f()
            best[k] = min(best[k], (clock() - t) / inner)
    return best


def one_node(op: str, inputs: dict[str, np.ndarray], consts: dict[str, np.ndarray], **attrs) -> bytes:
    """A one-node model: ``inputs`` fed, ``consts`` initializers, output ``y`` (shape left to inference)."""
    node = helper.make_node(op, list(inputs) + list(consts), ["y"], **attrs)
    graph = helper.make_graph(
        [node], op.lower(),
        [helper.make_tensor_value_info(k, F32, v.shape) for k, v in inputs.items()],
        [helper.make_tensor_value_info("y", F32, None)],
        [numpy_helper.from_array(v, k) for k, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)  # the checker wants y's shape
    model.graph.output[0].CopyFrom(inferred.graph.output[0])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def op_cases(rng: np.random.Generator) -> list[tuple[str, bytes, dict[str, np.ndarray]]]:
    r = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    x28, x14, x7, x10 = r(1, 1, 28, 28), r(1, 8, 14, 14), r(1, 16, 7, 7), r(1, 10)
    return [
        ("Flatten 1x16x7x7", one_node("Flatten", {"x": x7}, {}, axis=1), {"x": x7}),
        ("Reshape 1x16x7x7 -> 1x784", one_node("Reshape", {"x": x7}, {"s": np.array([1, -1], np.int64)}), {"x": x7}),
        ("MaxPool 2x2/2 1x8x14x14", one_node("MaxPool", {"x": x14}, {}, kernel_shape=[2, 2], strides=[2, 2]),
         {"x": x14}),
        ("AveragePool 2x2/2 1x8x14x14", one_node("AveragePool", {"x": x14}, {}, kernel_shape=[2, 2], strides=[2, 2]),
         {"x": x14}),
        ("Conv 1->8 3x3 p1 1x1x28x28", one_node("Conv", {"x": x28}, {"w": r(8, 1, 3, 3), "b": r(8)},
                                                kernel_shape=[3, 3], pads=[1, 1, 1, 1]), {"x": x28}),
        ("Conv 8->16 3x3 p1 1x8x14x14", one_node("Conv", {"x": x14}, {"w": r(16, 8, 3, 3), "b": r(16)},
                                                 kernel_shape=[3, 3], pads=[1, 1, 1, 1]), {"x": x14}),
        ("Relu 1x8x14x14", one_node("Relu", {"x": x14}, {}), {"x": x14}),
        ("Relu 1x10", one_node("Relu", {"x": x10}, {}), {"x": x10}),
        ("Add 1x10 + 1x10", one_node("Add", {"x": x10, "z": x10.copy()}, {}), {"x": x10, "z": x10}),
        ("Gemm 1x784 @ 784x10 + b", one_node("Gemm", {"x": r(1, 784)}, {"w": r(784, 10), "b": r(10)}),
         {"x": r(1, 784)}),
    ]


def cnn(c1: int, c2: int, rng: np.random.Generator) -> bytes:
    """``benchmarks/quantization.py``'s MNIST CNN with ``c1``/``c2`` conv channels, random weights."""
    nodes, inits, h = [], [], "input"
    for i, (cin, cout) in enumerate(((1, c1), (c1, c2))):
        w = (rng.standard_normal((cout, cin, 3, 3)) * np.sqrt(2 / (cin * 9))).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(np.zeros(cout, np.float32), f"b{i}")]
        nodes += [helper.make_node("Conv", [h, f"w{i}", f"b{i}"], [f"c{i}"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"]),
                  helper.make_node("MaxPool", [f"r{i}"], [f"p{i}"], kernel_shape=[2, 2], strides=[2, 2])]
        h = f"p{i}"
    inits += [numpy_helper.from_array(rng.standard_normal((c2 * 49, 10)).astype(np.float32) * 0.05, "wf"),
              numpy_helper.from_array(np.zeros(10, np.float32), "bf")]
    nodes += [helper.make_node("Flatten", [h], ["flat"], axis=1), helper.make_node("Gemm", ["flat", "wf", "bf"], ["output"])]
    graph = helper.make_graph(nodes, f"mnist_cnn_{c1}_{c2}", [helper.make_tensor_value_info("input", F32, ["N", 1, 28, 28])],
                              [helper.make_tensor_value_info("output", F32, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def ort_session(proto: bytes):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(proto, so, providers=["CPUExecutionProvider"])


def section_ops(args) -> None:
    print(f"\n## One-node models, us per call (min of {args.reps} x {args.inner}, {load()})\n")
    print("| op | ours | onnxruntime | ours / ort |\n|---|---|---|---|")
    for label, proto, feeds in op_cases(np.random.default_rng(0)):
        ours, ort = Session(load_model(proto)), ort_session(proto)
        np.testing.assert_allclose(ours.run(feeds)[0], ort.run(None, feeds)[0], rtol=1e-4, atol=1e-4)
        t = min_times({"ours": lambda: ours.run(feeds), "ort": lambda: ort.run(None, feeds)}, args.reps, args.inner)
        print(f"| {label} | {t['ours'] * 1e6:.1f} | {t['ort'] * 1e6:.1f} | {t['ours'] / t['ort']:.2f} |")


def section_cnn(args) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((1, 1, 28, 28)).astype(np.float32)
    runners, preds = {}, {}
    for label, (c1, c2) in (("dense 16/32", (16, 32)), ("pruned 8/16", (8, 16))):
        proto = cnn(c1, c2, rng)
        p, o = Predictor(Config(model_path=proto, num_threads=1)), ort_session(proto)
        np.testing.assert_allclose(p.run({"input": x})["output"], o.run(None, {"input": x})[0], rtol=1e-4, atol=1e-4)
        preds[label] = p
        runners[f"Predictor {label}"] = lambda p=p: p.run({"input": x})
        runners[f"Session {label}"] = lambda s=p.session: s.run({"input": x})
        runners[f"onnxruntime {label}"] = lambda o=o: o.run(None, {"input": x})
    t = min_times(runners, args.reps, max(1, args.inner // 4))
    print(f"\n## MNIST CNN batch 1, us per run (min of {args.reps}, {load()})\n")
    print("| model | our Predictor | our Session.run | onnxruntime | Predictor / ort | Session / ort |")
    print("|---|---|---|---|---|---|")
    for label in preds:
        pr, se, ort = (t[f"{k} {label}"] for k in ("Predictor", "Session", "onnxruntime"))
        print(f"| {label} | {pr * 1e6:.1f} | {se * 1e6:.1f} | {ort * 1e6:.1f} | {pr / ort:.2f} | {se / ort:.2f} |")
    d, s = "dense 16/32", "pruned 8/16"
    print(f"\nspeedup dense/pruned at batch 1: ours (Predictor) "
          f"{t['Predictor ' + d] / t['Predictor ' + s]:.2f}x, onnxruntime "
          f"{t['onnxruntime ' + d] / t['onnxruntime ' + s]:.2f}x")
    best: dict[str, float] = {}
    p = preds[s]
    p.session.profiler = lambda node, kernel, a, b: best.__setitem__(
        f"{node.label()} ({node.op_type}, {kernel.kind})", min(best.get(f"{node.label()} ({node.op_type}, {kernel.kind})",
                                                                         1.0), b - a))
    for _ in range(args.reps):
        p.session.run({"input": x})
    p.session.profiler = None
    print(f"\nper node, pruned model, min us (profiler hook on): "
          + ", ".join(f"{k} {v * 1e6:.1f}" for k, v in best.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=200, help="interleaved rounds (min taken)")
    ap.add_argument("--inner", type=int, default=20, help="calls timed together per round")
    ap.add_argument("--section", choices=("all", "ops", "cnn"), default="all")
    args = ap.parse_args()
    set_num_threads(1)
    print(f"python {platform.python_version()}, numpy {np.__version__}, "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}, 1 thread, {load()}")
    if args.section in ("all", "ops"):
        section_ops(args)
    if args.section in ("all", "cnn"):
        section_cnn(args)


if __name__ == "__main__":
    main()
