"""The Predictor API: load once, bind inputs through tensor handles or a dict, run, read outputs."""
from __future__ import annotations

import copy
import functools
import threading
import weakref
from collections import OrderedDict
from typing import Any, Mapping

import numpy as np

from inference.batch_split import SplitCheck, check_batch_split
from inference.chunked import auto_chunk_rows, batch_rows, run_in_chunks
from inference.config import Config
from inference.errors import InputError
from inference.ir import Model, TensorType
from inference.kernels._jit import serial_kernels
from inference.onnx_import import load_model
from inference.ops._memo import remember
from inference.session import CONSTANT_WEIGHT_KINDS, REPLAY_KINDS, Session, check_feed
from inference.specialize import share_equal_weights, sizes_of, symbolic_image_inputs, with_sizes
from inference.split_runner import SplitRunner, auto_min_rows


def _NO_SESSION() -> None:
    """A weak reference to no session: what the last settled one starts as."""
    return None


class Tensor:
    """A named input or output slot of a Predictor."""

    def __init__(self, name: str, declared: TensorType | None, owner: "Predictor", is_input: bool):
        self.name = name
        self._declared = declared
        self._owner = owner
        self._is_input = is_input

    @property
    def dtype(self) -> np.dtype | None:
        value = self._current()
        if isinstance(value, np.ndarray):
            return value.dtype
        return self._declared.dtype if isinstance(self._declared, TensorType) else None

    @property
    def shape(self) -> tuple:
        """The bound array's shape once there is one, else the declared shape (str = symbolic dim)."""
        value = self._current()
        if isinstance(value, np.ndarray):
            return tuple(value.shape)
        if isinstance(self._declared, TensorType) and self._declared.shape is not None:
            return tuple(self._declared.shape)
        return ()

    def _current(self) -> Any:
        store = self._owner._feeds if self._is_input else self._owner._outputs
        return store.get(self.name)

    def copy_from(self, array: Any) -> None:
        """Bind a copy of ``array`` to this input; dtype and shape are checked against the model."""
        if not self._is_input:
            raise InputError(f"{self.name!r} is an output; copy_from applies to inputs only")
        declared = self._declared if isinstance(self._declared, TensorType) else None
        arr = check_feed(self.name, array, declared, {})
        self._owner._feeds[self.name] = np.array(arr, copy=True)

    def copy_to(self) -> np.ndarray:
        """A copy of this output's value from the last run."""
        if self._is_input:
            value = self._owner._feeds.get(self.name)
        else:
            value = self._owner._outputs.get(self.name)
        if value is None:
            raise InputError(f"tensor {self.name!r} holds no value yet: call run() first")
        return np.array(value, copy=True) if isinstance(value, np.ndarray) else value

    def __repr__(self) -> str:
        return f"Tensor(name={self.name!r}, shape={self.shape}, dtype={self.dtype})"


