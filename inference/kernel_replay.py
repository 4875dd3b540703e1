"""Replay a session's compiled kernel calls for inputs of a shape it has run: a run without its Python.

A session step costs ~3-6 us of Python around its kernel (the step loop, the bound kernel's shape
checks, its arguments and scratch, numba's dispatch), nothing to ResNet-18 but most of a small
model's run: MLPerf Tiny's autoencoder spent 38 of its 55 us there, ResNet-8 75 of 226. Once the
arena (:mod:`inference.arena`) gives every intermediate, scratch buffer and packed weight a fixed
place for a given input shape, a run is the same list of numba calls on the same arrays each time:
this records that list once (like a CUDA graph's capture) and then makes only those calls.

A capture is only kept when it is shown to be the whole computation: a run is recorded on the
caller's inputs copied into buffers of the replay's own, then a run on random inputs of the same
shapes is made both ways, by replay first (every buffer then holds what the recorded run left)
and then normally, and the outputs must be bitwise equal. Work done
outside numba (a numpy copy into a padded buffer, a BLAS product, a value-dependent branch in
Python) is not replayed, so such a graph fails the check and runs normally from then on. One such
branch random inputs never take is known: a Winograd convolution falls back to the direct one when
its input holds an inf or a NaN (which Winograd would spread to the neighbours). A graph with one
is replayed only while its outputs (all float) come out finite; a replay with an inf or a NaN in
them runs again normally.

Integer and bool feeds (token ids, attention masks) cannot be probed with random values, which
could be out of range: their probe is the recorded values shuffled, so every value stays one the
model accepted. A feed of one value throughout (an all-ones mask, a length scalar, the single
token a decoder with a key/value cache is fed each step), which no shuffle changes, is probed with
another single value an earlier capture ran that feed on (the model accepted it). Where none was
seen yet the replay is pinned to the recorded value until another comes, which is captured anew
probed with the pinned one (a decoder's next token at this length) and replays whatever it holds
if that check passes. Where the model rejects the other value at this shape (an index past a
shorter axis), or the value changes what it computes (a length fed as a value: the replay's output
differs from the run's), the replay stays pinned, and another single value there runs step by step
(one that varies is captured anew). A replay that raises (a kernel's own check stopped a bad input: a token
id past the embedding table) runs again step by step, which names the error and keeps the replay;
if that run succeeds the record is broken and the signature runs step by step from then on.

A replay holds the session's arena for its run; a run that finds it busy (another thread's) runs
normally. When the arena is laid out anew (a larger batch grew it) the replays recorded on the old
block are dropped at the next run, to be captured again. Outputs are copies: the replay's own
buffers are rewritten by its next run.

Which replays a session keeps (:data:`KEPT_REPLAYS`) goes by use, not by age: a capture costs
about three runs and a replay saves a tenth to a half of one, so inputs of varying shape (a
transformer's sequence lengths) must not take turns evicting each other's replays before any is
used. Each signature counts its runs (a replay its replayed ones); once the session keeps its
maximum, a signature is captured only when it has run more often than the least-used replay,
which then goes back to counting. Every :data:`AGE_EVERY` runs all counts halve, so a workload
that moves on to other shapes takes the replays with it.
"""
from __future__ import annotations

import functools
import threading
import time
from collections import OrderedDict
from typing import Any, Mapping, Sequence

import numpy as np
from numba.core.registry import CPUDispatcher

from inference.kernels._jit import kernel_threads
from inference.kernels.nhwc import WINOGRAD
from inference.replay_bindings import Bindings, Patched, borrowable, restore
from inference.shape_values import feed_signature

