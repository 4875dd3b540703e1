"""Per-layer table: one convolution (or pool) as a one-node model, our Predictor beside onnxruntime.

Run from the project root:  env -u OPENBLAS_CORETYPE python benchmarks/conv_layers.py [--threads 1]

The layers are the benchmark models' (ResNet-18-, MobileNetV2-style, squeezenet, shufflenet):
Conv + Relu (which both runtimes fuse), batch 1, random weights as initializers. Each row times
both runtimes in this process in interleaved blocks of one run and gives the minimum of N (the
least disturbed run on a shared machine), the ratio ours / onnxruntime and our kernel, by the
runtime's own rules: the implicit-GEMM tile (``tile``), the direct 3x3 kernel, im2col + BLAS, or
a depthwise path (``inference.kernels.conv.depthwise_kernel``).
Every row includes one run's fixed cost of each runtime (feed checks, dispatch, output dict): the
first row, a layer of no work, shows it; it weighs on the small layers' ratios here but only once
per run in a whole model. Whole models are ``benchmarks/inference.py``; this table says which
layers make up the distance.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgelearn.commands.bench import max_abs_diff, peer_runner, time_interleaved  # noqa: E402
from inference import Config, Predictor  # noqa: E402
from inference.kernels import conv as fast_conv  # noqa: E402
from inference.kernels.direct_conv import prefer_direct  # noqa: E402

# (label, C, H, M, kernel, stride, group); pads k // 2
LAYERS = [
    ("tiny 1x1 8@4 (the fixed cost of a run)", 8, 4, 8, 1, 1, 1),
    ("resnet stem 7x7/2", 3, 224, 64, 7, 2, 1),
    ("resnet 3x3 64@56", 64, 56, 64, 3, 1, 1),
    ("resnet 3x3/2 64->128", 64, 56, 128, 3, 2, 1),
    ("resnet 3x3 128@28", 128, 28, 128, 3, 1, 1),
    ("resnet 3x3 256@14", 256, 14, 256, 3, 1, 1),
    ("resnet 3x3 512@7", 512, 7, 512, 3, 1, 1),
    ("resnet 1x1/2 256->512", 256, 14, 512, 1, 2, 1),
    ("squeezenet stem 3x3/2", 3, 224, 64, 3, 2, 1),
    ("squeezenet 1x1 128->16 @55", 128, 55, 16, 1, 1, 1),
    ("squeezenet 3x3 16->64 @55", 16, 55, 64, 3, 1, 1),
    ("squeezenet 3x3 64->256 @13", 64, 13, 256, 3, 1, 1),
    ("squeezenet 1x1 512->1000 @13", 512, 13, 1000, 1, 1, 1),
    ("shufflenet 1x1 g4 272@14", 272, 14, 272, 1, 1, 4),
    ("shufflenet 1x1 g4 544@7", 544, 7, 544, 1, 1, 4),
    ("mobilenet 1x1 16->96 @112", 16, 112, 96, 1, 1, 1),
    ("mobilenet 1x1 320->1280 @7", 320, 7, 1280, 1, 1, 1),
    ("depthwise 3x3 144@56", 144, 56, 144, 3, 1, 144),
    ("depthwise 3x3 576@14", 576, 14, 576, 3, 1, 576),
    ("depthwise 3x3 960@7", 960, 7, 960, 3, 1, 960),
    ("depthwise 3x3/2 96@112", 96, 112, 96, 3, 2, 96),
    ("depthwise 3x3/2 144@56", 144, 56, 144, 3, 2, 144),
    ("depthwise 3x3/2 576@14", 576, 14, 576, 3, 2, 576),
]


def layer_model(c: int, h: int, m: int, k: int, s: int, group: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((m, c // group, k, k)) / np.sqrt(c // group * k * k)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[k, k], strides=[s, s],
                              pads=[k // 2] * 4, group=group), helper.make_node("Relu", ["c"], ["y"])]
    graph = helper.make_graph(nodes, "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, h, h])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def kernel_name(c: int, h: int, m: int, k: int, s: int, group: int) -> str:
    """The kernel the Predictor's conv runs, from the runtime's own rules."""
    win = fast_conv._window((h, h), (k, k), (s, s), (1, 1), (k // 2,) * 4, "NOTSET")
    oh, ow = win.out_shape
    if group == c == m:
        return fast_conv.depthwise_kernel((h, h), win)
    if prefer_direct(c, m, k, k, s, s, oh, ow, group):
        return "direct"
    return "tile" if fast_conv.tile_plan((1, c, h, h), (m, c // group, k, k), win, group) else "im2col"


def row(label: str, c: int, h: int, m: int, k: int, s: int, group: int, threads: int, repeat: int) -> str:
    proto = layer_model(c, h, m, k, s, group)
    feeds = {"x": np.random.default_rng(1).standard_normal((1, c, h, h)).astype(np.float32)}
    pred = Predictor(Config(model_path=proto, num_threads=threads))
    runners = {"ours": lambda f: [pred.run(f)["y"]], "onnxruntime": peer_runner("onnxruntime", proto, threads)}
    outs = {name: fn(feeds) for name, fn in runners.items()}
    t = {name: min(v.times) for name, v in time_interleaved(runners, feeds, repeat, warmup=2, block=1).items()}
    flops = 2 * m * (c // group) * k * k * ((h + 2 * (k // 2) - k) // s + 1) ** 2
    diff = max_abs_diff(outs["ours"], outs["onnxruntime"])[0]
    return (f"| {label} | {kernel_name(c, h, m, k, s, group)} | {t['ours'] * 1e3:.3f} | {t['onnxruntime'] * 1e3:.3f} | "
            f"**{t['ours'] / t['onnxruntime']:.2f}x** | {flops / t['ours'] / 1e9:.0f} | {diff:.1e} |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=30, help="timed runs per runtime and layer")
    p.add_argument("--only", default="", help="layers whose label contains this text")
    args = p.parse_args()
    print(f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}  threads={args.threads}  "
          f"load average at start: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print("| layer | our kernel | ours ms | onnxruntime ms | ours/ort | our GFLOP/s | max abs diff |")
    print("|---|---|---|---|---|---|---|")
    for label, *shape in LAYERS:
        if args.only in label:
            print(row(label, *shape, args.threads, args.repeat), flush=True)
    print(f"load average at end: {' '.join(f'{v:.1f}' for v in os.getloadavg())}  (min of N runs per cell)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
