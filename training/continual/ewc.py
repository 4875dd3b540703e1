"""Elastic weight consolidation (plain and online) with the penalty emitted as IR into the step.

The Fisher and the anchor are state buffers of the step graph, so the backward pass, the fused
optimizer and the checkpoint handle them like any other buffer. Several tasks' penalties
``sum_t F_t (w - w_t)^2`` equal ``F (w - m)^2 + const`` with ``F = sum_t F_t`` and
``m = sum_t F_t w_t / F``, so plain EWC also needs only one Fisher and one anchor (exact
gradients, memory independent of the number of tasks).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from inference.ir import TensorType
from training.continual.strategy import ContinualError, Strategy
from training.graph import build_training_graph
from training.losses import _Regularizer
from training.protocols import TRAIN_DOMAIN, StepBuilder

if TYPE_CHECKING:
    from training.continual.learner import ContinualLearner

__all__ = ["EWC"]


class _EWCPenalty(_Regularizer):
    """``coeff * sum F (w - anchor)^2`` with F and anchor as state buffers of the step graph, one
    fused ``EWCPenalty`` op per parameter (:mod:`training.kernels.penalties`)."""

    def _penalty(self, b: StepBuilder, p: str) -> str:
        t = b.type_of(p)
        if not (isinstance(t, TensorType) and t.is_static()):
            raise ContinualError(f"EWC needs the static shape of parameter {p!r}, got {t}")
        fisher = b.state(f"ewc.fisher::{p}", np.zeros(t.shape, t.dtype))
        anchor = b.state(f"ewc.anchor::{p}", np.zeros(t.shape, t.dtype))
        return b.op("EWCPenalty", p, fisher, anchor, domain=TRAIN_DOMAIN)  # fused: no parameter-sized temporaries


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
        # the label loss and its gradients (no optimizer), dropped on return. Without an optimizer
        # the graph never writes its parameters, so it reads the live ones instead of the copy the
        # builder made (freed here): a device holds no second copy of the weights, even meanwhile
        g = build_training_graph(tr.forward, learner.label_loss, self.penalty.names, None)
        live = tr.forward.graph.initializers
        for view in (g.model, g.forward):
            view.graph.initializers.update({p: live[p] for p in g.params})
        rng = np.random.default_rng([learner.seed, learner.task, 7])
        idx = rng.permutation(len(x))[:self.fisher_samples]
        out = {p: np.zeros_like(a) for p, a in g.parameters().items()}
        for i in idx:
            feeds = {tr.input_name: np.ascontiguousarray(learner.prepare(x[i:i + 1]), tr.input_dtype),
                     g.target: tr.target_array(y[i:i + 1]), **learner.label_feeds(y[i:i + 1])}
            g.step(feeds, lr=0.0)
            for p, acc in out.items():
                acc += np.square(g.last_outputs[g.grads[p]])
        for acc in out.values():  # in place: no second set of Fisher-sized arrays at the peak
            acc /= max(len(idx), 1)
        return out

    def memory_bytes(self, learner):
        fisher, anchor = self._buffers(learner)
        return {"ewc": sum(a.nbytes for a in (*fisher.values(), *anchor.values()))}

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
                total = fisher[p]
                total += f_new                     # in place: the Fisher buffer becomes F_old + F_new
                share = f_new                      # f_new is not needed after this: it becomes the share
                np.divide(f_new, total, out=share, where=total > 0)
                share[total <= 0] = 1.0
                step = w - anchor[p]               # the only parameter-sized temporary
                step *= share
                anchor[p] += step

