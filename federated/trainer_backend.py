"""Local training with ``training.Trainer``: the on-device engine behind federated clients.

Models are built with ``training.nn`` (so they are plain ONNX-able IR models) and trained by the
Trainer's single training-step graph. One Trainer per (model, optimizer) setup is cached per
process and re-seeded each round with the global weights; optimizer buffers are zeroed so every
round starts like FedAvg's local SGD. FedProx adds ``mu/2 * ||w - w_global||^2`` as a regularizer
whose anchors are persistent state buffers of the step graph, loaded with the global weights.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from .scenario import Scenario

Params = list[np.ndarray]
ANCHOR_SUFFIX = ".fedprox_anchor"


def available() -> bool:
    try:
        from training.trainer import Trainer  # noqa: F401
        from training import nn  # noqa: F401
    except ImportError:
        return False
    return True


def supports(arch: str) -> bool:
    return arch == "softmax" or arch.startswith("mlp") or arch == "cnn"


def _module(arch: str, input_shape: tuple[int, ...], num_classes: int):
    from training import nn

    from .numpy_models import dense_sizes

    if arch == "cnn":
        c, h, w = input_shape
        flat = 16 * (h // 4) * (w // 4)
        return nn.Sequential(nn.Conv2d(c, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Linear(flat, num_classes))
    sizes = dense_sizes(arch, int(np.prod(input_shape)), num_classes)
    layers: list[Any] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def build_model(sc: Scenario, input_shape: tuple[int, ...], num_classes: int):
    from training.nn import build_model as _build
    return _build(_module(sc.arch, tuple(input_shape), num_classes), (None, *input_shape), seed=sc.seed)


def param_names(model) -> list[str]:
    """Trainable parameters in graph order: the order of the arrays on the wire."""
    return [n for n, a in model.graph.initializers.items() if a.dtype.kind == "f" and a.ndim > 0]


def init_params(sc: Scenario, input_shape: tuple[int, ...], num_classes: int) -> Params:
    model = build_model(sc, input_shape, num_classes)
    return [np.array(model.graph.initializers[n], np.float32) for n in param_names(model)]


def _proximal_term(mu: float):
    """FedProx's proximal term as a Trainer regularizer (anchors are state buffers)."""
    from training.losses import _Regularizer

    class Proximal(_Regularizer):
        def _penalty(self, b, p):
            t = b.type_of(p)
            anchor = b.state(p + ANCHOR_SUFFIX, np.zeros(tuple(t.shape), np.float32))
            d = b.op("Sub", p, anchor)
            return b.op("Mul", d, d)

    return Proximal(mu / 2.0)


@lru_cache(maxsize=4)
def _trainer(arch: str, input_shape: tuple[int, ...], num_classes: int, optimizer: str, lr: float,
             momentum: float, weight_decay: float, prox: float, seed: int):
    from training.losses import CrossEntropyLoss, WeightedSum
    from training.optim import SGD, Adam
    from training.trainer import Trainer

    sc = Scenario(arch=arch, seed=seed)
    model = build_model(sc, input_shape, num_classes)
    names = param_names(model)
    loss: Any = CrossEntropyLoss()
    if prox > 0:
        loss = WeightedSum([(1.0, CrossEntropyLoss()), (1.0, _proximal_term(prox))])
    opt = SGD(lr, momentum=momentum, weight_decay=weight_decay) if optimizer == "sgd" else \
        Adam(lr, weight_decay=weight_decay)
    return Trainer(model, loss, opt, seed=seed), names


def _get(sc: Scenario, x: np.ndarray, y: np.ndarray, params: Params, prox: float = 0.0):
    num_classes = len(params[-1])  # the last bias has one entry per class
    trainer, names = _trainer(sc.arch, tuple(x.shape[1:]), num_classes, sc.optimizer, sc.lr, sc.momentum,
                              sc.weight_decay, prox, sc.seed)
    g = trainer.graph
    fresh = {s: np.zeros_like(v) for s, v in g.buffers().items() if s in g.states}
    fresh.update(dict(zip(names, params)))
    if prox > 0:
        fresh.update({n + ANCHOR_SUFFIX: p for n, p in zip(names, params)})
    g.load_buffers(fresh)
    return trainer, names


def train(global_params: Params, x: np.ndarray, y: np.ndarray, sc: Scenario, seed: int) -> tuple[Params, float]:
    trainer, names = _get(sc, x, y, global_params, sc.proximal_mu)
    trainer.seed, trainer.epoch, trainer.step, trainer.history = seed, 0, 0, {}  # same seed, same run
    hist = trainer.fit(x, y, epochs=sc.epochs, batch_size=sc.batch_size)
    live = trainer.graph.parameters()
    return [np.array(live[n], np.float32) for n in names], float(hist["loss"][-1])


def evaluate(params: Params, x: np.ndarray, y: np.ndarray, sc: Scenario) -> tuple[float, float]:
    trainer, _ = _get(sc, x, y, params)
    res = trainer.evaluate(x, y, batch_size=512)
    return float(res["loss"]), float(res["accuracy"])
