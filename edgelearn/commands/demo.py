"""The default job until federated simulation lands: build a digits classifier ourselves,
export it to ONNX, load it back through the Predictor and report accuracy and latency."""
from __future__ import annotations

import time

import numpy as np

from inference import Config, Predictor, save_model
from inference.builder import GraphBuilder
from inference.errors import ConfigError


def load_digits_split(seed: int = 0):
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ConfigError("the demo needs scikit-learn's digits: pip install 'edgelearn[data]'") from e
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    order = np.random.default_rng(seed).permutation(len(x))
    cut = int(0.8 * len(x))
    return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]


def fit_random_feature_classifier(x, y, hidden: int = 512, ridge: float = 1e-1, seed: int = 0):
    """Random ReLU features + a ridge-regression readout: a real classifier fitted in closed form."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 1 / np.sqrt(x.shape[1]), (x.shape[1], hidden)).astype(np.float32)
    b1 = rng.normal(0, 0.5, hidden).astype(np.float32)
    h = np.maximum(x @ w1 + b1, 0)
    targets = np.eye(10, dtype=np.float32)[y]
    w2 = np.linalg.solve(h.T @ h + ridge * np.eye(hidden, dtype=np.float32), h.T @ targets).astype(np.float32)
    return w1, b1, w2


def build_model(w1, b1, w2):
    b = GraphBuilder("digits_classifier", opset=17)
    x = b.input("pixels", np.float32, ["batch", 64])
    h = b.op("Relu", b.op("Gemm", x, b.const(w1, "fc1.weight"), b.const(b1, "fc1.bias")))
    logits = b.op("MatMul", h, b.const(w2, "fc2.weight"))
    b.op("Softmax", logits, axis=-1, outputs=["probabilities"])
    b.output("probabilities", np.float32, ["batch", 10])
    return b.build(doc="random-feature digits classifier built by `edgelearn demo`")


NAME = "demo"
HELP = "build a digits classifier in closed form, export it to ONNX and run it through the Predictor"


def add_arguments(p) -> None:
    p.add_argument("-o", "--output", default="edgelearn-digits.onnx", help="where to save the model")


def run(args) -> int:
    return demo(args.output)


def demo(output: str) -> int:
    x_tr, y_tr, x_te, y_te = load_digits_split()
    model = build_model(*fit_random_feature_classifier(x_tr, y_tr))
    save_model(model, output)
    print(f"built and saved {output}: {model.graph.parameter_count():,} parameters")
    predictor = Predictor(Config(model_path=output))
    name = predictor.get_input_names()[0]
    predictor.get_input_tensor(name).copy_from(x_te)
    predictor.run()
    probs = predictor.get_output_tensor(predictor.get_output_names()[0]).copy_to()
    accuracy = float((probs.argmax(1) == y_te).mean())
    times = []
    for _ in range(50):
        t0 = time.perf_counter()
        predictor.run({name: x_te[:1]})
        times.append(time.perf_counter() - t0)
    print(f"test accuracy on {len(y_te)} held-out digits: {accuracy:.2%}")
    print(f"batch-1 latency: median {np.median(times) * 1e3:.3f} ms over {len(times)} runs")
    print(f"next: edgelearn info {output}")
    return 0
