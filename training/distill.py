"""Knowledge distillation: train a (smaller) student on a teacher's softened outputs plus the labels.

    student, history = distill(teacher, student, x, y, temperature=4.0, alpha=0.5, epochs=10)

The loss is ``alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, y)``: the
existing :class:`~training.losses.KLDivLoss` (which carries the ``T^2`` that keeps its gradients
on the scale of the hard loss's as T grows) and :class:`~training.losses.CrossEntropyLoss` in a
:class:`~training.losses.WeightedSum`, trained by :class:`~training.trainer.Trainer`. The teacher
runs in our :class:`~inference.predictor.Predictor`, once per data set: its logits are cached by
the content of the inputs, so epochs and repeated fits reuse them.
"""
from __future__ import annotations

import copy
import hashlib
import os
from typing import Any, Sequence

import numpy as np

from inference.config import Config
from inference.ir import Model
from inference.onnx_export import model_to_proto
from inference.predictor import Predictor
from training.errors import TrainingError
from training.losses import CrossEntropyLoss, KLDivLoss, WeightedSum
from training.optim import Adam
from training.trainer import Trainer

__all__ = ["Distiller", "distill", "distillation_loss", "TEACHER_INPUT"]

TEACHER_INPUT = "distill.teacher_logits"
Teacher = Model | Predictor | str | os.PathLike | bytes


def distillation_loss(temperature: float = 4.0, alpha: float = 0.5, teacher_input: str = TEACHER_INPUT) -> WeightedSum:
    """``alpha * T^2 * KL(teacher / T || student / T) + (1 - alpha) * CE(student, labels)``; the
    teacher's logits are fed as the graph input ``teacher_input``."""
    if not 0.0 <= alpha <= 1.0:
        raise TrainingError(f"distillation alpha must be in [0, 1], got {alpha}")
    if not temperature > 0:
        raise TrainingError(f"distillation temperature must be > 0, got {temperature}")
    return WeightedSum([(1.0 - alpha, CrossEntropyLoss()),
                        (alpha, KLDivLoss(temperature, teacher_input=teacher_input))])


def _predictor(teacher: Teacher) -> Predictor:
    if isinstance(teacher, Predictor):
        return teacher
    if isinstance(teacher, Model):
        return Predictor(Config(model_path=model_to_proto(teacher)))
    return Predictor(Config(model_path=os.fspath(teacher) if isinstance(teacher, os.PathLike) else teacher))


def _fingerprint(x: np.ndarray) -> tuple:
    data = np.ascontiguousarray(x)
    return x.shape, str(x.dtype), hashlib.blake2b(data.view(np.uint8).reshape(-1), digest_size=16).digest()


class Distiller:
    """A :class:`Trainer` of ``student`` on :func:`distillation_loss`, feeding it the teacher's logits.

    ``teacher``: an IR model, a Predictor, or an ONNX file/bytes; its first output (or
    ``teacher_output``) must have the student's output shape. ``trainer_options`` go to the Trainer
    (``trainable``, ``schedule``, ``num_threads``...).
    """

    def __init__(self, teacher: Teacher, student: Model, temperature: float = 4.0, alpha: float = 0.5,
                 optimizer: Any = None, *, teacher_output: str | None = None, teacher_batch: int = 256,
                 **trainer_options: Any):
        self.temperature, self.alpha = float(temperature), float(alpha)
        self.loss = distillation_loss(self.temperature, self.alpha)
        self.teacher = _predictor(teacher)
        outputs = self.teacher.get_output_names()
        if teacher_output is not None and teacher_output not in outputs:
            raise TrainingError(f"the teacher has no output {teacher_output!r}; its outputs are {outputs}")
        self.teacher_output = teacher_output or outputs[0]
        self.teacher_batch = int(teacher_batch)
        trainer_options.setdefault("metrics", ["accuracy"])  # the Trainer adds it for a bare CE loss only
        self.trainer = Trainer(student, loss=self.loss, optimizer=optimizer or Adam(lr=1e-3), **trainer_options)
        self._cache: dict[tuple, np.ndarray] = {}

    def teacher_logits(self, x: np.ndarray) -> np.ndarray:
        """The teacher's outputs on ``x``, computed once per distinct ``x`` (by content)."""
        x = np.asarray(x)
        key = _fingerprint(x)
        if key not in self._cache:
            name = self.teacher.get_input_names()[0]
            dtype = self.trainer.input_dtype
            parts = [self.teacher.run({name: np.ascontiguousarray(x[s:s + self.teacher_batch], dtype=dtype)})
                     [self.teacher_output] for s in range(0, len(x), self.teacher_batch)]
            logits = np.concatenate(parts).astype(np.float32, copy=False)
            self._check_shape(logits, x)
            self._cache[key] = logits
        return self._cache[key]

    def _check_shape(self, logits: np.ndarray, x: np.ndarray) -> None:
        student = self.trainer.predict(x[:1])
        if logits.shape[1:] != student.shape[1:]:
            raise TrainingError(f"teacher output {self.teacher_output!r} has shape {list(logits.shape)} but the "
                                f"student's output has shape {['N', *student.shape[1:]]}: they must match to distill")

    def _extra(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return {TEACHER_INPUT: self.teacher_logits(x)}

    def fit(self, x: np.ndarray, y: np.ndarray, epochs: int = 1, batch_size: int = 32,
            validation: Sequence[np.ndarray] | None = None, **fit_options: Any) -> dict[str, list[float]]:
        """Train the student (see :meth:`Trainer.fit`); returns the history. ``validation``: ``(x, y)``."""
        if fit_options.get("transform") is not None:
            raise TrainingError("Distiller caches the teacher's logits per sample, so it cannot follow a random "
                                "transform: augment the data set beforehand instead")
        val = None
        if validation is not None:
            xv, yv = validation[0], validation[1]
            val = (xv, yv, self._extra(xv))
        return self.trainer.fit(x, y, epochs, batch_size, val, extra=self._extra(x), **fit_options)

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> dict[str, float]:
        """Distillation loss and accuracy of the student on ``(x, y)``."""
        return self.trainer.evaluate(x, y, batch_size, extra=self._extra(x))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The student's outputs."""
        return self.trainer.predict(x)

    @property
    def student(self) -> Model:
        """A copy of the student with its current weights (a plain inference model)."""
        return copy.deepcopy(self.trainer.forward)


def distill(teacher: Teacher, student: Model, x: np.ndarray, y: np.ndarray, temperature: float = 4.0,
            alpha: float = 0.5, epochs: int = 10, batch_size: int = 32, optimizer: Any = None,
            validation: Sequence[np.ndarray] | None = None,
            **trainer_options: Any) -> tuple[Model, dict[str, list[float]]]:
    """Distil ``teacher`` into ``student`` on ``(x, y)``; returns (trained student, history). The
    student is returned because the Trainer trains a copy (``student`` itself is left unchanged)."""
    d = Distiller(teacher, student, temperature, alpha, optimizer, **trainer_options)
    history = d.fit(x, y, epochs, batch_size, validation)
    return d.student, history