#: runs of a signature made normally before it is captured (the first runs pack and release weights)
CAPTURE_AFTER = 2
#: replays a session keeps, the least used dropped: enough for a server's sequence lengths (a BERT
#: fed lengths drawn from 8-128 ran 1.7x onnxruntime a request keeping 4, 1.15x keeping 64; each held
#: ~70 KB); and at most KEPT_REPLAY_BYTES of the copies of feeds and outputs they hold
KEPT_REPLAYS = 64
KEPT_REPLAY_BYTES = 64 * 2**20
#: signatures a session counts or remembers as refused, the longest unseen forgotten (not replays)
KEPT_SIGNATURES = 4 * KEPT_REPLAYS
#: single values (of feeds of one value throughout) a session remembers per feed name to probe
#: another capture with: a few, the latest
KEPT_SINGLE_VALUES = 4
#: runs of a session after which every signature's count and replay's use halve
AGE_EVERY = 1024
#: a recorded run that took longer is not kept: its Python (~3-6 us a step) is a sliver of it, while
#: checking the record costs two more runs and keeping it a copy of the feeds and outputs (batch 32
#: of ResNet-18 takes ~0.5 s here; batch 1 of every model in the zoo under 0.02). Timed, not counted
#: from shapes: a sequence length left symbolic gives no count before the run
MAX_REPLAY_SECONDS = 0.1
_REFUSED = "refused"
#: the report of a session that has not run
NO_RUNS = "no runs yet"
#: what the report says of a refused signature
REFUSED_NOTE = "step by step (work outside numba, a run past MAX_REPLAY_SECONDS or a record past KEPT_REPLAY_BYTES)"

_recording = threading.local()
_install_lock = threading.Lock()
_installed = [0]  # recorders active in any thread
_dispatch = CPUDispatcher.__call__  # numba's own (C) call: what a replay makes
_OWN_CALL = "__call__" in vars(CPUDispatcher)  # else inherited: restored by deleting the hook


def _recording_call(self, *args, **kwargs):
    calls = getattr(_recording, "calls", None)
    if calls is not None:
        calls.append((self, args, kwargs))
    return _dispatch(self, *args, **kwargs)


class _Recorder:
    """Within the block, this thread's calls of numba dispatchers from Python are appended to
    ``calls``. The hook is installed on numba's dispatcher class while any thread records."""

    def __enter__(self) -> list:
        with _install_lock:
            if _installed[0] == 0:
                CPUDispatcher.__call__ = _recording_call
            _installed[0] += 1
        _recording.calls = []
        return _recording.calls

    def __exit__(self, *exc) -> None:
        _recording.calls = None
        with _install_lock:
            _installed[0] -= 1
            if _installed[0] == 0:
                if _OWN_CALL:
                    CPUDispatcher.__call__ = _dispatch
                else:
                    del CPUDispatcher.__call__  # the C slot inherited again, as before


class Replay:
    """One signature's recorded calls, the feed buffers they read and the output arrays they write."""

    def __init__(self, feeds: dict[str, np.ndarray], calls: list, outputs: list, block: Any, workspace: Any,
                 uses: int = 0):
        self.feeds, self.outputs = feeds, outputs
        #: feeds the probe could not vary: replayed only for these values (set by the capture's check)
        self.pinned: dict[str, np.ndarray] = {}
        #: pinned although another value was tried (the model rejected it, or it changed the
        #: computation): not captured again for another single value
        self.settled = False
        self.uses = uses  # the signature's runs, replayed or not (halved every AGE_EVERY runs of the session)
        self.calls = [(_compiled(d, args, kwargs), list(args), kwargs) for d, args, kwargs in calls]
        self.block, self.workspace = block, workspace
        #: what it holds of its own: the copies of the feeds and the outputs
        self.nbytes = sum(a.nbytes for a in list(feeds.values()) + outputs if isinstance(a, np.ndarray))
        # the caller's feeds read in place and outputs written into new arrays where the record's
        # arguments allow (``inference.replay_bindings``); the others copied
        self._bindings = Bindings(self.calls, {**{("feed", n): b for n, b in feeds.items()},
                                               **{("out", k): o for k, o in enumerate(outputs)}})
        self.borrowed_feeds = {n for n in feeds if self._bindings.reaches(("feed", n))}
        self._copied = {n for n in feeds if ("feed", n) in self._bindings.refused}  # no call reads the others
        self.fresh_outputs = [k for k in range(len(outputs)) if self._bindings.reaches(("out", k))]

    def holds(self, feeds: Mapping[str, Any]) -> bool:
        """Whether the record holds for ``feeds``: every pinned feed has its recorded value."""
        return all(np.array_equal(feeds[name], value) for name, value in self.pinned.items())

    def run(self, arenas: Any, feeds: Mapping[str, Any], fill: bool = False) -> list | None:
        """The outputs for ``feeds`` (the caller's own arrays; the caller checked :meth:`holds`), or
        None when the arena is busy. ``fill``: new outputs start as all-ones bytes (NaN, -1), so the
        capture's check sees an element the record leaves unwritten."""
        if not arenas.hold():
            return None
        patched: Patched = []
        bindings = self._bindings
        try:
            for name, buffer in self.feeds.items():
                given = feeds[name]
                if name in self.borrowed_feeds and borrowable(given, buffer):
                    bindings.bind(("feed", name), given, patched)
                elif name in self.borrowed_feeds or name in self._copied:
                    np.copyto(buffer, given)
            fresh = {}
            for k in self.fresh_outputs:
                recorded = self.outputs[k]
                fresh[k] = new = np.empty(recorded.shape, recorded.dtype)
                if fill:
                    new.reshape(-1).view(np.uint8).fill(0xFF)
                bindings.bind(("out", k), new, patched)
            for call, args, kwargs in self.calls:
                call(*args, **kwargs)
            return [fresh[k] if k in fresh else _copy(o) for k, o in enumerate(self.outputs)]
        finally:
            restore(patched)
            arenas.let_go()

    def copy_outputs(self) -> None:
        """Copy every output out of the recorded arrays from now on (some output is partly written
        outside the record: the check saw an element of a new array left as it was made)."""
        self.fresh_outputs = []


