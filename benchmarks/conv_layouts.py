"""ResNet-18's convolutions in both layouts: the NCHW tile beside the channels-last gathered GEMM
and onnxruntime, per layer.

Run from the project root:  env -u OPENBLAS_CORETYPE python benchmarks/conv_layouts.py [--rounds 12]

Why: the layout pass decides where convolutions run channels-last (``inference.passes.layout``);
this says, layer by layer, which kernel is faster: ``nchw`` is FusedConv's packed kernel (the
implicit-GEMM tile with pixels along its lanes, ``inference.kernels.conv_f32``), ``nhwc`` is
FusedConvNHWC's (output channels along the lanes, patches gathered from the padded input,
``inference.kernels.nhwc``), each called on its own layout's tensors; onnxruntime runs a one-node
Conv + Relu model. Layers run in model order, every layer once per round, so each layer's weights
arrive from L3 as in a whole model (46 MB of them). One thread; each cell is the minimum CPU time
(``time.thread_time``: time other jobs take the core is not counted) over the rounds.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgelearn.commands.bench import peer_runner  # noqa: E402
from inference.kernels.conv import fused_conv, packed_conv_binder  # noqa: E402
from inference.kernels.nhwc import HWIO, fused_conv_nhwc_packed  # noqa: E402
from inference.threads import set_num_threads  # noqa: E402

# (C, H, M, kernel, stride) of ResNet-18's convolutions in order; pads k // 2
LAYERS = ([(3, 224, 64, 7, 2)] + [(64, 56, 64, 3, 1)] * 4
          + [(64, 56, 128, 3, 2), (128, 28, 128, 3, 1), (64, 56, 128, 1, 2)] + [(128, 28, 128, 3, 1)] * 2
          + [(128, 28, 256, 3, 2), (256, 14, 256, 3, 1), (128, 28, 256, 1, 2)] + [(256, 14, 256, 3, 1)] * 2
          + [(256, 14, 512, 3, 2), (512, 7, 512, 3, 1), (256, 14, 512, 1, 2)] + [(512, 7, 512, 3, 1)] * 2)
SIDES = ("nchw", "nhwc", "onnxruntime")


def layer(rng, c: int, h: int, m: int, k: int, s: int) -> tuple[dict, float]:
    """The three runners of one layer, and the largest difference of our outputs from onnxruntime's."""
    x = rng.standard_normal((1, c, h, h), dtype=np.float32)
    w = (rng.standard_normal((m, c, k, k), dtype=np.float32) / np.sqrt(c * k * k)).astype(np.float32)
    b = rng.standard_normal(m, dtype=np.float32)
    attrs = dict(pads=[k // 2] * 4, strides=[s, s], kernel_shape=[k, k], activation="Relu")
    nchw = packed_conv_binder(fused_conv)(**attrs)
    w_hwio, x_nhwc = np.ascontiguousarray(w.transpose(HWIO)), np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    conv = helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[k // 2] * 4, strides=[s, s], kernel_shape=[k, k])
    graph = helper.make_graph([conv, helper.make_node("Relu", ["c"], ["y"])], "layer",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    ort = peer_runner("onnxruntime", helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), 1)
    runners = {"nchw": lambda: nchw(x, w, b), "nhwc": lambda: fused_conv_nhwc_packed(x_nhwc, w_hwio, b, **attrs),
               "onnxruntime": lambda: ort({"x": x})[0]}
    want = runners["onnxruntime"]()
    diff = max(float(np.abs(runners["nchw"]() - want).max()),
               float(np.abs(runners["nhwc"]().transpose(0, 3, 1, 2) - want).max()))
    return runners, diff


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=12)
    args = ap.parse_args()
    set_num_threads(1)
    rng = np.random.default_rng(0)
    cells = [layer(rng, *spec) for spec in LAYERS]
    best = [dict.fromkeys(SIDES, float("inf")) for _ in LAYERS]
    for _ in range(args.rounds):
        for side in SIDES:
            for (runners, _), cell in zip(cells, best):
                t = time.thread_time()
                runners[side]()
                cell[side] = min(cell[side], time.thread_time() - t)
    print("| layer | nchw ms | nhwc ms | onnxruntime ms | nchw/ort | nhwc/ort | max abs diff |")
    print("|---|---|---|---|---|---|---|")
    for (c, h, m, k, s), cell, (_, diff) in zip(LAYERS, best, cells):
        ort_t = cell["onnxruntime"]
        print(f"| {c}x{h}x{h} -> {m}, {k}x{k}/{s} | {cell['nchw'] * 1e3:.3f} | {cell['nhwc'] * 1e3:.3f} | "
              f"{ort_t * 1e3:.3f} | {cell['nchw'] / ort_t:.2f}x | {cell['nhwc'] / ort_t:.2f}x | {diff:.1e} |")
    tot = {side: sum(cell[side] for cell in best) for side in SIDES}
    print(f"| all | {tot['nchw'] * 1e3:.2f} | {tot['nhwc'] * 1e3:.2f} | {tot['onnxruntime'] * 1e3:.2f} | "
          f"{tot['nchw'] / tot['onnxruntime']:.2f}x | {tot['nhwc'] / tot['onnxruntime']:.2f}x | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
