"""Pruning: the entry points (``edgelearn compress --prune`` calls :func:`prune_model`).

* unstructured magnitude pruning, layer-wise or global (:mod:`compress.prune_masks`): zeros in
  dense tensors; smaller once compressed or run by a sparse kernel, same dense cost otherwise;
* a gradual sparsity schedule and Trainer callbacks keeping masks at zero while fine-tuning
  (:mod:`compress.prune_schedule`);
* structured filter pruning that removes Conv channels and shrinks the graph
  (:mod:`compress.prune_channels`): faster with any kernel.

    masks = magnitude_masks(model, 0.8, scope="global")
    pruned, masks = prune_unstructured(model, 0.8, scope="global")
    trainer = training.Trainer(pruned, ...); finetune(trainer, x, y, masks, epochs=2)
    small = prune_channels(model, 0.5)          # then fine-tune `small` with a plain Trainer
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from compress.prune_channels import (CRITERIA, ChannelCut, ChannelPlan, ChannelPruningError, apply_plan,
                                     plan_channels, prune_channels)
from compress.prune_masks import SCOPES, PruningError, apply_masks, magnitude_masks, prunable_weights, sparsity
from compress.prune_schedule import GradualPruning, KeepMasks, PolynomialSparsity, finetune, prune_and_finetune
from compress.quantize import clone
from inference.ir import Model

__all__ = ["PruningError", "ChannelPruningError", "prune_model", "prune_unstructured", "prunable_weights",
           "magnitude_masks", "apply_masks", "sparsity", "PolynomialSparsity", "KeepMasks", "GradualPruning",
           "finetune", "prune_and_finetune", "ChannelCut", "ChannelPlan", "plan_channels", "apply_plan",
           "prune_channels", "SCOPES", "CRITERIA"]


def prune_unstructured(model: Model, ratio: float, scope: str = "layer", exclude: Sequence[str] = ()
                       ) -> tuple[Model, dict[str, np.ndarray]]:
    """A copy of ``model`` with ``ratio`` of its prunable weights zeroed by magnitude, and the masks
    (True = kept) to hand to :func:`finetune`. The input model's arrays are not touched."""
    masks = magnitude_masks(model, ratio, scope, prunable_weights(model, exclude))
    m = clone(model)
    for name, mask in masks.items():
        m.graph.initializers[name] = m.graph.initializers[name] * mask
    return m, masks


def prune_model(model: Model, ratio: float, structured: bool = False, scope: str = "layer",
                criterion: str = "l1", exclude: Sequence[str] = ()) -> Model:
    """``ratio`` of each Conv's output channels removed (``structured``: every Conv whose cut can
    propagate), else ``ratio`` of the weights zeroed by magnitude (``exclude``: weights or nodes
    to leave dense, unstructured only)."""
    if structured:
        return prune_channels(model, ratio, criterion)
    return prune_unstructured(model, ratio, scope, exclude)[0]