class KernelReplays:
    """A session's replays by feed signature (names, shapes, dtypes, kernel threads)."""

    def __init__(self, session: Any):
        self._session = session
        self._entries: OrderedDict[tuple, Any] = OrderedDict()  # signature -> runs seen, a Replay or _REFUSED
        self._lock = threading.Lock()
        self._runs = 0  # runs asked of this session's replays (their counts age by it)
        self._laid = (None, None)  # the arena's block and workspace the replays were last checked against
        #: a Winograd step's Python fallback (an inf or a NaN in its input) is not recorded: such a
        #: graph's replays must come out finite, or the run is made again normally
        self._finite_only = any(s.node.attrs.get("algorithm") == WINOGRAD for s in session.steps)
        #: per feed name, single values (feeds of one value throughout) captures ran on: values the
        #: model accepted there, to probe a later capture's single value with
        self._singles: dict[str, list] = {}
        #: the replays kept and the bytes they hold, while no entry has changed since (None: count
        #: them again): a run not yet admitted asks for them, and there may be hundreds of signatures
        self._replays: tuple[list, int] | None = None

    def run(self, feeds: Mapping[str, Any]) -> list | None:
        """The session's outputs for ``feeds`` by replay, or None: run it normally."""
        if not feeds:
            return None
        key = _signature(feeds)
        if key is None:
            return None
        self._runs += 1
        if self._runs % AGE_EVERY == 0:
            self._age()
        arenas = self._session.arenas
        if arenas.block is not self._laid[0] or arenas.workspace is not self._laid[1]:
            self._drop_stale(arenas)
        entry = self._entries.get(key, 0)
        if isinstance(entry, Replay):
            if entry.block is arenas.block and entry.workspace is arenas.workspace:
                entry.uses += 1
                if not entry.holds(feeds):
                    # a pinned feed's other value: captured anew (probed with the pinned one) unless
                    # the replay is settled and the new value, too, is one value throughout
                    varied = any(_varies(feeds[name]) for name in entry.pinned)
                    return self._capture(key, feeds, entry.uses) if varied or not entry.settled else None
                try:
                    outputs = entry.run(arenas, feeds)
                except Exception:  # noqa: BLE001 - a bad input a kernel's own check stopped, or a broken record
                    outputs = self._session.execute(feeds)  # a bad input's error, named; the replay stays
                    self._keep(key, _REFUSED)  # ran step by step where the replay raised: a broken record
                    return outputs
                if outputs is not None and self._finite_only and not all(np.isfinite(o).all() for o in outputs):
                    return None  # a Winograd step may have fallen back: run normally
                return outputs
            entry = 0  # the arena was laid out anew: capture again
        if entry is _REFUSED:
            return None
        if entry < CAPTURE_AFTER:
            self._keep(key, entry + 1)
            return None
        if not self._admits(entry):
            self._keep(key, entry + 1)
            return None
        return self._capture(key, feeds, entry + 1)

    def report(self) -> str:
        """Each input signature seen and how its runs go: replayed (its runs), step by step (refused
        by the check or too long a run), step by step until its capture, or while more-used
        replays fill the session's :data:`KEPT_REPLAYS`."""
        parts = []
        for (feeds, threads), entry in list(self._entries.items()):
            shapes = ", ".join(f"{name} {list(shape)}" for name, shape, _ in feeds)
            state = (f"replayed ({entry.uses} runs{_pinned_note(entry)})" if isinstance(entry, Replay) else
                     REFUSED_NOTE if entry is _REFUSED else
                     f"step by step, {entry} of {CAPTURE_AFTER} runs before its capture" if entry < CAPTURE_AFTER else
                     f"step by step, {entry} runs: the {KEPT_REPLAYS} replays kept are of shapes run more")
            parts.append(f"{shapes} at {threads} thread(s): {state}")
        return "; ".join(parts) or NO_RUNS

    def _drop_stale(self, arenas: Any) -> None:
        """Forget the replays recorded on a block or workspace the arena has since replaced: they
        would capture again on their next run anyway, and meanwhile they kept the old memory alive
        (a batch-32 block of ResNet-18 is ~120 MB)."""
        with self._lock:
            for key, entry in list(self._entries.items()):
                if isinstance(entry, Replay) and (entry.block is not arenas.block
                                                  or entry.workspace is not arenas.workspace):
                    self._entries[key] = 0
                    self._replays = None
            self._laid = (arenas.block, arenas.workspace)

    def _admits(self, count: int) -> bool:
        """Whether a signature run ``count`` times may be captured: while the session keeps fewer
        than :data:`KEPT_REPLAYS` holding less than :data:`KEPT_REPLAY_BYTES`, or when it ran more
        often than the least-used replay."""
        with self._lock:
            if self._replays is None:
                replays = [v for v in self._entries.values() if isinstance(v, Replay)]
                self._replays = (replays, sum(r.nbytes for r in replays))
            replays, held = self._replays
        full = len(replays) >= KEPT_REPLAYS or held >= KEPT_REPLAY_BYTES
        return not full or count > min(r.uses for r in replays)

    def _age(self) -> None:
        """Halve every count and use (counts not below :data:`CAPTURE_AFTER`)."""
        with self._lock:
            for key, entry in list(self._entries.items()):
                if isinstance(entry, Replay):
                    entry.uses //= 2
                elif type(entry) is int and entry > CAPTURE_AFTER:
                    self._entries[key] = max(CAPTURE_AFTER, entry // 2)

    def _check(self, replay: Replay, recorded: dict[str, np.ndarray], rng: np.random.Generator,
               singles: dict[str, list]) -> tuple:
        """The replay's and a normal run's outputs on a probe of the ``recorded`` feeds (a float feed
        random, an integer or bool one shuffled, or another of ``singles`` where it holds one value
        throughout), the replay first (the normal run first would have left the probe's own values
        in every buffer, hiding work the record skipped); sets the replay's pinned feeds, those the
        probe could not vary (an empty one has no value to pin: an empty cache)."""
        probe = {name: _probe(rng, b, singles.get(name, ())) for name, b in recorded.items()}
        replay.pinned = {name: b for name, b in recorded.items() if b.size and np.array_equal(probe[name], b)}
        got = replay.run(self._session.arenas, probe, fill=True)
        return got, self._session.execute(probe)

    def _verdict(self, replay: Replay, recorded: dict[str, np.ndarray], rng: np.random.Generator,
                 singles: dict[str, list]) -> tuple[list | None, bool]:
        """(the replay's outputs on a probe, whether a normal run's equal them: :meth:`_check`). A new
        output array left partly as it was made (work outside the record writes that output) is
        checked again on another probe with its outputs copied out of the recorded arrays."""
        got, want = self._check(replay, recorded, rng, singles)
        same = got is not None and self._same(got, want)
        if got is not None and not same and any(_unwritten(got[k]) for k in replay.fresh_outputs):
            replay.copy_outputs()
            got, want = self._check(replay, recorded, rng, singles)
            same = got is not None and self._same(got, want)
        return got, same

    def _same(self, got: list, want: list) -> bool:
        if self._finite_only and not all(isinstance(o, np.ndarray) and o.dtype.kind == "f" for o in got):
            return False  # a non-float output could not show a Winograd step's fallback
        return len(got) == len(want) and all(_identical(a, b) for a, b in zip(got, want))

    def _remember_singles(self, feeds: dict[str, np.ndarray]) -> dict[str, list]:
        """Note the single value of each integer or bool feed of one value throughout (a capture's
        run accepted it); the other values noted before for those feeds (to probe them with), by
        name, where there are any."""
        known = {}
        with self._lock:
            for name, value in feeds.items():
                if value.dtype.kind in "iub" and value.size and not _varies(value):
                    seen = self._singles.setdefault(name, [])
                    single = value.ravel()[0].item()
                    others = [v for v in seen if v != single]
                    if others:
                        known[name] = others
                    if single not in seen:
                        seen.append(single)
                        del seen[:-KEPT_SINGLE_VALUES]
        return known

    def _bound_replays(self) -> None:
        """The least-used replays back to counting (their uses) while more than
        :data:`KEPT_REPLAYS` are kept or they hold more than :data:`KEPT_REPLAY_BYTES` (under the
        lock)."""
        entries = self._entries
        replays = sorted((v.uses, i, k) for i, (k, v) in enumerate(entries.items()) if isinstance(v, Replay))
        held = sum(entries[k].nbytes for _, _, k in replays)
        for n, (uses, _, k) in enumerate(replays):
            if len(replays) - n <= KEPT_REPLAYS and held <= KEPT_REPLAY_BYTES:
                break
            held -= entries[k].nbytes
            entries[k] = uses
        self._replays = None

    def _keep(self, key: tuple, entry: Any) -> None:
        """Set ``key``'s entry (as the newest); past :data:`KEPT_REPLAYS` or
        :data:`KEPT_REPLAY_BYTES` the least-used replays go back to counting (their uses), past
        :data:`KEPT_SIGNATURES` the longest-unseen signatures that are not replays are forgotten."""
        with self._lock:  # runs in other threads count and capture too
            entries = self._entries
            old = entries.pop(key, None)
            entries[key] = entry
            if isinstance(entry, Replay):  # only a new replay can take the replays past their bounds
                self._bound_replays()
            elif isinstance(old, Replay):
                self._replays = None
            while len(entries) > KEPT_SIGNATURES:
                del entries[next(k for k, v in entries.items() if not isinstance(v, Replay))]

    def _capture(self, key: tuple, feeds: Mapping[str, Any], count: int) -> list | None:
        """Record this run (``count``: the signature's runs with it), check the record on random
        inputs and keep it as ``key``'s replay if it passed; the run's outputs either way."""
        session, arenas = self._session, self._session.arenas
        if arenas.wants_shapes(feeds):  # no plan for these shapes (yet, or no longer): a run now would
            return None  # record numpy's arrays, and the replay would hold them; this run notes the shapes
        buffers = {name: np.array(value, copy=True) for name, value in feeds.items()}
        started = time.perf_counter()
        with _Recorder() as calls:
            outputs = session.execute(buffers)
        result = _copies(outputs)
        if time.perf_counter() - started > MAX_REPLAY_SECONDS:
            self._keep(key, _REFUSED)  # too long a run for its Python to matter: not checked, not kept
            return result
        singles = self._remember_singles(buffers)
        # the recorded values kept apart: a probe's replay copies into the buffers of feeds it cannot read in place
        recorded = {name: b.copy() for name, b in buffers.items()}
        replay = Replay(buffers, calls, outputs, arenas.block, arenas.workspace, count)
        rng = np.random.default_rng(len(calls))
        # probed with other captures' single values first; where the model rejects them at this shape
        # or they change what it computes (a length fed as a value), again pinned to the recorded ones
        attempts = [singles, {}] if singles else [{}]
        for n, values in enumerate(attempts):
            try:  # the replay first: every buffer then holds what the recorded run left, from other
                got, same = self._verdict(replay, recorded, rng, values)  # inputs: work the record skipped shows
            except Exception:  # noqa: BLE001 - a model that rejects random inputs is simply not replayed
                if n + 1 < len(attempts):
                    continue
                self._keep(key, _REFUSED)
                return result
            if got is None:  # another thread held the arena: try again on a later run
                return result
            if same:
                break
        replay.settled = n > 0
        self._keep(key, replay if same and replay.nbytes <= KEPT_REPLAY_BYTES else _REFUSED)
        return result


def _compiled(dispatcher: Any, args: tuple, kwargs: dict) -> Any:
    """What numba's dispatch calls for these arguments: the compiled overload of their types, called
    directly (dispatch resolves every argument's type on each call: ~0.4-0.5 us of a ~30-argument
    call), or the dispatch itself where no overload matches exactly or keywords are passed."""
    if not kwargs:
        try:
            keys = tuple(_type_key(a) for a in args)
            found = _ENTRIES.get((dispatcher, keys)) if None not in keys else None
            if found is None:
                found = dispatcher.overloads.get(tuple(_numba_type(dispatcher, a, k) for a, k in zip(args, keys)))
                if found is not None and None not in keys:
                    _ENTRIES[dispatcher, keys] = found
        except Exception:  # noqa: BLE001 - an argument numba cannot type here: its dispatch decides
            found = None
        if found is not None:
            return found.entry_point
    return functools.partial(_dispatch, dispatcher)


#: numba's type of an argument by what decides it (:func:`_type_key`: an array's dtype, rank,
#: layout and writeability; a scalar's class): numba's own typeof took ~6 us an array, so a capture
#: of a 2-layer GPT (3280 calls, 22738 arguments) spent more resolving its calls than running them
_TYPES: dict = {}
#: a dispatcher's overload by its arguments' keys: looking one up by numba's types hashed each
#: type in Python (~1 us an argument, ~1.5 ms of an int8 GPT decoder's capture)
_ENTRIES: dict = {}


def _type_key(value: Any) -> Any:
    """What decides ``value``'s numba type, or None where numba's typeof must tell."""
    kind = type(value)
    if kind is np.ndarray:
        flags = value.flags
        return value.dtype, value.ndim, flags.c_contiguous, flags.f_contiguous, flags.writeable
    if kind is float or kind is bool or isinstance(value, (np.number, np.bool_)):
        return kind
    if kind is int and value.bit_length() < 64:
        return int  # numba's int64 (a larger one: uint64, or too large)
    return None


def _numba_type(dispatcher: Any, value: Any, key: Any) -> Any:
    """``dispatcher.typeof_pyval(value)``, remembered per :data:`_TYPES` ``key`` (its :func:`_type_key`)."""
    if key is None:
        return dispatcher.typeof_pyval(value)
    found = _TYPES.get(key)
    if found is None:
        found = _TYPES[key] = dispatcher.typeof_pyval(value)
    return found


def _signature(feeds: Mapping[str, Any]) -> tuple | None:
    """What a replay is recorded for: the feeds' signature and the kernel threads; None when a
    feed is not a numeric or bool array."""
    signature = feed_signature(feeds, kinds="fiub")
    return None if signature is None else (signature, kernel_threads())


def _pinned_note(replay: Replay) -> str:
    if not replay.pinned:
        return ""
    return f"; only for the recorded {', '.join(replay.pinned)}: one value throughout, which no probe varies"


def _probe(rng: np.random.Generator, recorded: np.ndarray, singles: Sequence = ()) -> np.ndarray:
    """Other inputs of ``recorded``'s shape for the capture's check: random normals for a float
    feed, the recorded values shuffled for an integer or bool one (ids and masks stay valid), or
    rolled by one where the shuffle left them as they were; values all equal, which survive both,
    become the latest of ``singles`` (other values the model accepted for that feed elsewhere)."""
    if recorded.dtype.kind == "f":
        return rng.standard_normal(recorded.shape).astype(recorded.dtype)
    shuffled = rng.permutation(recorded.ravel()).reshape(recorded.shape)
    if not np.array_equal(shuffled, recorded):
        return shuffled
    if recorded.size and not _varies(recorded) and singles:
        return np.full(recorded.shape, singles[-1], recorded.dtype)
    return np.roll(recorded, 1)


def _varies(value: np.ndarray) -> bool:
    """Whether ``value`` holds two different values, so that its probe differs from it."""
    return value.size > 1 and bool(np.any(value.ravel() != value.ravel()[0]))


def _copies(outputs: list) -> list:
    """The caller's own outputs: each array copied (the recorded ones are rewritten by later runs)."""
    return [_copy(o) for o in outputs]


def _copy(output: Any) -> Any:
    return np.array(output, copy=True) if isinstance(output, np.ndarray) else output


def _unwritten(a: Any) -> bool:
    """Whether an element of array ``a`` is all-ones bytes, as :meth:`Replay.run` fills new outputs."""
    if not isinstance(a, np.ndarray) or not a.size:
        return False
    return bool((a.reshape(-1).view(np.uint8).reshape(a.size, a.itemsize) == 0xFF).all(axis=1).any())


def _identical(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
    return False
