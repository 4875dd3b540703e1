"""Continual (incremental) learning on the device: keep learning from a stream without forgetting.

A :class:`ContinualLearner` (:mod:`.learner`) wraps a :class:`~training.trainer.Trainer` and
drives its step across a stream of tasks (:meth:`~ContinualLearner.learn_task`) or of single
samples and small batches (:meth:`~ContinualLearner.observe`), through the trainer's public
``train_on_batch``. Protection against forgetting comes from :class:`Strategy` objects
(:mod:`.strategy`), which combine freely (``[Replay(...), LwF()]``):

* :class:`Replay` (:mod:`.replay`) - a :class:`ReplayBuffer` (reservoir or class-balanced) whose
  budget is in bytes; samples are kept as uint8 (per-sample affine) or float16 and mixed into
  every batch.
* :class:`EWC` (:mod:`.ewc`; ``online=True``: online EWC) - a quadratic penalty
  ``lam/2 sum F (w - w*)^2`` emitted *as IR ops into the loss*, the Fisher and the anchor being
  state buffers of the step graph (one of each, whatever the number of tasks).
* :class:`LwF` (:mod:`.lwf`) - distillation at a temperature from a frozen copy of the model
  taken before each new task, over the outputs of the classes it knew; the KL term's weight is a
  state buffer (0 until there is a teacher).

Learning rates change between tasks through ``lr_decay``. All randomness is derived from
counters (``seed``, task, epoch, batch, samples seen), so the continual state - the step graph's
buffers, the replay buffer, the teacher and the position in the stream - is everything
:meth:`ContinualLearner.save` needs for a restarted run to continue exactly. It is ONE file: the
trainer's checkpoint, into which the learner registers its state
(:meth:`Trainer.register_checkpoint_state <training.trainer.Trainer.register_checkpoint_state>`).
:mod:`.metrics` scores an accuracy matrix (average accuracy, forgetting).
"""
from __future__ import annotations

from training.continual.ewc import EWC
from training.continual.learner import ContinualLearner, LrPolicy
from training.continual.lwf import LwF
from training.continual.metrics import average_accuracy, average_forgetting
from training.continual.replay import Replay, ReplayBuffer
from training.continual.strategy import ContinualError, Strategy

__all__ = ["ContinualError", "ReplayBuffer", "Strategy", "Replay", "EWC", "LwF", "ContinualLearner", "LrPolicy",
           "average_accuracy", "average_forgetting"]
