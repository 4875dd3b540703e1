"""The Trainer: fit / evaluate / predict / export / checkpoint around one training-step graph.

Everything that decides the next step is state saved by :meth:`Trainer.save_checkpoint`: the
live parameters and optimizer buffers, the step and epoch counters, the loader's order,
position and generator, the schedule, the running sums of the epoch in progress, early
stopping and the best weights. A run resumed from any checkpoint therefore replays exactly
the steps an uninterrupted run would have taken.

Two public hooks serve code that drives the step itself (a streaming or continual learner, a
user's own loop): :meth:`Trainer.train_on_batch` takes one optimizer step on one batch, and
:meth:`Trainer.register_checkpoint_state` lets a component keep its own state (a replay
buffer, a frozen teacher, a position in a stream) in the same atomically written checkpoint
file as the weights, so a crash can never leave two files out of step.
"""
from __future__ import annotations

import copy
import os
from fnmatch import fnmatchcase
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from inference.errors import InputError
from inference.ir import Model, TensorType
from inference.onnx_export import save_model
from inference.session import Session
from training.checkpoint import load_checkpoint_file, save_checkpoint_file
from training.data import ArrayDataset, DataLoader, Transform
from training.errors import CheckpointError, TrainingError
from training.frozen_prefix import FrozenSplit, split_frozen_prefix
from training.graph import TrainingGraph, build_training_graph
from training.losses import CrossEntropyLoss, bind_parameters
from training.optim import FusedOptimizer
from training.protocols import Loss
from training.schedules import Schedule

__all__ = ["Trainer", "Callback", "accuracy", "StateGetter", "StateSetter", "StateCheck"]

Metric = Callable[[np.ndarray, np.ndarray], float]
#: ``() -> (arrays, meta)``: a component's checkpoint state, name -> ndarray and JSON-able values
StateGetter = Callable[[], tuple[Mapping[str, np.ndarray], Any]]
#: ``(arrays, meta) -> None``: restore what the getter returned
StateSetter = Callable[[Mapping[str, np.ndarray], Any], None]
#: ``(arrays, meta) -> None``: raise CheckpointError if the saved state cannot be restored here
StateCheck = Callable[[Mapping[str, np.ndarray], Any], None]
_CKPT_VERSION = 1
_STATE_PREFIX = "state::"  # arrays of registered states: state::<name>::<key>


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Top-1 accuracy of class scores (N, C); a single logit column is thresholded at 0."""
    scores = y_pred.reshape(len(y_pred), -1)
    pred = scores.argmax(1) if scores.shape[1] > 1 else (scores[:, 0] > 0).astype(np.int64)
    return float(np.mean(pred == np.asarray(y_true).reshape(len(pred))))


_METRICS: dict[str, Metric] = {"accuracy": accuracy}


class Callback:
    """Hooks called by :meth:`Trainer.fit`; set ``trainer.stop_training`` to end the fit (after the
    current step; a fit stopped mid-epoch can be checkpointed and resumed exactly)."""

    def on_step_end(self, trainer: "Trainer", step: int, loss: float) -> None:
        """After every optimizer step (``step`` counts steps since the start of training)."""

    def on_epoch_end(self, trainer: "Trainer", epoch: int, logs: dict[str, float]) -> None:
        """After every epoch, with that epoch's logs (loss, metrics, validation, lr)."""


