"""Plain-numpy softmax regression and MLP with hand-written backprop: the interim training path.

Why it exists: it let the federated stack (codecs on the wire, robust aggregation, simulation,
deployment) be built before ``training.Trainer`` landed. It stays for two reasons: it is the oracle
the Trainer path is checked against (same weights -> same loss and accuracy, tests/federated/
test_local_training.py), and it is the fast path of the federated tests (a dense model trains
~7x faster here than through the Trainer's per-step session overhead), so protocol tests stay
in seconds. User-facing scenarios use the Trainer (``backend = "auto"``).
It is honest gradient descent (minibatch SGD with momentum or Adam, cross-entropy, optional
FedProx proximal term), not a shortcut.

Parameter layout (shared with the Trainer path so a global model means the same thing in both):
per dense layer ``W`` of shape (out, in) (ONNX Gemm transB=1) then ``b`` of shape (out,).
"""
from __future__ import annotations

import numpy as np

Params = list[np.ndarray]


def dense_sizes(arch: str, in_features: int, num_classes: int) -> list[int]:
    """Layer widths of "softmax" (in -> classes) or "mlp:H1[,H2...]" (in -> H1 -> ... -> classes)."""
    hidden: list[int] = []
    if arch.startswith("mlp"):
        _, _, rest = arch.partition(":")
        hidden = [int(h) for h in (rest or "128").split(",") if h.strip()]
    return [in_features, *hidden, num_classes]


def init_dense(sizes: list[int], seed: int) -> Params:
    """He-uniform weights (Glorot for a single softmax layer), zero biases, float32."""
    rng = np.random.default_rng(seed)
    out: Params = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = i == len(sizes) - 2
        bound = np.sqrt(6.0 / (n_in + n_out)) if last else np.sqrt(6.0 / n_in)
        out.append(rng.uniform(-bound, bound, (n_out, n_in)).astype(np.float32))
        out.append(np.zeros(n_out, np.float32))
    return out


def forward(params: Params, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Logits and the activations backprop needs (input of each layer)."""
    acts = [x]
    h = x
    n_layers = len(params) // 2
    for i in range(n_layers):
        w, b = params[2 * i], params[2 * i + 1]
        h = h @ w.T + b
        if i < n_layers - 1:
            h = np.maximum(h, 0.0)
            acts.append(h)
    return h, acts


def softmax_xent(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy and its gradient w.r.t. the logits."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    n = len(y)
    loss = float(-np.log(np.maximum(p[np.arange(n), y], 1e-12)).mean())
    p[np.arange(n), y] -= 1.0
    return loss, p / n


def gradients(params: Params, x: np.ndarray, y: np.ndarray) -> tuple[float, Params]:
    logits, acts = forward(params, x)
    loss, g = softmax_xent(logits, y)
    grads: Params = [np.empty(0)] * len(params)
    for i in reversed(range(len(params) // 2)):
        a = acts[i]
        grads[2 * i] = g.T @ a
        grads[2 * i + 1] = g.sum(axis=0)
        if i > 0:
            g = (g @ params[2 * i]) * (a > 0)
    return loss, grads


def train(params: Params, x: np.ndarray, y: np.ndarray, *, epochs: int, batch_size: int, lr: float,
          optimizer: str = "sgd", momentum: float = 0.9, weight_decay: float = 0.0,
          proximal_mu: float = 0.0, seed: int = 0) -> tuple[Params, float]:
    """Minibatch training from `params`; returns new float32 params and the mean loss of the last epoch."""
    w = [p.astype(np.float32).copy() for p in params]
    anchor = [p.copy() for p in w] if proximal_mu > 0 else None
    m = [np.zeros_like(p) for p in w]
    v = [np.zeros_like(p) for p in w] if optimizer == "adam" else None
    rng = np.random.default_rng(seed)
    step, last = 0, float("nan")
    x = x.reshape(len(x), -1).astype(np.float32)
    for _ in range(epochs):
        order = rng.permutation(len(x))
        losses = []
        for s in range(0, len(x), batch_size):
            idx = order[s:s + batch_size]
            loss, grads = gradients(w, x[idx], y[idx])
            losses.append(loss)
            step += 1
            for k, g in enumerate(grads):
                if weight_decay:
                    g = g + weight_decay * w[k]
                if anchor is not None:  # FedProx: + mu/2 ||w - w_global||^2
                    g = g + proximal_mu * (w[k] - anchor[k])
                if v is None:
                    m[k] = momentum * m[k] + g
                    w[k] -= lr * m[k]
                else:
                    m[k] = 0.9 * m[k] + 0.1 * g
                    v[k] = 0.999 * v[k] + 0.001 * g * g
                    mh, vh = m[k] / (1 - 0.9 ** step), v[k] / (1 - 0.999 ** step)
                    w[k] -= (lr * mh / (np.sqrt(vh) + 1e-8)).astype(np.float32)
        last = float(np.mean(losses))
    return w, last


def evaluate(params: Params, x: np.ndarray, y: np.ndarray, batch_size: int = 1024) -> tuple[float, float]:
    """(mean cross-entropy, accuracy)."""
    x = x.reshape(len(x), -1).astype(np.float32)
    tot_loss, correct = 0.0, 0
    for s in range(0, len(x), batch_size):
        logits, _ = forward(params, x[s:s + batch_size])
        loss, _ = softmax_xent(logits, y[s:s + batch_size])
        tot_loss += loss * len(logits)
        correct += int((logits.argmax(1) == y[s:s + batch_size]).sum())
    return tot_loss / max(len(x), 1), correct / max(len(x), 1)
