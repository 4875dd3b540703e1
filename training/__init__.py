"""On-device training over the inference IR: the fine-tune API.

    import training as T
    model = T.load("model.onnx")
    trainer = T.Trainer(model, loss=T.CrossEntropyLoss(), optimizer=T.Adam(lr=1e-3), trainable=["fc*"])
    history = trainer.fit(x_train, y_train, epochs=3, batch_size=32, validation=(x_val, y_val))
    trainer.save_checkpoint("ckpt.el"); trainer.load_checkpoint("ckpt.el")
    trainer.export("tuned.onnx")
"""
from __future__ import annotations

import os

import inference.ops  # noqa: F401 - registers the forward kernels
from inference.ir import Model
from inference.onnx_import import load_model
from training import data, nn
from training.data import ArrayDataset, DataLoader
from training.losses import (BCEWithLogitsLoss, CrossEntropyLoss, CustomLoss, HuberLoss, KLDivLoss, L1Loss,
                             L1Regularizer, L2Regularizer, MSELoss, WeightedSum)
from training.optim import SGD, Adagrad, Adam, AdamW, RMSprop
from training.schedules import (CosineLR, ExponentialLR, LinearWarmup, MultiStepLR, ReduceOnPlateau, StepLR)
from training.trainer import Callback, Trainer, accuracy
from training.continual import EWC, ContinualLearner, LwF, Replay, ReplayBuffer


# QAT and distillation (a Predictor for the teacher, the quantizer's rewrite): resolved on first
# use, so a plain training process does not import them
_LAZY = {"prepare_qat": "training.qat", "convert_qat": "training.qat",
         "Distiller": "training.distill"}  # the distill() function: training.distill.distill (the module owns the name)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'training' has no attribute {name!r}")


def load(path: str | os.PathLike | bytes) -> Model:
    """An IR model from an ONNX file (or its bytes), ready to train."""
    return load_model(os.fspath(path) if isinstance(path, os.PathLike) else path)


__all__ = ["load", "Trainer", "Callback", "accuracy", "data", "nn", "ArrayDataset", "DataLoader",
           "CrossEntropyLoss", "BCEWithLogitsLoss", "MSELoss", "L1Loss", "HuberLoss", "KLDivLoss", "WeightedSum",
           "L1Regularizer", "L2Regularizer", "CustomLoss", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad",
           "StepLR", "MultiStepLR", "ExponentialLR", "CosineLR", "LinearWarmup", "ReduceOnPlateau",
           "ContinualLearner", "ReplayBuffer", "Replay", "EWC", "LwF",
           "prepare_qat", "convert_qat", "Distiller"]
