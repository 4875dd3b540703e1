"""Learning without Forgetting: distillation from a frozen copy of the model taken before each task."""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Mapping

import numpy as np

from inference.ir import Model, TensorType
from inference.session import Session
from training.continual.strategy import ContinualError, Strategy
from training.losses import KLDivLoss
from training.protocols import Loss, StepBuilder

if TYPE_CHECKING:
    from training.continual.learner import ContinualLearner

__all__ = ["LwF"]

TEACHER_INPUT = "lwf.teacher"
MASK_INPUT = "lwf.mask"


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
        teacher = b.input(TEACHER_INPUT, t.dtype, t.shape)
        mask = b.input(MASK_INPUT, t.dtype, (1, t.shape[-1]))
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
            return {TEACHER_INPUT: np.zeros((len(x), learner.n_outputs), np.float32), MASK_INPUT: mask}
        tr = learner.trainer
        logits = self._session.run({tr.input_name: np.ascontiguousarray(x, tr.input_dtype)})[0]
        return {TEACHER_INPUT: logits, MASK_INPUT: mask}

    def after_batch(self, learner, x, y):
        self.seen.update(int(c) for c in np.unique(y))

    def memory_bytes(self, learner):
        return {} if self.teacher is None else {"teacher": sum(a.nbytes for a in self.teacher.graph.initializers.values())}

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

