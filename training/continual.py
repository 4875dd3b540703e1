"""Continual (incremental) learning on the device: keep learning from a stream without forgetting.

A :class:`ContinualLearner` wraps a :class:`~training.trainer.Trainer` and drives its step graph
across a stream of tasks (:meth:`~ContinualLearner.learn_task`) or of single samples and small
batches (:meth:`~ContinualLearner.observe`). Protection against forgetting comes from
:class:`Strategy` objects, which combine freely (``[Replay(...), LwF()]``):

* :class:`Replay` - a :class:`ReplayBuffer` (reservoir or class-balanced) whose budget is in
  bytes; samples are kept as uint8 (per-sample affine) or float16 and mixed into every batch.
* :class:`EWC` (``online=True``: online EWC) - a quadratic penalty ``lam/2 sum F (w - w*)^2``
  emitted *as IR ops into the loss*: the Fisher and the anchor are state buffers of the step
  graph, so the backward pass, the fused optimizer and the checkpoint handle them like any other
  buffer, and the penalty costs two elementwise ops per parameter. Several tasks' penalties
  ``sum_t F_t (w - w_t)^2`` equal ``F (w - m)^2 + const`` with ``F = sum_t F_t`` and
  ``m = sum_t F_t w_t / F``, so plain EWC also needs only one Fisher and one anchor (exact
  gradients, memory independent of the number of tasks).
* :class:`LwF` - distillation at a temperature from a frozen copy of the model taken before each
  new task, over the outputs of the classes it knew; the KL term's weight is a state buffer
  (0 until there is a teacher).

Learning rates change between tasks through ``lr_decay`` (a factor per task or a function of
the task index). All randomness is derived from counters (``seed``, task, epoch, batch,
samples seen), so the continual state - the step graph's buffers (parameters, optimizer
moments, Fisher, anchors), the replay buffer, the teacher and the position in the stream - is
everything :meth:`ContinualLearner.save` needs for a restarted run to continue exactly.

Why its own checkpoint file: :meth:`Trainer.save_checkpoint` has no extension point for extra
arrays, so the learner writes ONE file in :mod:`training.checkpoint`'s format (temporary file,
fsync, atomic rename, SHA-256 verified on load) holding the step graph's buffers and the
continual state together - never two files that a crash could leave out of step.
"""
from __future__ import annotations

import copy
import os
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from inference.ir import Model, TensorType
from inference.session import Session
from training.checkpoint import load_checkpoint_file, save_checkpoint_file
from training.errors import CheckpointError, TrainingError
from training.graph import build_training_graph
from training.losses import CrossEntropyLoss, KLDivLoss, WeightedSum, _Regularizer
from training.optim import Adam, FusedOptimizer
from training.protocols import Loss, StepBuilder
from training.trainer import Trainer

__all__ = ["ContinualError", "ReplayBuffer", "Strategy", "Replay", "EWC", "LwF", "ContinualLearner",
           "average_accuracy", "average_forgetting"]

_CKPT_KIND = "edgelearn-continual"
_CKPT_VERSION = 1
_MASK_INPUT = "continual.class_mask"
_TEACHER_INPUT = "lwf.teacher"
_LWF_MASK = "lwf.mask"
_STREAM = 1 << 20  # key component that separates streaming steps from epoch/batch steps


class ContinualError(TrainingError):
    """A continual-learning setup or call is invalid (budget too small, tasks out of order, no data)."""


