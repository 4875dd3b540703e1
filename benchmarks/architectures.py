"""CNN shapes beyond the issue's table, as users bring them: EfficientNet-Lite0 (5x5 depthwise
blocks), MobileNetV3-Large (HardSwish, squeeze-and-excitation gates), a YOLO-style detector
body (SiLU after every convolution, CSP concatenations, a nearest upsampling in its neck) and a
YOLOv8-style detector (C2f blocks with channel Splits, SPPF pools, a two-scale head), and at the
small end MLPerf Tiny's four models: the CIFAR-10 ResNet-8 (32x32 maps, 16-64 channels), the
keyword-spotting DS-CNN (49x10 MFCC frames, 64 channels), the visual-wake-words MobileNetV1 (width
0.25, 96x96) and the anomaly-detection autoencoder (640 -> 8 -> 640 Dense layers with
BatchNormalization). Ours against onnxruntime in one process, blocks interleaved.

Run from the project root:  env -u OPENBLAS_CORETYPE python benchmarks/architectures.py [--threads 1,2]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgelearn.commands.bench import edgelearn_runner, max_abs_diff, peer_runner, time_interleaved  # noqa: E402
from inference import zoo  # noqa: E402
from inference.onnx_export import model_to_proto  # noqa: E402

MODELS = ("efficientnet_lite0", "mobilenet_v3_style", "yolo_style", "yolov8_style", "resnet8_cifar", "ds_cnn_kws",
          "mobilenet_v1_vww", "fc_autoencoder")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", default="1,2")
    p.add_argument("--batch", default="1")
    p.add_argument("--repeat", type=int, default=30)
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated, of: " + ", ".join(MODELS))
    args = p.parse_args()
    print("| model | batch | threads | ours ms | onnxruntime ms | ours / onnxruntime | max abs diff |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        proto = model_to_proto(zoo.ZOO[name]())
        for batch in (int(v) for v in args.batch.split(",")):
            x = np.random.default_rng(0).standard_normal(zoo.input_shape(name, batch)).astype(np.float32)
            feeds = {proto.graph.input[0].name: x}
            for t in (int(v) for v in args.threads.split(",")):
                runners = {"ours": edgelearn_runner(proto.SerializeToString(), t)[0],
                           "onnxruntime": peer_runner("onnxruntime", proto, t)}
                diff, ok = max_abs_diff(*(r(feeds) for r in runners.values()), rtol=1e-4, atol=1e-4)
                if not ok:
                    raise SystemExit(f"{name}: ours differs from onnxruntime (max abs difference {diff})")
                ms = {k: tm.median * 1e3 for k, tm in time_interleaved(runners, feeds, args.repeat, settle_s=0.3).items()}
                print(f"| {name} | {batch} | {t} | {ms['ours']:.2f} | {ms['onnxruntime']:.2f} | "
                      f"{ms['ours'] / ms['onnxruntime']:.2f}x | {diff:.1e} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
