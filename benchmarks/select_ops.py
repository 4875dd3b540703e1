"""PRelu, LogSoftmax, ArgMax/ArgMin, CumSum, TopK and the comparisons: our fast kernels vs the
reference ops vs onnxruntime.

Run from the project root:  env -u OPENBLAS_CORETYPE python benchmarks/select_ops.py [--threads 1,2] [--repeat 60]

Why: each of these ops ran as numpy in the reference, which kept any model holding one step by
step (a kernel replay, ``inference.kernel_replay``, repeats only numba calls); the fast kernels
(``inference.kernels.prelu``, ``log_softmax``, ``arg_reduce``, ``cumsum``, ``topk``, ``compare``)
should also not be much slower than what they replace. One small ONNX model per case (opset 17,
built with ``onnx.helper``), four runners in this one process: ``ours`` our Predictor (its fast
kernels, replayed from the third run of a shape: a replay copies the feeds into its own buffers
and the outputs out of them, a cost that a one-op model on a large tensor shows in full), ``ours
step by step`` a Predictor without replay (``Config.kernel_replay`` off: the kernels and the
Python of each step, no copies), ``reference`` a Predictor whose session runs the reference
kernels alone (``inference.ops``, step by step, no arena: :class:`ReferencePredictor`),
``onnxruntime`` with its default graph optimization at the same intra-op threads. Each runner is
timed in interleaved blocks (each after 0.1 s of its own untimed runs: a pool's spinning workers
steal the next runner's core), the median of ``--repeat`` runs in microseconds, and the ratios to
the reference and to onnxruntime. Every case's outputs are checked against onnxruntime's first.
The machine may be shared: the load average is printed, and the ratios matter more than the
times. The numba cache is assumed warm (the runs that compile are untimed warm-ups).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgelearn.commands.bench import edgelearn_runner, max_abs_diff, peer_runner, time_interleaved  # noqa: E402
from inference import Config, Predictor  # noqa: E402
from inference.ir import Model  # noqa: E402
from inference.session import Session  # noqa: E402

SETTLE_S = 0.1
F32, I64, BOOL = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL
RNG = np.random.default_rng(0)


def _normal(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def model(nodes: list, feeds: dict[str, np.ndarray], outputs: dict[str, int],
          consts: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """``nodes`` as an opset-17 model: ``feeds`` its inputs, ``consts`` initializers, ``outputs``
    name -> element type (shapes inferred: the checker wants them)."""
    graph = helper.make_graph(
        nodes, "case",
        [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for k, v in feeds.items()],
        [helper.make_tensor_value_info(k, t, None) for k, t in outputs.items()],
        [numpy_helper.from_array(v, k) for k, v in (consts or {}).items()])
    proto = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
                                              strict_mode=True)
    onnx.checker.check_model(proto)
    return proto


def _one(op: str, x: np.ndarray, out_type: int = F32, consts: dict | None = None, n_out: int = 1, **attrs):
    """A one-node model of ``op`` on the feed ``x`` (then ``consts``), and its feeds."""
    outs = {f"y{i}": (out_type if i == 0 else I64) for i in range(n_out)}
    node = helper.make_node(op, ["x"] + list(consts or {}), list(outs), **attrs)
    return model([node], {"x": x}, outs, consts), {"x": x}


def _prelu_chain(slope: np.ndarray, count: int = 8):
    """``count`` PRelus in a row on (1, 128, 200), as a model with several of them runs them."""
    x = _normal(1, 128, 200)
    names = ["x"] + [f"h{i}" for i in range(1, count)] + ["y"]
    nodes = [helper.make_node("PRelu", [names[i], "s"], [names[i + 1]]) for i in range(count)]
    return model(nodes, {"x": x}, {"y": F32}, {"s": slope}), {"x": x}


def _logic(op: str):
    a, b = RNG.integers(0, 2, (1, 128, 200)).astype(bool), RNG.integers(0, 2, (1, 128, 200)).astype(bool)
    if op == "Not":
        return model([helper.make_node("Not", ["a"], ["y"])], {"a": a}, {"y": BOOL}), {"a": a}
    return model([helper.make_node(op, ["a", "b"], ["y"])], {"a": a, "b": b}, {"y": BOOL}), {"a": a, "b": b}


#: case -> a builder of (model, feeds)
CASES: dict[str, Callable[[], tuple[onnx.ModelProto, dict[str, np.ndarray]]]] = {
    "PRelu 1x128x200, slope (1,)": lambda: _one("PRelu", _normal(1, 128, 200), consts={"s": np.float32([0.25])}),
    "PRelu 1x128x200, slope (128,1)": lambda: _one("PRelu", _normal(1, 128, 200),
                                                   consts={"s": _normal(128, 1) / 4}),
    "PRelu 1x64x56x56, slope (64,1,1)": lambda: _one("PRelu", _normal(1, 64, 56, 56),
                                                     consts={"s": _normal(64, 1, 1) / 4}),
    "8 PRelus 1x128x200, slope (1,)": lambda: _prelu_chain(np.float32([0.25])),
    "LogSoftmax 64x1000, axis -1": lambda: _one("LogSoftmax", _normal(64, 1000), axis=-1),
    "LogSoftmax 1x21x64x64, axis 1": lambda: _one("LogSoftmax", _normal(1, 21, 64, 64), axis=1),
    "ArgMax 64x1000, axis -1": lambda: _one("ArgMax", _normal(64, 1000), I64, axis=-1, keepdims=0),
    "ArgMax 1x21x64x64, axis 1": lambda: _one("ArgMax", _normal(1, 21, 64, 64), I64, axis=1),
    "CumSum 8x512, axis -1": lambda: _one("CumSum", _normal(8, 512), consts={"a": np.array(-1, np.int64)}),
    "CumSum 4x256x64, axis 1, reverse": lambda: _one("CumSum", _normal(4, 256, 64),
                                                     consts={"a": np.array(1, np.int64)}, reverse=1),
    "TopK 64x1000, k 5": lambda: _one("TopK", _normal(64, 1000), consts={"k": np.array([5], np.int64)}, n_out=2),
    "TopK 1x25200, k 100": lambda: _one("TopK", _normal(1, 25200), consts={"k": np.array([100], np.int64)},
                                        n_out=2),
    "TopK 8x1000x16, axis 1, k 10": lambda: _one("TopK", _normal(8, 1000, 16), consts={"k": np.array([10], np.int64)},
                                                 n_out=2, axis=1),
    "Less 1x128x200 < (1,)": lambda: _one("Less", _normal(1, 128, 200), BOOL, consts={"t": np.float32([0.1])}),
    "Equal 1x128x200 == same shape": lambda: _one("Equal", np.round(_normal(1, 128, 200)), BOOL,
                                                  consts={"e": np.round(_normal(1, 128, 200))}),
    "GreaterOrEqual 8x128x128 >= (8,1,128)": lambda: _one("GreaterOrEqual", _normal(8, 128, 128), BOOL,
                                                          consts={"r": _normal(8, 1, 128)}),
    "And 1x128x200 bool": lambda: _logic("And"),
    "Not 1x128x200 bool": lambda: _logic("Not"),
}


class ReferencePredictor(Predictor):
    """Our Predictor on the reference kernels alone (``inference.ops``, step by step, no arena):
    the same run harness as ours, so that the ratios compare the kernels and their steps."""

    def _new_session(self, model: Model) -> Session:
        return Session(model, kinds=("reference",))


def reference_runner(proto: onnx.ModelProto, threads: int) -> Callable[[dict], list]:
    pred = ReferencePredictor(Config(model_path=proto, num_threads=threads))
    names = pred.get_output_names()

    def run(feeds: dict) -> list:
        outputs = pred.run(feeds)
        return [outputs[n] for n in names]

    return run


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", default="1,2")
    p.add_argument("--repeat", type=int, default=60)
    p.add_argument("--cases", default=";".join(CASES), help="semicolon-separated, of: " + "; ".join(CASES))
    args = p.parse_args()
    print(f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}, "
          f"load avg {' '.join(f'{v:.2f}' for v in os.getloadavg())}\n")
    print("| case | threads | ours us | ours step by step us | reference us | onnxruntime us | ours / reference "
          "| step by step / reference | ours / onnxruntime | ours |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in args.cases.split(";"):
        proto, feeds = CASES[name]()
        for t in (int(v) for v in args.threads.split(",")):
            ours, pred = edgelearn_runner(proto, t)
            runners = {"ours": ours, "steps": edgelearn_runner(proto, t, kernel_replay=False)[0],
                       "reference": reference_runner(proto, t), "onnxruntime": peer_runner("onnxruntime", proto, t)}
            want = runners["onnxruntime"](feeds)
            for side in ("ours", "steps", "reference"):
                diff, ok = max_abs_diff(runners[side](feeds), want, rtol=1e-5, atol=1e-5)
                if not ok:
                    raise SystemExit(f"{name}: {side} differs from onnxruntime (max abs difference {diff})")
            timed = time_interleaved(runners, feeds, args.repeat, settle_s=SETTLE_S)
            us = {k: tm.median * 1e6 for k, tm in timed.items()}
            replayed = "replayed" if "replayed" in pred.replay_report() else "step by step"
            ours_us, steps_us, ref_us, ort_us = us["ours"], us["steps"], us["reference"], us["onnxruntime"]
            print(f"| {name} | {t} | {ours_us:.1f} | {steps_us:.1f} | {ref_us:.1f} | {ort_us:.1f} | "
                  f"{ours_us / ref_us:.2f} | {steps_us / ref_us:.2f} | {ours_us / ort_us:.2f} | {replayed} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