# -- replay buffer ------------------------------------------------------------------------------
class ReplayBuffer:
    """Samples of past data within a budget in BYTES, stored compressed.

    ``codec``: ``"uint8"`` keeps each sample as bytes plus its own (min, scale) in float32 (any
    input range, 1/4 of float32), ``"fp16"`` as float16, ``"fp32"`` uncompressed. The capacity is
    ``budget_bytes // bytes_per_sample`` and all storage is allocated up front, so the memory used
    is the budget (``nbytes``) from the first sample on. ``policy``: ``"reservoir"`` (every sample
    seen has the same chance to be kept) or ``"class_balanced"`` (CBRS, Chrysakis & Moens 2020: a
    new sample replaces one of the currently largest class, so rare classes are not crowded out).
    """

    CODECS = {"uint8": np.uint8, "fp16": np.float16, "fp32": np.float32}

    def __init__(self, budget_bytes: int, sample_shape: Sequence[int], codec: str = "uint8",
                 policy: str = "reservoir", seed: int = 0):
        if codec not in self.CODECS:
            raise ContinualError(f"unknown replay codec {codec!r}; known: {sorted(self.CODECS)}")
        if policy not in ("reservoir", "class_balanced"):
            raise ContinualError(f"unknown replay policy {policy!r}; known: reservoir, class_balanced")
        self.sample_shape, self.codec, self.policy, self.seed = tuple(int(d) for d in sample_shape), codec, policy, seed
        self.capacity = int(budget_bytes) // self.bytes_per_sample(self.sample_shape, codec)
        if self.capacity < 1:
            raise ContinualError(f"a replay budget of {budget_bytes} bytes holds no {codec} sample of shape "
                                 f"{self.sample_shape} ({self.bytes_per_sample(self.sample_shape, codec)} bytes each)")
        self.data = np.zeros((self.capacity, *self.sample_shape), self.CODECS[codec])
        self.affine = np.zeros((self.capacity if codec == "uint8" else 0, 2), np.float32)
        self.labels = np.zeros(self.capacity, np.int32)
        self.size = 0          # samples held
        self.seen = 0          # samples offered so far
        self.seen_per_class: dict[int, int] = {}

    @classmethod
    def bytes_per_sample(cls, sample_shape: Sequence[int], codec: str = "uint8") -> int:
        """Storage of one sample: payload, per-sample affine (uint8 only) and an int32 label."""
        payload = int(np.prod(sample_shape)) * np.dtype(cls.CODECS[codec]).itemsize
        return payload + (8 if codec == "uint8" else 0) + 4

    @classmethod
    def for_samples(cls, n: int, sample_shape: Sequence[int], codec: str = "uint8", **kw: Any) -> "ReplayBuffer":
        """A buffer whose byte budget holds exactly ``n`` samples."""
        return cls(n * cls.bytes_per_sample(sample_shape, codec), sample_shape, codec, **kw)

    @property
    def nbytes(self) -> int:
        """Bytes actually allocated (measured from the arrays, not computed from the budget)."""
        return self.data.nbytes + self.affine.nbytes + self.labels.nbytes

    def __len__(self) -> int:
        return self.size

    # -- writing ---------------------------------------------------------------------------------
    def _store(self, slot: int, x: np.ndarray, y: int) -> None:
        if self.codec == "uint8":
            lo, hi = float(x.min()), float(x.max())
            scale = (hi - lo) / 255.0 or 1.0
            self.data[slot] = np.clip(np.rint((x - lo) / scale), 0, 255)
            self.affine[slot] = (lo, scale)
        else:
            self.data[slot] = x
        self.labels[slot] = y

    def _slot(self, y: int, rng: np.random.Generator) -> int | None:
        """Where the sample just seen goes (None: dropped)."""
        if self.size < self.capacity:
            self.size += 1
            return self.size - 1
        if self.policy == "reservoir":
            j = int(rng.integers(0, self.seen))
            return j if j < self.capacity else None
        counts = np.bincount(self.labels[:self.size], minlength=max(y + 1, int(self.labels.max()) + 1))
        largest = np.flatnonzero(counts == counts.max())
        if y not in largest:  # take a place from one of the largest classes
            victims = np.flatnonzero(np.isin(self.labels, largest))
            return int(victims[rng.integers(0, len(victims))])
        if rng.random() < counts[y] / self.seen_per_class[y]:  # reservoir within the class
            own = np.flatnonzero(self.labels == y)
            return int(own[rng.integers(0, len(own))])
        return None

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        """Offer a batch of samples; the draws depend only on ``seed`` and how many were seen."""
        x = np.asarray(x, np.float32).reshape((-1, *self.sample_shape))
        y = np.asarray(y).reshape(-1)
        rng = np.random.default_rng([self.seed, self.seen])
        for xi, yi in zip(x, y):
            yi = int(yi)
            self.seen += 1
            self.seen_per_class[yi] = self.seen_per_class.get(yi, 0) + 1
            slot = self._slot(yi, rng)
            if slot is not None:
                self._store(slot, xi, yi)

    # -- reading ---------------------------------------------------------------------------------
    def decode(self, idx: np.ndarray) -> np.ndarray:
        x = self.data[idx].astype(np.float32)
        if self.codec == "uint8":
            a = self.affine[idx].reshape((-1,) + (1,) * len(self.sample_shape) + (2,))
            x = x * a[..., 1] + a[..., 0]
        return x

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` samples drawn with replacement (decoded to float32) and their int64 labels."""
        idx = rng.integers(0, self.size, n)
        return self.decode(idx), self.labels[idx].astype(np.int64)

    def contents(self) -> tuple[np.ndarray, np.ndarray]:
        """Everything held, decoded."""
        idx = np.arange(self.size)
        return self.decode(idx), self.labels[idx].astype(np.int64)

    def class_counts(self) -> dict[int, int]:
        vals, counts = np.unique(self.labels[:self.size], return_counts=True)
        return {int(v): int(c) for v, c in zip(vals, counts)}

    # -- state -----------------------------------------------------------------------------------
    def state_dict(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return ({"data": self.data, "affine": self.affine, "labels": self.labels},
                {"size": self.size, "seen": self.seen, "seen_per_class": {str(k): v for k, v in self.seen_per_class.items()},
                 "capacity": self.capacity, "codec": self.codec})

    def load_state_dict(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        if meta["capacity"] != self.capacity or meta["codec"] != self.codec:
            raise CheckpointError(f"the checkpoint's replay buffer ({meta['capacity']} x {meta['codec']}) differs "
                                  f"from this one ({self.capacity} x {self.codec})")
        np.copyto(self.data, arrays["data"])
        np.copyto(self.affine, arrays["affine"])
        np.copyto(self.labels, arrays["labels"])
        self.size, self.seen = int(meta["size"]), int(meta["seen"])
        self.seen_per_class = {int(k): int(v) for k, v in meta["seen_per_class"].items()}


# -- strategies -----------------------------------------------------------------------------------
class Strategy:
    """What a continual-learning method adds to plain training; every hook is optional.

    ``loss_terms`` are emitted into the step graph when the learner builds it; the other hooks
    run around each step and at task boundaries. State kept outside the step graph is returned
    by ``state_dict`` as (arrays, JSON-able meta) and saved in the learner's checkpoint.
    """

    name = "strategy"

    def loss_terms(self) -> list[tuple[float, Loss]]:
        return []

    def bind(self, learner: "ContinualLearner") -> None:
        """Called once the learner's trainer (and its step graph) exists."""

    def before_task(self, learner: "ContinualLearner") -> None:
        """Before the first step of a new task."""

    def mix(self, learner: "ContinualLearner", x: np.ndarray, y: np.ndarray,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The batch actually trained on, given the new samples."""
        return x, y

    def feeds(self, learner: "ContinualLearner", x: np.ndarray) -> dict[str, np.ndarray]:
        """Extra step-graph inputs for the (mixed) batch ``x``."""
        return {}

    def after_batch(self, learner: "ContinualLearner", x: np.ndarray, y: np.ndarray) -> None:
        """After a step, with the new samples only."""

    def after_task(self, learner: "ContinualLearner", x: np.ndarray | None, y: np.ndarray | None) -> None:
        """At the end of a task, with its data (or None in a stream without it)."""

    def state_dict(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return {}, {}

    def load_state_dict(self, learner: "ContinualLearner", arrays: Mapping[str, np.ndarray],
                        meta: Mapping[str, Any]) -> None:
        pass


class Replay(Strategy):
    """Experience replay: each batch of new samples is joined by ``ratio`` times as many from the buffer."""

    name = "replay"

    def __init__(self, buffer: ReplayBuffer, ratio: float = 1.0):
        self.buffer, self.ratio = buffer, float(ratio)

    def mix(self, learner, x, y, rng):
        n = int(round(len(x) * self.ratio))
        if not len(self.buffer) or n < 1:
            return x, y
        xr, yr = self.buffer.sample(n, rng)
        return np.concatenate([x, xr.reshape((-1, *x.shape[1:]))]), np.concatenate([y, yr.astype(y.dtype)])

    def after_batch(self, learner, x, y):
        self.buffer.add(x, y)

    def state_dict(self):
        return self.buffer.state_dict()

    def load_state_dict(self, learner, arrays, meta):
        self.buffer.load_state_dict(arrays, meta)


class _EWCPenalty(_Regularizer):
    """``coeff * sum F (w - anchor)^2`` with F and anchor as state buffers of the step graph."""

    def _penalty(self, b: StepBuilder, p: str) -> str:
        t = b.type_of(p)
        if not (isinstance(t, TensorType) and t.is_static()):
            raise ContinualError(f"EWC needs the static shape of parameter {p!r}, got {t}")
        fisher = b.state(f"ewc.fisher::{p}", np.zeros(t.shape, t.dtype))
        anchor = b.state(f"ewc.anchor::{p}", np.zeros(t.shape, t.dtype))
        d = b.op("Sub", p, anchor)
        return b.op("Mul", fisher, b.op("Mul", d, d))


class EWC(Strategy):
    """Elastic weight consolidation; ``online=True`` is online EWC (Schwarz et al. 2018).

    After each task the diagonal empirical Fisher (mean squared per-sample gradient of the label
    loss) is estimated on up to ``fisher_samples`` of the task's samples. EWC accumulates all
    tasks' penalties exactly (one Fisher-weighted anchor, see the module notes); online EWC keeps
    ``F = gamma F_old + F_new`` anchored at the latest weights.
    """

    name = "ewc"

    def __init__(self, lam: float = 100.0, online: bool = False, gamma: float = 1.0, fisher_samples: int = 200):
        self.lam, self.online, self.gamma, self.fisher_samples = float(lam), online, float(gamma), int(fisher_samples)
        self.penalty = _EWCPenalty(self.lam / 2.0)

    def loss_terms(self):
        return [(1.0, self.penalty)]

    def _buffers(self, learner: "ContinualLearner") -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        live = learner.trainer.graph.model.graph.initializers
        names = [p for p in self.penalty.names if f"ewc.fisher::{p}" in live]
        return ({p: live[f"ewc.fisher::{p}"] for p in names}, {p: live[f"ewc.anchor::{p}"] for p in names})

    def fisher(self, learner: "ContinualLearner", x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        """Diagonal empirical Fisher at the current weights, one sample at a time."""
        tr = learner.trainer
        # the label loss and its gradients (no optimizer) over a copy of the current weights; dropped
        # on return, so a device keeps no second copy of the weights between tasks
        g = build_training_graph(tr.forward, learner.label_loss, self.penalty.names, None)
        rng = np.random.default_rng([learner.seed, learner.task, 7])
        idx = rng.permutation(len(x))[:self.fisher_samples]
        out = {p: np.zeros_like(a) for p, a in g.parameters().items()}
        for i in idx:
            feeds = {tr.input_name: np.ascontiguousarray(learner.prepare(x[i:i + 1]), tr.input_dtype),
                     g.target: tr._target(y[i:i + 1]), **learner.label_feeds(y[i:i + 1])}
            g.step(feeds, lr=0.0)
            for p in out:
                out[p] += np.square(g.last_outputs[g.grads[p]])
        return {p: v / max(len(idx), 1) for p, v in out.items()}

    def after_task(self, learner, x, y):
        if x is None or len(x) == 0:
            raise ContinualError("EWC needs the task's samples to estimate the Fisher information "
                                 "(pass them to end_task, or combine EWC with Replay)")
        new = self.fisher(learner, x, y)
        fisher, anchor = self._buffers(learner)
        params = learner.trainer.graph.parameters()
        for p, f_new in new.items():
            w = params[p]
            if self.online:
                fisher[p] *= self.gamma
                fisher[p] += f_new
                np.copyto(anchor[p], w)
            else:  # F (w - m)^2 == sum_t F_t (w - w_t)^2 + const, m moved towards w by the new share
                total = fisher[p] + f_new
                share = np.divide(f_new, total, out=np.ones_like(total), where=total > 0)
                anchor[p] += share * (w - anchor[p])
                np.copyto(fisher[p], total)


class _Gated:
    """A loss term multiplied by a scalar state buffer (so a strategy can switch it on later)."""

    def __init__(self, loss: Loss, gate: str):
        self.loss, self.gate = loss, gate

    def extra_inputs(self, prediction: TensorType) -> dict[str, TensorType]:
        return getattr(self.loss, "extra_inputs", lambda _: {})(prediction)

    def build(self, b: StepBuilder, prediction: str, target: str) -> str:
        term = self.loss.build(b, prediction, target)
        t = b.type_of(term)
        dtype = t.dtype if isinstance(t, TensorType) else np.dtype(np.float32)
        return b.op("Mul", term, b.state(self.gate, np.zeros((), dtype)))


class _OldClassKL:
    """``T^2 KL`` between teacher and student logits over the classes the teacher knew: a mask input
    (0 for those classes, -1e4 otherwise) is added to both sides, so new classes are learned from
    the labels alone instead of being held at the teacher's near-zero probabilities."""

    def __init__(self, temperature: float):
        self.kl = KLDivLoss(temperature)

    def build(self, b: StepBuilder, prediction: str, target: str) -> str:
        t = b.type_of(prediction)
        if not (isinstance(t, TensorType) and t.shape and isinstance(t.shape[-1], int)):
            raise ContinualError(f"LwF needs the number of outputs of {prediction!r}, got type {t}")
        teacher = b.input(_TEACHER_INPUT, t.dtype, t.shape)
        mask = b.input(_LWF_MASK, t.dtype, (1, t.shape[-1]))
        return self.kl.build(b, b.op("Add", prediction, mask), b.op("Add", teacher, mask))


class LwF(Strategy):
    """Learning without Forgetting (Li & Hoiem 2016): ``alpha T^2 KL(old(x)/T || new(x)/T)`` on every
    batch, the old model being a frozen copy of the weights taken at the start of each new task.

    The KL covers the outputs of the classes seen before the task (all outputs when none was
    seen through this learner, e.g. a pretrained model), as van de Ven & Tolias do for
    class-incremental learning; the new classes are learned from their labels.
    """

    name = "lwf"

    def __init__(self, alpha: float = 1.0, temperature: float = 2.0):
        self.alpha, self.temperature = float(alpha), float(temperature)
        self.gate = "lwf.weight"
        self.teacher: Model | None = None
        self.seen: set[int] = set()     # classes trained on so far
        self.old: list[int] = []        # classes the teacher knew
        self._session: Session | None = None

    def loss_terms(self):
        return [(1.0, _Gated(_OldClassKL(self.temperature), self.gate))]

    def _set_teacher(self, learner: "ContinualLearner", arrays: Mapping[str, np.ndarray] | None) -> None:
        tr = learner.trainer
        self.teacher = copy.deepcopy(tr.forward)  # a deep copy: a frozen snapshot of the weights
        if arrays is not None:
            for p, a in arrays.items():
                np.copyto(self.teacher.graph.initializers[p], a)
        self._session = Session(self.teacher)
        tr.graph.model.graph.initializers[self.gate][...] = self.alpha

    def before_task(self, learner):
        if learner.task > 0:
            self.old = sorted(self.seen)
            self._set_teacher(learner, None)

    def feeds(self, learner, x):
        mask = np.zeros((1, learner.n_outputs), np.float32)
        if self.old and learner.n_outputs > 1:
            mask[:] = -1e4
            mask[0, [c for c in self.old if c < learner.n_outputs]] = 0.0
        if self._session is None:  # no teacher yet: the gate is 0, any logits do
            return {_TEACHER_INPUT: np.zeros((len(x), learner.n_outputs), np.float32), _LWF_MASK: mask}
        tr = learner.trainer
        logits = self._session.run({tr.input_name: np.ascontiguousarray(x, tr.input_dtype)})[0]
        return {_TEACHER_INPUT: logits, _LWF_MASK: mask}

    def after_batch(self, learner, x, y):
        self.seen.update(int(c) for c in np.unique(y))

    def state_dict(self):
        meta = {"teacher": self.teacher is not None, "seen": sorted(self.seen), "old": self.old}
        if self.teacher is None:
            return {}, meta
        names = [n for n, a in self.teacher.graph.initializers.items() if a.dtype.kind == "f"]
        return {n: self.teacher.graph.initializers[n] for n in names}, meta

    def load_state_dict(self, learner, arrays, meta):
        self.seen, self.old = set(meta["seen"]), list(meta["old"])
        if meta.get("teacher"):
            self._set_teacher(learner, arrays)


# -- the learner ------------------------------------------------------------------------------------
class _MaskedLoss:
    """The label loss on logits restricted to each sample's head (task-incremental learning): a
    mask input of 0 (allowed class) or -1e4 is added to the prediction first."""

    def __init__(self, loss: Loss):
        self.loss = loss

    def target_type(self, prediction: TensorType) -> TensorType:
        return getattr(self.loss, "target_type", lambda p: p)(prediction)

    def build(self, b: StepBuilder, prediction: str, target: str) -> str:
        t = b.type_of(prediction)
        mask = b.input(_MASK_INPUT, t.dtype, t.shape)
        return self.loss.build(b, b.op("Add", prediction, mask), target)


LrPolicy = Callable[[int], float]


class ContinualLearner:
    """Trains ``model`` over a stream of tasks or samples with the given strategies.

    ``heads``: for task-incremental learning, the classes of each task (a sample is trained and
    scored only among its task's classes); None: one head over all outputs. ``lr_decay``: the
    learning rate of task ``t`` is ``optimizer.lr * lr_decay ** t`` (or ``optimizer.lr *
    lr_decay(t)``). ``batch_size`` is the number of *new* samples per step (replay adds more).
    ``transform``: turns a batch of raw inputs into the model's (e.g. uint8 pixels to float32 in
    [0, 1]) right before the step, so a device keeps its data - and the replay buffer its
    samples - in the compact raw form; it must accept float32 too (replayed samples come back
    decoded to float32 in the raw range).
    """

    def __init__(self, model: Model, strategies: Sequence[Strategy] = (), *, loss: Loss | None = None,
                 optimizer: FusedOptimizer | None = None, trainable: Sequence[str] | str | None = None,
                 heads: Sequence[Sequence[int]] | None = None, lr_decay: float | LrPolicy = 1.0,
                 batch_size: int = 32, seed: int = 0, num_threads: int | None = None, cache_frozen: bool = True,
                 transform: Callable[[np.ndarray], np.ndarray] | None = None):
        names = [s.name for s in strategies]
        if len(set(names)) != len(names):
            raise ContinualError(f"each strategy may be used once, got {names}")
        self.strategies, self.seed, self.batch_size, self.lr_decay = list(strategies), seed, int(batch_size), lr_decay
        self.transform = transform
        base = loss or CrossEntropyLoss()
        self.label_loss: Loss = _MaskedLoss(base) if heads is not None else base
        terms = [t for s in self.strategies for t in s.loss_terms()]
        full = WeightedSum([(1.0, self.label_loss), *terms]) if terms else self.label_loss
        self.trainer = Trainer(model, full, optimizer or Adam(1e-3), trainable, seed=seed,
                               num_threads=num_threads, cache_frozen=cache_frozen)
        out = self.trainer.forward.graph.outputs[0].type
        self.n_outputs = int(out.shape[-1]) if isinstance(out, TensorType) and out.shape else 1
        self.heads = [list(h) for h in heads] if heads is not None else None
        self._head_mask = self._masks() if self.heads is not None else None
        self.task = 0                  # tasks completed
        self.position: tuple[int, int] | None = None  # (epoch, batch) reached inside the current task
        self.observed = 0              # samples given to observe() in the current task
        self.extras: dict[str, np.ndarray] = {}  # caller's arrays saved in the checkpoint (e.g. scores so far)
        self.on_task_end: list[Callable[["ContinualLearner"], None]] = []  # run before the end-of-task save
        for s in self.strategies:
            s.bind(self)

    # -- masks and feeds ---------------------------------------------------------------------
    def _masks(self) -> np.ndarray:
        """Row c: the additive mask of the head that class c belongs to."""
        masks = np.full((self.n_outputs, self.n_outputs), -1e4, np.float32)
        for head in self.heads:
            for c in head:
                masks[c, head] = 0.0
        return masks

    def label_feeds(self, y: np.ndarray) -> dict[str, np.ndarray]:
        """Inputs of the label loss besides prediction and target (the head mask)."""
        if self._head_mask is None:
            return {}
        return {_MASK_INPUT: self._head_mask[np.asarray(y, np.int64).reshape(-1)]}

    def prepare(self, x: np.ndarray) -> np.ndarray:
        """Raw inputs as the model takes them (``transform``); strategies see raw inputs."""
        return self.transform(x) if self.transform is not None else x

    def lr(self, task: int | None = None) -> float:
        t = self.task if task is None else task
        f = self.lr_decay(t) if callable(self.lr_decay) else self.lr_decay ** t
        return self.trainer.optimizer.lr * float(f)

    # -- training ----------------------------------------------------------------------------
    def _train_step(self, x: np.ndarray, y: np.ndarray, key: Sequence[int]) -> float:
        """One optimizer step on new samples (x, y) mixed by the strategies; returns the loss."""
        rng = np.random.default_rng([self.seed, *key])
        xb, yb = x, y
        for s in self.strategies:
            xb, yb = s.mix(self, xb, yb, rng)
        xb = self.prepare(xb)
        feeds: dict[str, np.ndarray] = dict(self.label_feeds(yb))
        for s in self.strategies:
            feeds.update(s.feeds(self, xb))
        tr = self.trainer
        step_feeds = {**tr._inputs(xb), **feeds, tr.graph.target: tr._target(yb)}
        loss = tr.graph.step(step_feeds, lr=self.lr())
        tr.step += 1
        for s in self.strategies:
            s.after_batch(self, x, y)
        return loss

    def _begin_task(self) -> None:
        self.position, self.observed = (0, 0), 0
        for s in self.strategies:
            s.before_task(self)

    def learn_task(self, x: np.ndarray, y: np.ndarray, epochs: int = 1, *, task: int | None = None,
                   checkpoint: str | os.PathLike | None = None, checkpoint_every: int = 0,
                   max_steps: int | None = None) -> bool:
        """Train on one task's data for ``epochs`` epochs; True when the task is complete.

        ``task``: the index of this task in the stream. A task already learned (e.g. before a
        restart) is skipped, the one a checkpoint interrupted resumes at its saved batch.
        ``checkpoint``: saved every ``checkpoint_every`` steps and at the end of the task.
        ``max_steps``: stop (returning False) once the trainer has taken that many steps in total.
        """
        task = self.task if task is None else task
        if task < self.task:
            return True
        if task > self.task:
            raise ContinualError(f"task {task} given but only {self.task} tasks are learned: tasks come in order")
        x, y = np.asarray(x), np.asarray(y)
        if self.position is None:
            self._begin_task()
        epoch0, batch0 = self.position
        n_batches = -(-len(x) // self.batch_size)
        for e in range(epoch0, epochs):
            order = np.random.default_rng([self.seed, task, e]).permutation(len(x))
            for c in range(batch0 if e == epoch0 else 0, n_batches):
                if max_steps is not None and self.trainer.step >= max_steps:
                    if checkpoint:
                        self.save(checkpoint)
                    return False
                idx = order[c * self.batch_size:(c + 1) * self.batch_size]
                self._train_step(x[idx], y[idx], (task, e, c))
                self.position = (e, c + 1)
                if checkpoint and checkpoint_every and self.trainer.step % checkpoint_every == 0:
                    self.save(checkpoint)
        self.end_task(x, y)
        if checkpoint:
            self.save(checkpoint)
        return True

    def observe(self, x: np.ndarray, y: np.ndarray) -> float:
        """Learn from one sample or a small batch as it arrives (memory stays bounded: nothing is
        kept but what the strategies keep, e.g. the replay buffer); returns the loss."""
        x, y = np.asarray(x), np.asarray(y).reshape(-1)
        t = self.trainer.forward.graph.feed_inputs()[0].type
        rank = t.rank if isinstance(t, TensorType) and t.shape is not None else None
        if (x.ndim == rank - 1) if rank is not None else len(x) != len(y):  # one sample without its batch axis
            x = x[None]
        if self.position is None:
            self._begin_task()
        loss = self._train_step(x, y, (self.task, _STREAM, self.observed))
        self.observed += len(x)
        return loss

    def end_task(self, x: np.ndarray | None = None, y: np.ndarray | None = None) -> None:
        """Close the current task: EWC's Fisher, then the next task's learning rate (LwF takes its
        teacher when the next task starts). In a stream without the task's data, strategies that
        need it use the replay buffer's contents."""
        if x is None:
            replay = next((s for s in self.strategies if isinstance(s, Replay) and len(s.buffer)), None)
            if replay is not None:
                x, y = replay.buffer.contents()
        for s in self.strategies:
            s.after_task(self, x, y)
        self.task += 1
        self.position = None
        for fn in self.on_task_end:
            fn(self)

    # -- inference ---------------------------------------------------------------------------
    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """The model's outputs for raw inputs ``x``."""
        if self.transform is None:
            return self.trainer.predict(x, batch_size)
        outs = [self.trainer.predict(self.prepare(x[s:s + batch_size]), batch_size) for s in range(0, len(x), batch_size)]
        return np.concatenate(outs) if outs else np.empty((0, self.n_outputs), np.float32)

    def accuracy(self, x: np.ndarray, y: np.ndarray, classes: Sequence[int] | None = None) -> float:
        """Top-1 accuracy; ``classes`` restricts the choice (task-incremental scoring)."""
        scores = self.predict(x)
        if classes is not None:
            keep = np.full(scores.shape[1], -np.inf, np.float32)
            keep[list(classes)] = 0.0
            scores = scores + keep
        return float(np.mean(scores.argmax(1) == np.asarray(y).reshape(-1)))

    def memory_bytes(self) -> dict[str, int]:
        """Bytes held by the continual state, measured from the arrays."""
        live = self.trainer.graph.model.graph.initializers
        out = {"parameters": sum(a.nbytes for a in self.trainer.graph.parameters().values()),
               "ewc": sum(a.nbytes for n, a in live.items() if n.startswith("ewc."))}
        for s in self.strategies:
            if isinstance(s, Replay):
                out["replay"] = s.buffer.nbytes
            if isinstance(s, LwF) and s.teacher is not None:
                out["teacher"] = sum(a.nbytes for a in s.teacher.graph.initializers.values())
        return out

    # -- checkpoints -------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """The whole continual state in one atomically written, checksummed file
        (:mod:`training.checkpoint`'s format): step-graph buffers, strategies' state, position."""
        tr = self.trainer
        arrays = {f"graph::{k}": v for k, v in tr.graph.buffers().items()}
        arrays.update({f"extra::{k}": v for k, v in self.extras.items()})
        metas = []
        for s in self.strategies:
            a, m = s.state_dict()
            arrays.update({f"{s.name}::{k}": v for k, v in a.items()})
            metas.append({"name": s.name, "meta": m})
        meta = {"kind": _CKPT_KIND, "version": _CKPT_VERSION, "task": self.task, "position": self.position,
                "observed": self.observed, "step": tr.step, "strategies": metas,
                "schedule": None if tr.schedule is None else tr.schedule.state_dict()}
        save_checkpoint_file(path, arrays, meta)

    def load(self, path: str | os.PathLike) -> None:
        """Restore a :meth:`save`; the learner must be built the same way (model, strategies, options)."""
        arrays, meta = load_checkpoint_file(path)
        if meta.get("kind") != _CKPT_KIND or meta.get("version") != _CKPT_VERSION:
            raise CheckpointError(f"{os.fspath(path)!r} is not a version-{_CKPT_VERSION} continual-learning checkpoint")
        saved = [m["name"] for m in meta["strategies"]]
        if saved != [s.name for s in self.strategies]:
            raise CheckpointError(f"checkpoint {os.fspath(path)!r} was written with strategies {saved}, "
                                  f"this learner has {[s.name for s in self.strategies]}")
        tr = self.trainer
        graph = {k[len("graph::"):]: v for k, v in arrays.items() if k.startswith("graph::")}
        missing = sorted(set(tr.graph.buffers()) - set(graph))
        if missing:
            raise CheckpointError(f"checkpoint {os.fspath(path)!r} lacks buffers {missing[:5]} of this learner")
        try:
            tr.graph.load_buffers(graph)
        except TrainingError as e:
            raise CheckpointError(f"checkpoint {os.fspath(path)!r} does not match this learner: {e}") from None
        for s, m in zip(self.strategies, meta["strategies"]):
            prefix = f"{s.name}::"
            s.load_state_dict(self, {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}, m["meta"])
        self.extras = {k[len("extra::"):]: v for k, v in arrays.items() if k.startswith("extra::")}
        self.task, self.observed = int(meta["task"]), int(meta["observed"])
        self.position = None if meta["position"] is None else tuple(meta["position"])
        tr.step = int(meta["step"])
        if tr.schedule is not None and meta["schedule"] is not None:
            tr.schedule.load_state_dict(meta["schedule"])


# -- metrics -----------------------------------------------------------------------------------------
def average_accuracy(acc: np.ndarray) -> float:
    """Mean accuracy over all tasks after the last one; ``acc[i, j]``: task j's accuracy after task i."""
    return float(np.mean(np.asarray(acc)[-1]))


def average_forgetting(acc: np.ndarray) -> float:
    """Mean over all but the last task of (best accuracy before the end - final accuracy)."""
    acc = np.asarray(acc)
    t = len(acc)
    if t < 2:
        return 0.0
    return float(np.mean([acc[j:t - 1, j].max() - acc[-1, j] for j in range(t - 1)]))
