"""3x3 stride-1 convolutions by Winograd's F(2x2, 3x3) beside the direct implicit GEMM they replace,
with onnxruntime's time for the same layer as a one-node model.

Run from the project root:  env -u OPENBLAS_CORETYPE python benchmarks/winograd.py [--threads 1,2] [--batch 1]

Layers: ResNet-18's 3x3 stride-1 convolutions (the ones ``winograd_conv`` takes), and squeezenet's
fire-module 3x3 shapes (16 -> 64 on 55x55, 32 -> 128 on 27x27, 48 -> 192 and 64 -> 256 on 13x13).
The "winograd" column runs Winograd on every layer, also those its rule (``winograd.applies``,
the "takes it" column) leaves direct, to show why it leaves them. Ours run channels-last with a
Relu epilogue, the weight kept as a Predictor's is; onnxruntime runs the NCHW Conv+Relu
(its own layout choices inside). Each round runs every layer in order on one side, then on the
next (the sides' order rotates), so a layer's weights arrive as in a model, not from the other
side's call just before. Cells: median over rounds of one call, thread time at one thread, wall
time at more. onnxruntime runs at one thread only: at two, its pool and numba's spin against each
other when calls alternate layer by layer (its one-node calls took 1-7 ms, ours up to 70).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgelearn.commands.bench import time_in_model_order  # noqa: E402
from inference.kernels.activations import activation_code  # noqa: E402
from inference.kernels.nhwc import DIRECT, conv_window, prepare_conv_nhwc  # noqa: E402
from inference.kernels.winograd import PreparedWinograd, applies  # noqa: E402
from inference.threads import set_num_threads  # noqa: E402

RESNET = [(56, 64, 64)] * 4 + [(28, 128, 128)] * 3 + [(14, 256, 256)] * 3 + [(7, 512, 512)] * 3  # H, C, M
SQUEEZENET = [(55, 16, 64), (27, 32, 128), (13, 48, 192), (13, 64, 256)]


def _onnxruntime_layer(x_nchw: np.ndarray, w_oihw: np.ndarray, b: np.ndarray, threads: int):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    n, c, h, wd = x_nchw.shape
    m = w_oihw.shape[0]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
         helper.make_node("Relu", ["c"], ["y"])], "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, c, h, wd])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, m, h, wd])],
        [numpy_helper.from_array(w_oihw, "w"), numpy_helper.from_array(b, "b")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(proto)
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return lambda: sess.run(None, {"x": x_nchw})


def _layers(batch: int, threads: int) -> list[dict]:
    rng = np.random.default_rng(0)
    relu = activation_code("Relu")
    out = []
    for h, c, m in RESNET + SQUEEZENET:
        x = rng.standard_normal((batch, h, h, c)).astype(np.float32)
        w = (rng.standard_normal((3, 3, c, m)) / np.sqrt(9 * c)).astype(np.float32)
        b = rng.standard_normal(m).astype(np.float32)
        win = conv_window((h, h), w.shape, {"pads": [1, 1, 1, 1]}, "bench")
        direct_call = prepare_conv_nhwc(x.shape, w.shape, win, 1, relu, 0.0, 0.0, True, algorithm=DIRECT)
        prepared = PreparedWinograd(x.shape, m, win.pads_begin, win.out_shape)  # also where the rule says no
        winograd_call = lambda x, w, b, z, f=prepared: f(x, w, b, z, np.float32(0), np.float32(np.inf), w)  # noqa: E731
        x_nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        ort_run = _onnxruntime_layer(x_nchw, np.ascontiguousarray(w.transpose(3, 2, 0, 1)), b, threads) \
            if threads == 1 else None
        direct, minimal = direct_call(x, w, b, None), winograd_call(x, w, b, None)
        err = float(np.abs(minimal - direct).max() / np.abs(direct).max())
        peer_err = (float(np.abs(ort_run()[0].transpose(0, 2, 3, 1) - direct).max() / np.abs(direct).max())
                    if ort_run else float("nan"))
        out.append(dict(shape=(h, c, m), takes=applies(x.shape, w.shape, win), err=err, peer_err=peer_err,
                        runs={"direct": lambda f=direct_call, a=(x, w, b, None): f(*a),
                              "winograd": lambda f=winograd_call, a=(x, w, b, None): f(*a),
                              **({"onnxruntime": ort_run} if ort_run else {})}))
    return out


def _row(head: str, t: dict, err: float | None, peer_err: float | None) -> str:
    """One table row: the times ``t`` (s) by side, their ratios, the differences (None: blank)."""
    show = lambda e: "" if e is None else f"{e:.1e}"  # noqa: E731
    row = (f"| {head} | {t['direct'] * 1e6:.0f} | {t['winograd'] * 1e6:.0f} | {t['winograd'] / t['direct']:.2f}x | "
           f"{show(err)} |")
    if "onnxruntime" in t:
        row += (f" {t['onnxruntime'] * 1e6:.0f} | {t['winograd'] / t['onnxruntime']:.2f}x | "
                f"{t['direct'] / t['onnxruntime']:.2f}x | {show(peer_err)} |")
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", default="1")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--rounds", type=int, default=15)
    args = p.parse_args()
    for threads in [int(t) for t in args.threads.split(",")]:
        set_num_threads(threads, numba_pool=True)
        clock = time.thread_time if threads == 1 else time.perf_counter
        layers = _layers(args.batch, threads)
        times = time_in_model_order([layer["runs"] for layer in layers], args.rounds, clock, warmup=1)
        sides = list(layers[0]["runs"])
        peer = "onnxruntime" in sides
        print(f"\nthreads={threads} batch={args.batch}  (us, median of {args.rounds} rounds)")
        print("| H | C -> M | winograd_conv takes it | direct | winograd | winograd/direct | max rel. diff vs direct |"
              + (" onnxruntime | winograd/ort | direct/ort | ort's max rel. diff vs direct |" if peer else ""))
        print("|---" * (7 + 4 * peer) + "|")
        sums = {s: 0.0 for s in sides}
        for i, layer in enumerate(layers):
            med = {s: float(np.median(times[i][s])) for s in sides}
            if layer["takes"]:
                for s in sides:
                    sums[s] += med[s]
            h, c, m = layer["shape"]
            print(_row(f"{h} | {c} -> {m} | {'yes' if layer['takes'] else 'no'}", med, layer["err"], layer["peer_err"]))
        print(_row("all it takes | |", sums, None, None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