class Trainer:
    """Trains ``model`` (an IR model, from ONNX or ``training.nn``) in place on the device.

    ``trainable``: glob patterns or names of the parameters to train (default: all). Metrics are
    names (``"accuracy"``) or functions ``(y_true, y_pred) -> float``, averaged over batches
    weighted by their size; default: accuracy for a cross-entropy loss. ``num_threads`` caps BLAS
    and numba together (small models train fastest on one thread). ``cache_frozen``: when only the
    last layers train, run the frozen layers once per fit instead of every step
    (:mod:`training.frozen_prefix`; per batch instead when a random transform changes the inputs).
    """

    def __init__(self, model: Model, loss: Loss, optimizer: FusedOptimizer, trainable: Sequence[str] | str | None = None,
                 *, schedule: Schedule | None = None, metrics: Sequence[str | Metric] | None = None,
                 prediction: str | None = None, seed: int = 0, num_threads: int | None = None,
                 cache_frozen: bool = True):
        if num_threads is not None:
            from inference.threads import set_num_threads

            set_num_threads(num_threads)
        feeds = model.graph.feed_inputs()
        if not feeds:
            raise TrainingError("the model has no input to feed")
        self.loss, self.optimizer, self.schedule, self.seed = loss, optimizer, schedule, seed
        self.input_name = feeds[0].name
        self.input_dtype = feeds[0].type.dtype if isinstance(feeds[0].type, TensorType) else np.dtype(np.float32)
        names = _trainable_names(model, trainable)
        bind_parameters(loss, names)
        self.split: FrozenSplit | None = split_frozen_prefix(model, names) if cache_frozen and names else None
        step_model = self.split.head if self.split else model
        self.graph: TrainingGraph = build_training_graph(step_model, loss, trainable, optimizer, prediction, seed=seed)
        self.forward: Model = _live_view(model, self.graph) if self.split else self.graph.forward
        # the model being trained, with the live weights; the caller's model is not kept (it is
        # never modified, and holding it would keep a stale second copy of every weight alive)
        self.model: Model = self.forward
        self._sessions: dict[str, Session] = {}
        if metrics is None:
            metrics = ["accuracy"] if isinstance(loss, CrossEntropyLoss) else []
        self.metrics = {(m if isinstance(m, str) else m.__name__): _metric(m) for m in metrics}
        self.step = 0                    # optimizer steps taken
        self.epoch = 0                   # epochs completed
        self.history: dict[str, list[float]] = {}
        self.stop_training = False
        self.loader: DataLoader | None = None
        self._fit_start = 0              # epoch at which the current fit began
        self._sums: dict[str, float] = {}  # running sums of the epoch in progress
        self._best: dict[str, Any] = {"value": None, "epoch": -1, "wait": 0}
        self._best_weights: dict[str, np.ndarray] | None = None
        self._resume: dict[str, Any] | None = None
        self._states: dict[str, tuple[StateGetter, StateSetter, StateCheck | None]] = {}

    # -- feeding --------------------------------------------------------------------------------
    def target_array(self, y: np.ndarray) -> np.ndarray:
        """Labels as the loss's ``target`` input takes them (its dtype and rank)."""
        t = self.graph.model.graph.type_of(self.graph.target)
        y = np.asarray(y)
        if not isinstance(t, TensorType):
            return y
        if t.shape is not None and y.ndim != len(t.shape):
            y = y.reshape((len(y),) + tuple(d if isinstance(d, int) else -1 for d in t.shape[1:]))
        return y.astype(t.dtype, copy=False)

    def _session(self, which: str) -> Session:
        if which not in self._sessions:
            self._sessions[which] = Session(self.split.prefix if which == "prefix" else self.forward)
        return self._sessions[which]

    def _inputs(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """The step graph's inputs for a batch of model inputs (through the frozen prefix if split)."""
        x = np.ascontiguousarray(x, dtype=self.input_dtype)
        if self.split is None:
            return {self.input_name: x}
        return dict(zip(self.split.frontier, self._session("prefix").run({self.input_name: x})))

    def _feeds(self, inputs: dict[str, np.ndarray], y: np.ndarray, extra: Sequence[np.ndarray],
               names: Sequence[str]) -> dict:
        return {**inputs, **dict(zip(names, extra)), self.graph.target: self.target_array(y)}

    def _cached_inputs(self, x: np.ndarray) -> list[np.ndarray] | None:
        """The frontier values of all of ``x`` when they are no bigger than twice ``x``, else None."""
        types = [self.split.head.graph.type_of(f) for f in self.split.frontier]
        if not all(isinstance(t, TensorType) and all(isinstance(d, int) for d in t.shape[1:]) for t in types):
            return None
        size = sum(len(x) * int(np.prod(t.shape[1:])) * t.dtype.itemsize for t in types)
        if size > 2 * max(x.nbytes, 1):
            return None
        return self.split.features({self.input_name: np.ascontiguousarray(x, dtype=self.input_dtype)})

    def _lr(self) -> float:
        base = self.optimizer.lr
        if self.schedule is None:
            return base
        return float(self.schedule(base, self.epoch if self.schedule.by_epoch else self.step))

    # -- fit --------------------------------------------------------------------------------------
    def fit(self, x: np.ndarray, y: np.ndarray, epochs: int = 1, batch_size: int = 32,
            validation: tuple[np.ndarray, ...] | None = None, *, callbacks: Sequence[Callback] = (),
            shuffle: bool = True, drop_last: bool = False, transform: Transform | None = None,
            extra: Mapping[str, np.ndarray] | None = None, monitor: str | None = None, patience: int | None = None,
            restore_best: bool = False, progress: bool = False, checkpoint: str | os.PathLike | None = None,
            checkpoint_every: int = 0) -> dict[str, list[float]]:
        """Train ``epochs`` epochs (counted from this call's start, or from the start of the fit a
        loaded checkpoint interrupted); returns the history (one value per epoch per key).

        ``validation``: ``(x, y)`` or ``(x, y, extra)`` evaluated after each epoch; ``extra`` maps
        further graph inputs (e.g. a distillation loss's teacher logits) to arrays aligned with x.
        ``monitor`` (default ``val_loss``, else ``loss``) drives early stopping after ``patience``
        epochs without improvement, best-weights keeping (``restore_best``) and plateau schedules.
        ``checkpoint``: a path saved every ``checkpoint_every`` steps and at each epoch end.
        """
        extra = dict(extra or {})
        x = np.asarray(x)
        cached = self._cached_inputs(x) if self.split is not None and transform is None else None
        leading = cached if cached is not None else [x]
        dataset = ArrayDataset(*leading, np.asarray(y), *extra.values())
        self._batch_layout = (len(leading), cached is not None, list(extra))
        monitor = monitor or ("val_loss" if validation is not None else "loss")
        resume, self._resume = self._resume, None
        self._fit_start = resume["fit_start"] if resume else self.epoch
        target = self._fit_start + epochs
        self.loader = DataLoader(dataset, batch_size, shuffle, drop_last, seed=(self.seed, self._fit_start), transform=transform)
        if resume and resume["loader"] is not None:
            self._restore_loader(resume["loader"], len(dataset))
        self.stop_training = False
        bar = _progress(progress)
        while self.epoch < target and not self.stop_training:
            if not self._sums:
                self._sums = {"n": 0.0, "loss": 0.0, **{k: 0.0 for k in self.metrics}}
            with bar(total=len(self.loader), initial=self.loader.cursor % max(len(self.loader), 1),
                     desc=f"epoch {self.epoch + 1}/{target}") as pbar:
                for batch in self.loader:
                    self._train_step(batch, callbacks)
                    pbar.update(1)
                    pbar.set_postfix(loss=f"{self._sums['loss'] / self._sums['n']:.4f}")
                    if checkpoint and checkpoint_every and self.step % checkpoint_every == 0:
                        self.save_checkpoint(checkpoint)
                    if self.stop_training:
                        break
            if self.loader.order is not None:  # stopped mid-epoch: the epoch stays open for a resume
                break
            self._end_epoch(validation, batch_size, monitor, patience, restore_best, callbacks)
            if checkpoint:
                self.save_checkpoint(checkpoint)
        if restore_best and self._best_weights is not None:
            self.graph.load_buffers(self._best_weights)
        return self.history

    def train_on_batch(self, x: np.ndarray, y: np.ndarray, extra: Mapping[str, np.ndarray] | None = None, *,
                       lr: float | None = None, callbacks: Sequence[Callback] = ()) -> float:
        """One optimizer step on one batch; returns its loss.

        For loops :meth:`fit` does not cover (a stream of samples, a continual learner, a user's
        own schedule of batches). ``x`` goes through the frozen prefix when the trainer has one;
        ``extra`` feeds further graph inputs by name (a loss's mask or teacher logits); ``lr``
        overrides the rate the optimizer and schedule would give (a schedule still advances by
        :attr:`step`). The step counter advances and ``callbacks`` get ``on_step_end``, as in
        :meth:`fit`; epoch sums and metrics are left alone (they belong to :meth:`fit`'s epochs).
        The prediction of the batch is in ``trainer.graph.last_outputs[trainer.graph.prediction]``.
        """
        x, y = np.asarray(x), np.asarray(y)
        if len(x) != len(y):
            raise InputError(f"train_on_batch: {len(x)} inputs but {len(y)} labels for input {self.input_name!r}")
        extra = dict(extra or {})
        return self._step(self._inputs(x), y, list(extra.values()), list(extra), lr, callbacks)

    def _step(self, inputs: dict[str, np.ndarray], y: np.ndarray, extra: Sequence[np.ndarray], names: Sequence[str],
              lr: float | None, callbacks: Sequence[Callback]) -> float:
        """The step shared by :meth:`fit` and :meth:`train_on_batch`."""
        loss = self.graph.step(self._feeds(inputs, y, extra, names), lr=self._lr() if lr is None else lr)
        self.step += 1
        for cb in callbacks:
            cb.on_step_end(self, self.step, loss)
        return loss

    def _train_step(self, batch: tuple[np.ndarray, ...], callbacks: Sequence[Callback]) -> None:
        k, cached, extra_names = self._batch_layout
        lead, yb, eb = batch[:k], batch[k], batch[k + 1:]
        inputs = dict(zip(self.split.frontier, lead)) if cached else self._inputs(lead[0])
        loss = self._step(inputs, yb, eb, extra_names, None, ())
        n = len(yb)
        s = self._sums
        s["n"] += n
        s["loss"] += loss * n
        if self.metrics:
            pred = self.graph.last_outputs[self.graph.prediction]
            for k, fn in self.metrics.items():
                s[k] += fn(yb, pred) * n
        for cb in callbacks:  # after the sums, so a callback sees the epoch so far including this step
            cb.on_step_end(self, self.step, loss)

    def _end_epoch(self, validation, batch_size, monitor, patience, restore_best, callbacks) -> None:
        s, self._sums = self._sums, {}
        logs = {k: v / s["n"] for k, v in s.items() if k != "n"}
        logs["lr"] = self._lr()  # the rate of the epoch's last step
        self.epoch += 1
        if validation is not None:
            xv, yv, *ev = validation
            scores = self.evaluate(xv, yv, batch_size=max(batch_size, 256), extra=ev[0] if ev else None)
            logs.update({f"val_{k}": v for k, v in scores.items()})
        for k, v in logs.items():
            self.history.setdefault(k, []).append(float(v))
        if monitor not in logs:
            raise TrainingError(f"monitor {monitor!r} is not among the logs {sorted(logs)}")
        value = logs[monitor]
        if self.schedule is not None:
            self.schedule.observe(value)
        self._track_best(value, monitor, patience, restore_best)
        for cb in callbacks:
            cb.on_epoch_end(self, self.epoch, logs)

    def _track_best(self, value: float, monitor: str, patience: int | None, restore_best: bool) -> None:
        best = self._best
        higher = "acc" in monitor
        if best["value"] is None or (value > best["value"] if higher else value < best["value"]):
            best.update(value=float(value), epoch=self.epoch, wait=0)
            if restore_best:
                self._best_weights = {k: v.copy() for k, v in self._model_arrays().items()}
        else:
            best["wait"] += 1
            if patience is not None and best["wait"] >= patience:
                self.stop_training = True

    def _model_arrays(self) -> dict[str, np.ndarray]:
        """Parameters and the forward graph's own state (BatchNorm statistics), not optimizer buffers."""
        fwd = self.forward.graph.initializers
        return {n: a for n, a in self.graph.buffers().items() if n in fwd}

    # -- inference ------------------------------------------------------------------------------
    def evaluate(self, x: np.ndarray, y: np.ndarray, batch_size: int = 256,
                 extra: Mapping[str, np.ndarray] | None = None) -> dict[str, float]:
        """Loss and metrics in inference mode, averaged over samples."""
        extra = dict(extra or {})
        sums, n = {"loss": 0.0, **{k: 0.0 for k in self.metrics}}, 0
        for s in range(0, len(x), batch_size):
            xb, yb = x[s:s + batch_size], y[s:s + batch_size]
            eb = [v[s:s + batch_size] for v in extra.values()]
            loss, pred = self.graph.evaluate(self._feeds(self._inputs(xb), yb, eb, list(extra)))
            sums["loss"] += loss * len(xb)
            for k, fn in self.metrics.items():
                sums[k] += fn(yb, pred) * len(xb)
            n += len(xb)
        return {k: v / max(n, 1) for k, v in sums.items()}

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """The model's first output in inference mode."""
        session = self._session("forward")
        outs = [session.run({self.input_name: np.ascontiguousarray(x[s:s + batch_size], dtype=self.input_dtype)})[0]
                for s in range(0, len(x), batch_size)]
        return np.concatenate(outs) if outs else np.empty((0,), np.float32)

    def export(self, path: str | os.PathLike) -> Model:
        """Write the plain inference ONNX model with the trained weights; returns it as IR."""
        model = copy.deepcopy(self.forward)
        save_model(model, path)
        return model

    # -- checkpoints ----------------------------------------------------------------------------
    def register_checkpoint_state(self, name: str, get_state: StateGetter, set_state: StateSetter,
                                  check: StateCheck | None = None) -> None:
        """Keep a component's state in this trainer's checkpoints (the extension point).

        ``get_state()`` returns ``(arrays, meta)``: a mapping of names to ndarrays and a JSON-able
        value; :meth:`save_checkpoint` writes them into the same atomic file as the weights.
        :meth:`load_checkpoint` first verifies the whole file - that it holds exactly the
        registered states, then ``check(arrays, meta)`` of each (raise
        :class:`~training.errors.CheckpointError` for a state this component cannot take), then
        the weights - and only then restores the weights and calls ``set_state(arrays, meta)`` in
        registration order, so a mismatched file changes nothing. Names are unique and hold no ``::``.
        """
        if not name or "::" in name:
            raise TrainingError(f"checkpoint state name {name!r} must be non-empty and hold no '::'")
        if name in self._states:
            raise TrainingError(f"checkpoint state {name!r} is already registered")
        self._states[name] = (get_state, set_state, check)

    def save_checkpoint(self, path: str | os.PathLike) -> None:
        """Everything needed to continue exactly from here (and every registered state), in one
        atomically written file."""
        arrays = dict(self.graph.buffers())
        if self._best_weights is not None:
            arrays.update({f"best::{k}": v for k, v in self._best_weights.items()})
        states = {}
        for name, (get_state, _, _) in self._states.items():
            state_arrays, states[name] = get_state()
            arrays.update({f"{_STATE_PREFIX}{name}::{k}": v for k, v in state_arrays.items()})
        meta = {"version": _CKPT_VERSION, "step": self.step, "epoch": self.epoch, "fit_start": self._fit_start,
                "history": self.history, "sums": self._sums, "best": self._best,
                "loader": None if self.loader is None else self.loader.state_dict(),
                "schedule": None if self.schedule is None else self.schedule.state_dict(),
                "params": self.graph.params, "states": states}
        save_checkpoint_file(path, arrays, meta)

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Restore a checkpoint of this model's training (and the registered states); the next
        :meth:`fit` continues from it. Nothing changes when the file does not match."""
        arrays, meta = load_checkpoint_file(path)
        where = f"checkpoint {os.fspath(path)!r}"
        if meta.get("version") != _CKPT_VERSION:
            raise CheckpointError(f"{where} has version {meta.get('version')}, expected {_CKPT_VERSION}")
        saved_states = dict(meta.get("states") or {})
        if sorted(saved_states) != sorted(self._states):
            raise CheckpointError(f"{where} holds the states {sorted(saved_states)} but this trainer registered "
                                  f"{sorted(self._states)} (saved by a differently built learner?)")
        state_arrays: dict[str, dict[str, np.ndarray]] = {n: {} for n in self._states}
        best, state = {}, {}
        for k, v in arrays.items():
            if k.startswith(_STATE_PREFIX):
                name, key = k[len(_STATE_PREFIX):].split("::", 1)
                if name not in state_arrays:
                    raise CheckpointError(f"{where} holds arrays of an unlisted state {name!r}")
                state_arrays[name][key] = v
            elif k.startswith("best::"):
                best[k[len("best::"):]] = v
            else:
                state[k] = v
        for name, (_, _, check) in self._states.items():
            if check is not None:
                check(state_arrays[name], saved_states[name])
        live = self.graph.buffers()
        missing, unknown = sorted(set(live) - set(state)), sorted(set(state) - set(live))
        if missing or unknown:
            raise CheckpointError(f"{where} does not match this training setup: missing {missing[:5]}, unknown "
                                  f"{unknown[:5]} (same model, trainable parameters and optimizer?)")
        bad = [k for k, v in state.items() if v.shape != live[k].shape or v.dtype != live[k].dtype]
        if bad:
            raise CheckpointError(f"{where}: shape or dtype differs for {bad[:5]}")
        self.graph.load_buffers(state)
        self.step, self.epoch, self._fit_start = int(meta["step"]), int(meta["epoch"]), int(meta["fit_start"])
        self.history = {k: list(v) for k, v in meta["history"].items()}
        self._sums, self._best = dict(meta["sums"]), dict(meta["best"])
        self._best_weights = best or None
        if self.schedule is not None and meta["schedule"] is not None:
            self.schedule.load_state_dict(meta["schedule"])
        self._resume = {"fit_start": self._fit_start, "loader": meta["loader"]}
        for name, (_, set_state, _) in self._states.items():
            set_state(state_arrays[name], saved_states[name])

    def _restore_loader(self, state: dict[str, Any], n: int) -> None:
        if state["order"] is not None and len(state["order"]) != n:
            raise CheckpointError(f"the checkpoint's data order covers {len(state['order'])} samples, "
                                  f"but fit got {n}: resume with the same training data")
        self.loader.load_state_dict(state)


def _live_view(model: Model, graph: TrainingGraph) -> Model:
    """A copy of the whole model whose trained arrays are the step graph's live ones and whose
    frozen arrays are the model's own (the frozen prefix reads those already: never copied)."""
    live = graph.forward.graph.initializers
    memo = {id(a): live.get(n, a) for n, a in model.graph.initializers.items()}
    return copy.deepcopy(model, memo)


def _trainable_names(model: Model, trainable: Sequence[str] | str | None) -> list[str]:
    """Float parameters selected by ``trainable`` (BatchNorm running statistics are state), for regularizers."""
    g = model.graph
    stats = {n.inputs[k] for n in g.nodes if n.op_type == "BatchNormalization" for k in (3, 4) if len(n.inputs) > k}
    names = [n for n, a in g.initializers.items() if a.dtype.kind == "f" and a.ndim > 0 and n not in stats]
    if trainable is None:
        return names
    pats = [trainable] if isinstance(trainable, str) else list(trainable)
    return [n for n in names if any(fnmatchcase(n, p) for p in pats)]


def _metric(m: str | Metric) -> Metric:
    if callable(m):
        return m
    if m not in _METRICS:
        raise InputError(f"unknown metric {m!r}; known: {sorted(_METRICS)}, or pass a function")
    return _METRICS[m]


def _progress(enabled: bool) -> Callable[..., Any]:
    """tqdm when asked for and installed, else a silent stand-in with the same few methods."""
    if enabled:
        try:
            from tqdm.auto import tqdm

            return lambda **kw: tqdm(leave=False, **kw)
        except ImportError:
            pass
    return _NoBar


class _NoBar:
    def __init__(self, **_: Any):
        pass

    def __enter__(self) -> "_NoBar":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **_: Any) -> None:
        pass