class Predictor:
    """Loads a model per ``config`` and runs it on the CPU."""

    def __init__(self, config: Config | str | bytes):
        if not isinstance(config, Config):
            config = Config(model_path=config)
        config.validate()
        self.config = config
        self.model: Model = load_model(config.model_path)
        self.applied_passes: list[str] = []
        self.model, self.preoptimized = self._in_precision(self.model, config)
        self._image_inputs: list[str] = []  # inputs whose sizes pick a specialised graph (inference.specialize)
        self._generic: Model | None = None  # the model before the passes, to specialise
        self._variants: OrderedDict[tuple, tuple] = OrderedDict()  # sizes -> (model, session, plan, passes)
        self._sizes: tuple | None = None  # the sizes the current graph is specialised to
        self._specialising = threading.Lock()
        self._settled: weakref.WeakSet[Session] = weakref.WeakSet()  # sessions whose weights were released
        self._last_settled: weakref.ref = _NO_SESSION
        self._releasing = threading.Lock()
        self._serial_rows = 0  # batches up to this many rows run serial kernels (inference.thread_policy)
        if config.optimize_graph and (self.preoptimized is None or config.reoptimize):
            from inference.passes import optimize

            if config.specialize_sizes:
                self._image_inputs = symbolic_image_inputs(self.model)
                if self._image_inputs:
                    self._generic = with_sizes(self.model, [], ())
            self.applied_passes = optimize(self.model, fusion=config.fusion, switches=config.passes)
        elif self.preoptimized is not None:  # loaded as saved, but a pass switched off still holds
            from inference.passes import undo_switched_off

            self.applied_passes = undo_switched_off(self.model, config.passes)
        if config.cpu_affinity is not None:
            from inference.threads import pin_to_cores

            pin_to_cores(config.cpu_affinity)
        if config.num_threads is not None:
            from inference.thread_policy import prefers_numba_pool
            from inference.threads import set_num_threads

            numba_pool = prefers_numba_pool(self.model.graph)
            set_num_threads(config.num_threads, numba_pool=numba_pool)
            if numba_pool and config.num_threads > 1:
                from inference.thread_policy import serial_rows

                self._serial_rows = serial_rows(self.model.graph)
        self.session = self._new_session(self.model)
        self.batch_split, self.chunk_rows, self.splitter = self._batch_plan(config, self.model, self.session)
        g = self.model.graph
        self._bind_handles({v.name: v.type for v in g.feed_inputs()}, {v.name: v.type for v in g.outputs})
        self._output_names = tuple(self._output_handles)
        # per input: its declared type, or None for sequences/optionals (passed through unchecked)
        self._checks = {name: (t._declared if isinstance(t._declared, (TensorType, type(None))) else False)
                        for name, t in self._inputs.items()}
        self._passed: dict[tuple, bool] = {}  # feed (name, shape, dtype) tuples that passed the checks

    def _bind_handles(self, inputs: Mapping[str, Any], outputs: Mapping[str, Any]) -> None:
        """This Predictor's tensor handles (name -> declared type), no values bound to them yet."""
        self._inputs = {name: Tensor(name, t, self, True) for name, t in inputs.items()}
        self._output_handles = {name: Tensor(name, t, self, False) for name, t in outputs.items()}
        self._feeds: dict[str, Any] = {}
        self._outputs: dict[str, Any] = {}

    def replica(self) -> "Predictor":
        """Another Predictor of the same loaded model, for another thread: its own session (its
        kernels' per-shape memos) and tensor handles, sharing this one's graph, weights and their
        packings, and its specialised graphs. Why: a pool of replicas each loading the model held
        every weight once per replica, and loaded and optimized it once per replica too."""
        twin = copy.copy(self)
        twin.session = self._new_session(self.model)
        twin.batch_split, twin.chunk_rows, twin.splitter = self._batch_plan(self.config, self.model, twin.session)
        twin._bind_handles({n: t._declared for n, t in self._inputs.items()},
                           {n: t._declared for n, t in self._output_handles.items()})
        return twin

    def _new_session(self, model: Model) -> Session:
        replay = self.config.kernel_replay and self.config.memory_arena
        session = Session(model, kinds=REPLAY_KINDS if replay else CONSTANT_WEIGHT_KINDS,
                          free_intermediates=self.config.memory_optimization)
        if self.config.memory_arena:
            from inference.arena import arenas_for

            session.arenas = arenas_for(session)
            if replay and session.arenas is not None:
                from inference.kernel_replay import KernelReplays

                session.replays = KernelReplays(session)
        return session

    def _batch_plan(self, config: Config, model: Model, session: Session
                    ) -> tuple[SplitCheck | None, int, SplitRunner | None]:
        """Whether the batch may be cut (the verdict; None when nothing asks), the rows per
        sequential chunk (0: whole) and the thread-split runner, per Config, for ``model``."""
        split = config.batch_split and config.num_threads is not None and config.num_threads > 1
        if not split and config.chunk_rows == 0:
            return None, 0, None
        verdict = check_batch_split(model.graph, model.opset_imports.get("", 17))
        if not verdict.ok:
            return verdict, 0, None
        chunk_rows = config.chunk_rows
        if chunk_rows is None:
            from inference.memory_plan import plan_memory

            chunk_rows = auto_chunk_rows(plan_memory(session, batch=1).peak_bytes)
        if not split:
            return verdict, chunk_rows, None
        min_rows = config.min_rows_per_thread or auto_min_rows(model.graph)
        replica = functools.partial(self._new_session, model)
        return verdict, chunk_rows, SplitRunner(replica, config.num_threads, min_rows, chunk_rows)

    def _specialise(self, sizes: tuple) -> tuple[Session, int, SplitRunner | None]:
        """The session, chunk rows and splitter of the graph optimized for these image sizes: made
        on their first run, kept for the ``Config.specialize_sizes`` most recently used. It also
        becomes what ``model``, ``session`` ... show. The caller runs what this returns, so
        concurrent runs of other sizes never run each other's graph."""
        with self._specialising:
            variant = self._variants.pop(sizes, None)
            if variant is None:
                from inference.passes import optimize

                model = with_sizes(self._generic, self._image_inputs, sizes)
                applied = optimize(model, fusion=self.config.fusion, switches=self.config.passes)
                if share_equal_weights(model.graph, [v[0].graph for v in self._variants.values()]):
                    from inference.weight_release import return_free_memory

                    return_free_memory()  # the copies derived again, now dropped
                session = self._new_session(model)
                variant = (model, session, self._batch_plan(self.config, model, session), applied)
            self._variants[sizes] = variant
            while len(self._variants) > self.config.specialize_sizes:  # >= 1: else no _generic
                self._variants.popitem(last=False)
            if sizes != self._sizes:
                hook, self.session.profiler = self.session.profiler, None  # a trace follows the run
                self.model, self.session, plan, self.applied_passes = variant
                self.batch_split, self.chunk_rows, self.splitter = plan
                self.session.profiler = hook
                self._sizes = sizes
            session, (_, chunk_rows, splitter) = variant[1], variant[2]
        return session, chunk_rows, splitter

    @staticmethod
    def _in_precision(model: Model, config: Config) -> tuple[Model, list[str] | None]:
        """The model in ``config.precision``, and the passes it was saved after (None: not optimized).

        Converters rewrite standard Conv/MatMul/Gemm, so a model saved with our fused ops is first
        decomposed back to standard ONNX; then it needs the passes again. They read float32 weights:
        a half-precision model is widened first (``inference.passes.widen_float16``).
        """
        from inference.passes import recorded_passes

        recorded = recorded_passes(model)
        if config.precision == "fp32":
            return model, recorded
        from inference.passes.widen_float16 import widen_float16
        from inference.precision import convert

        if recorded is not None:
            from inference.decompose import decompose_to_standard

            model = decompose_to_standard(model)
        widen_float16(model)
        return convert(model, config.precision, config.calibration_data), None

    @property
    def arena_bytes(self) -> int:
        """What the activation arenas hold now (``Config.memory_arena``; block and workspace, this
        Predictor's session and its thread-split replicas): 0 before the first run or without one."""
        sessions = [self.session] + (self.splitter.sessions if self.splitter is not None else [])
        return sum(s.arenas.nbytes for s in sessions if s.arenas is not None)

    def replay_report(self) -> str:
        """How this Predictor's runs go per input shape: replayed or step by step, and why
        (``inference.kernel_replay``); "off" without replay (``Config.kernel_replay`` or no arena).
        A batch split over threads runs its parts on replica sessions: each one's report follows."""
        replays = self.session.replays
        if replays is None:
            return "off"
        from inference.kernel_replay import NO_RUNS

        own = replays.report()
        parts = [own] if own != NO_RUNS or self.splitter is None else []
        for i, replica in enumerate(self.splitter.sessions if self.splitter is not None else []):
            if replica.replays is not None and replica.replays.report() != NO_RUNS:
                parts.append(f"batch part {i} (thread {i}): {replica.replays.report()}")
        return "; ".join(parts) or NO_RUNS

    def memory_plan(self, batch: int = 1, feeds: Mapping[str, Any] | None = None):
        """The activation arena plan of this model: symbolic dims taken as ``batch``, or at the
        shapes a run on ``feeds`` makes (made here; what a graph with a symbolic sequence length
        or a size computed at run time needs: ``inference.arena.sized_by_run``)."""
        from inference.memory_plan import plan_memory

        if feeds is None:
            return plan_memory(self.session, batch=batch)
        checked = self._checked(feeds)
        session = self.session if self._generic is None else self._specialise(
            sizes_of(checked, self._image_inputs))[0]
        return plan_memory(session, seen=session.value_shapes(checked))

    def get_input_names(self) -> list[str]:
        return list(self._inputs)

    def get_output_names(self) -> list[str]:
        return list(self._output_handles)

    def get_input_tensor(self, name: str) -> Tensor:
        if name not in self._inputs:
            raise InputError(f"model has no input {name!r}; inputs are {self.get_input_names()}")
        return self._inputs[name]

    def get_output_tensor(self, name: str) -> Tensor:
        if name not in self._output_handles:
            raise InputError(f"model has no output {name!r}; outputs are {self.get_output_names()}")
        return self._output_handles[name]

    def run(self, feeds: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """Run on the bound inputs, or on ``feeds`` (returning a dict of name -> output)."""
        checked = self._checked(feeds if feeds is not None else self._feeds)
        session, chunk_rows, splitter = self.session, self.chunk_rows, self.splitter
        if self._generic is not None:
            session, chunk_rows, splitter = self._specialise(sizes_of(checked, self._image_inputs))
        split = splitter is not None and session.profiler is None  # a traced run stays whole
        values = splitter.run(checked) if split else None
        if values is None and 0 < batch_rows(checked) <= self._serial_rows:  # too small to thread its kernels
            with serial_kernels():
                values = run_in_chunks(session.run, checked, chunk_rows)
        elif values is None:
            values = run_in_chunks(session.run, checked, chunk_rows)
        if self.config.release_weights and session is not self._last_settled() and session not in self._settled:
            self._release_weights(session, checked)
        outputs = dict(zip(self._output_names, values))
        self._feeds, self._outputs = checked, outputs  # the handles show the latest run
        return dict(outputs) if feeds is not None else None  # this call's own, even under concurrency

    def _release_weights(self, session: Session, feeds: Mapping[str, Any]) -> None:
        """After ``session``'s first run with rows, its packed weights are held once (the packings
        exist only once a run made them; an empty batch may have skipped the kernels)."""
        if any(isinstance(v, np.ndarray) and v.size == 0 for v in feeds.values()):
            return
        from inference.weight_release import release_packed_weights, return_free_memory

        with self._releasing:
            if session not in self._settled:
                if release_packed_weights(session):
                    return_free_memory()
                self._settled.add(session)
            self._last_settled = weakref.ref(session)  # the next run's check: one identity test

    def _checked(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """The feeds checked against the declared inputs (run per call: kept to dict lookups).
        Arrays of names, shapes and dtypes that passed before pass again on one set lookup."""
        key = tuple((name, value.shape, value.dtype) for name, value in feeds.items() if type(value) is np.ndarray)
        if len(key) == len(feeds) and key in self._passed:
            return dict(feeds)
        out = self._check_all(feeds)
        if len(key) == len(feeds):
            remember(self._passed, key, True)
        return out

    def _check_all(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        checks = self._checks
        if len(feeds) != len(checks) or any(k not in checks for k in feeds):
            unknown = [k for k in feeds if k not in checks]
            if unknown:
                raise InputError(f"unknown inputs {unknown}; the model's inputs are {self.get_input_names()}")
            raise InputError(f"missing inputs {[n for n in checks if n not in feeds]}; the model needs {list(checks)}")
        bindings: dict[str, int] = {}
        out = {}
        for name, value in feeds.items():
            declared = checks[name]
            if declared is False or isinstance(value, (list, type(None))):
                out[name] = value  # sequences and optionals pass through
            else:
                out[name] = check_feed(name, value, declared, bindings)
        return out
