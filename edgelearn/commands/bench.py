"""`edgelearn bench model.onnx`: latency, throughput, memory and cold start, beside the peers.

Peers run in this process, interleaved in blocks with our Predictor so that load from other
processes hits every runtime alike; ratios matter more than absolute times on a shared machine.
The timing helpers here are also what ``benchmarks/inference.py`` uses for the README table.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np

from inference.errors import ConfigError
from inference.rss import peak_rss_mb

NAME = "bench"
HELP = "latency (median/p90), throughput, peak RSS, cold start and a per-op trace, vs onnxruntime"
PEERS = ("onnxruntime", "reference")
Runner = Callable[[dict], list]


def add_arguments(p) -> None:
    p.add_argument("model")
    p.add_argument("--batch", default="1", help="comma-separated batch sizes for the symbolic batch dim")
    p.add_argument("--dim", action="append", default=[], help="sizes of the other symbolic dims, by name or as "
                   "INPUT:AXIS: sequence=128[,input_ids:1=128]; may be repeated (--dim length=1 --dim cached=30)")
    p.add_argument("--threads", default="1", help="comma-separated thread counts (BLAS + numba + peers)")
    p.add_argument("--compare", default="onnxruntime", help=f"comma-separated peers from {PEERS}, or ''")
    p.add_argument("--repeat", type=int, default=20, help="timed runs per runtime")
    p.add_argument("--trace", default=None, help="write a per-op Chrome trace (chrome://tracing) here")
    p.add_argument("--no-cold-start", action="store_true", help="skip the cold start subprocesses")


def _csv_ints(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--{what} takes comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise ConfigError(f"--{what} needs positive integers, got {text!r}")
    return values


def parse_dims(text: str) -> dict[str, int]:
    """``--dim``'s ``name=size`` pairs (a name is a dim's symbol or ``INPUT:AXIS``)."""
    dims = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, size = part.rpartition("=")
        if not name or not size.strip().isdigit() or int(size) < 1:
            raise ConfigError(f"--dim takes name=size pairs with positive sizes, got {part!r}")
        dims[name.strip()] = int(size)
    return dims


# -- feeds and runners ----------------------------------------------------------------------------
def feed_shapes(model: Any, batch: int, dims: Mapping[str, int] | None = None) -> dict[str, tuple[int, ...]]:
    """Each fed input's shape: a symbolic leading dim (and any dim of its name) is ``batch``, another
    symbolic dim takes its size from ``dims`` by its name or as ``INPUT:AXIS``. Why no default: a
    sequence length taken as the batch's 1 benchmarks a one-token model."""
    dims = dict(dims or {})
    used, shapes = set(), {}
    for v in model.graph.feed_inputs():
        if v.type.shape is None:
            raise ConfigError(f"input {v.name!r} has no shape in the model: its feeds cannot be made up")
        batch_name = v.type.shape[0] if v.type.shape and not isinstance(v.type.shape[0], int) else None
        shape = []
        for axis, d in enumerate(v.type.shape):
            keys = [k for k in (d if isinstance(d, str) else None, f"{v.name}:{axis}") if k in dims]
            if isinstance(d, int):
                shape.append(d)
            elif axis == 0 or (d is not None and d == batch_name):
                if keys:
                    raise ConfigError(f"--dim {keys[0]}: that is the batch axis of input {v.name!r}; "
                                      "give it with --batch")
                shape.append(batch)
            elif keys:  # by symbol first, then as INPUT:AXIS
                shape.append(dims[keys[0]])
                used.update(keys)
            else:
                named = f"--dim {d}=N" if d else f"--dim {v.name}:{axis}=N"
                raise ConfigError(f"input {v.name!r} axis {axis} is symbolic ({d or 'unnamed'}) and not the "
                                  f"batch axis: give its size with {named}")
        shapes[v.name] = tuple(shape)
    unused = sorted(set(dims) - used)
    if unused:
        raise ConfigError(f"--dim {', '.join(unused)}: no fed input has such a symbolic dim")
    return shapes


def random_feeds(model: Any, batch: int, seed: int = 0, dims: Mapping[str, int] | None = None
                 ) -> dict[str, np.ndarray]:
    """Random feeds of :func:`feed_shapes`: float inputs standard normal, integer and bool ones 0 or 1
    (a valid token id and mask value for any vocabulary)."""
    rng = np.random.default_rng(seed)
    types = {v.name: v.type.dtype for v in model.graph.feed_inputs()}
    return {name: (rng.standard_normal(shape).astype(types[name]) if types[name].kind == "f"
                   else rng.integers(0, 2, shape).astype(types[name]))
            for name, shape in feed_shapes(model, batch, dims).items()}


def has_symbolic_batch(model: Any) -> bool:
    return all(v.type.shape and not isinstance(v.type.shape[0], int) for v in model.graph.feed_inputs())


def edgelearn_runner(proto: Any, threads: int, **config: Any) -> tuple[Runner, Any]:
    """Our Predictor at ``threads`` (other ``Config`` fields from ``config``) as a runner, and itself."""
    from inference import Config, Predictor

    pred = Predictor(Config(model_path=proto, num_threads=threads, **config))
    names = pred.get_output_names()

    def run(feeds: dict) -> list:
        outputs = pred.run(feeds)  # once: a comprehension over run(feeds)[n] ran the model once per output
        return [outputs[n] for n in names]

    return run, pred


def peer_runner(peer: str, proto: Any, threads: int) -> Runner:
    """onnxruntime with its default graph optimization at ``threads`` intra-op threads, or
    onnx.reference's ReferenceEvaluator (pure numpy; its BLAS follows the same thread cap)."""
    if peer == "onnxruntime":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
        return lambda feeds: sess.run(None, feeds)
    if peer == "reference":
        from onnx.reference import ReferenceEvaluator

        ref = ReferenceEvaluator(proto)
        return lambda feeds: ref.run(None, feeds)
    raise ConfigError(f"unknown peer {peer!r}; choose from {PEERS}")


# -- the benchmark scripts' tables -----------------------------------------------------------------
def add_table_arguments(p, models: Sequence[str]) -> None:
    """The options of ``benchmarks/``'s model tables: which models, thread counts, timed runs."""
    p.add_argument("--models", default=",".join(models))
    p.add_argument("--threads", default="1,2")
    p.add_argument("--repeat", type=int, default=20, help="timed runs per cell at batch 1 (batch 32: a quarter)")
    p.add_argument("--quick", action="store_true", help="batch 1 only, fewer runs")


def machine_line() -> str:
    """What a table's numbers depend on: the BLAS core type, the cores, the load when it starts."""
    return (f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}  cores={os.cpu_count()}  "
            f"load average at start: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")


# -- timing -------------------------------------------------------------------------------------
@dataclass
class Timing:
    times: list[float]

    @property
    def median(self) -> float:
        return float(np.median(self.times))

    @property
    def p90(self) -> float:
        return float(np.percentile(self.times, 90))


def time_interleaved(runners: dict[str, Runner], feeds: dict, repeat: int, warmup: int = 2,
                     block: int = 3, repeats: dict[str, int] | None = None,
                     settle_s: float = 0.0) -> dict[str, Timing]:
    """Time each runner ``repeat`` times (or ``repeats[name]``), alternating blocks of ``block`` runs.

    Interleaving spreads bursts of load from other processes over every runtime instead of
    penalising whichever happened to run during them. Each block starts with an untimed run, and
    more untimed runs until ``settle_s`` seconds have passed: every runtime's thread pool
    spin-waits after its work (OpenBLAS for ~0.1 s), and with several threads that spinning steals
    the cores the next runtime needs (measured: ResNet-18 int8 at 2 threads, 0.74x our fp32 timed
    run by run, 0.57x in blocks settled by one run, 0.27x settled for 0.3 s).
    """
    repeats = repeats or {}
    for fn in runners.values():
        for _ in range(warmup):
            fn(feeds)
    out = {name: [] for name in runners}
    while any(len(out[n]) < repeats.get(n, repeat) for n in runners):
        for name, fn in runners.items():
            if len(out[name]) < repeats.get(name, repeat):
                settle_until = time.perf_counter() + settle_s
                fn(feeds)  # settle: let the previous runtime's pool go idle
                while time.perf_counter() < settle_until:
                    fn(feeds)
            for _ in range(min(block, repeats.get(name, repeat) - len(out[name]))):
                t = time.perf_counter()
                fn(feeds)
                out[name].append(time.perf_counter() - t)
    return {name: Timing(ts) for name, ts in out.items()}


def time_in_model_order(layers: Sequence[dict[str, Callable[[], Any]]], rounds: int,
                        clock: Callable[[], float] = time.thread_time, warmup: int = 0) -> list[dict[str, list[float]]]:
    """Per layer, each side's time of one call in each of ``rounds`` rounds (after ``warmup`` untimed
    ones). ``layers[i][side]`` runs layer i on that side. Each round runs every layer in order on one
    side, then on the next, the sides' order rotating by round: a layer's weights and input then
    arrive from L3 as in a model, never from the other side's call just before (which flatters
    whichever side runs second)."""
    sides = list(layers[0]) if layers else []
    out = [{side: [] for side in sides} for _ in layers]
    for r in range(warmup + rounds):
        turn = r % len(sides)
        for side in sides[turn:] + sides[:turn]:
            for calls, times in zip(layers, out):
                t = clock()
                calls[side]()
                if r >= warmup:
                    times[side].append(clock() - t)
    return out


def max_abs_diff(a: Sequence[np.ndarray], b: Sequence[np.ndarray], rtol: float = 1e-4, atol: float = 1e-5
                 ) -> tuple[float, bool]:
    diffs = [float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)))) for x, y in zip(a, b)]
    ok = all(np.allclose(x, y, rtol=rtol, atol=atol) for x, y in zip(a, b))
    return max(diffs), ok


# -- cold start ---------------------------------------------------------------------------------
_COLD_SCRIPT = """
import os, time, sys
for name in filter(None, os.environ.get("EDGELEARN_ABSENT_MODULES", "").split(",")):
    sys.modules[name] = None  # import raises ImportError, as when the package is not installed
t0 = time.perf_counter()
import numpy as np
from inference import Config, Predictor
from edgelearn.commands.bench import parse_dims, random_feeds
pred = Predictor(Config(model_path=sys.argv[1], num_threads=1))
pred.run(random_feeds(pred.model, 1, dims=parse_dims(sys.argv[2])))
seconds = time.perf_counter() - t0
from inference.rss import peak_rss_mb
print(seconds, peak_rss_mb())
"""


class ColdStart(NamedTuple):
    """Seconds for import + load + first run: warm numba cache; the same with only the core
    dependencies importable (what ``pip install edgelearn`` brings); empty numba cache (compiling).
    ``peak_rss_mb``: the warm core-only process's peak RSS, our runtime alone (no peer loaded)."""
    warm: float
    warm_core: float
    empty_cache: float
    peak_rss_mb: float


def _canonical(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


def non_core_modules() -> list[str]:
    """Top-level modules installed here that neither edgelearn's core dependencies (recursively,
    extras left out) nor the standard library provide. Why: numba probes optional packages when it
    starts (scipy, for BLAS: 0.18 s here), which a core install does not have."""
    from importlib import metadata

    core, todo = set(), ["edgelearn"]
    while todo:
        dist = _canonical(todo.pop())
        if dist in core:
            continue
        core.add(dist)
        try:
            reqs = metadata.requires(dist) or []
        except metadata.PackageNotFoundError:
            continue
        todo.extend(re.match(r"[A-Za-z0-9_.\-]+", r).group(0) for r in reqs if "extra ==" not in r)
    provided = metadata.packages_distributions()
    return sorted(mod for mod, dists in provided.items()
                  if mod.isidentifier() and mod not in sys.stdlib_module_names
                  and not any(_canonical(d) in core for d in dists))


def cold_start(model_path: str, numba_cache_dir: str | None = None, absent: Sequence[str] = (), dims: str = ""
               ) -> tuple[float, float]:
    """Seconds for import + load + first inference in a fresh interpreter, and that process's peak
    RSS in MB; ``numba_cache_dir`` points numba at another cache (an empty one: the cold-cache
    compile time); modules in ``absent`` cannot be imported there; ``dims``: as ``--dim``."""
    env = dict(os.environ)
    # Python's bytecode cache is on by default, as on a user's machine (pip installs .pyc too); a
    # sandbox that turns it off would time our modules' compilation from source (~0.1 s) every start
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["EDGELEARN_ABSENT_MODULES"] = ",".join(absent)
    if numba_cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = numba_cache_dir
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", _COLD_SCRIPT, model_path, dims], env=env, capture_output=True,
                         text=True, check=True)
    seconds, rss = out.stdout.strip().splitlines()[-1].split()
    return float(seconds), float(rss)


def cold_starts(model_path: str, dims: str = "") -> ColdStart:
    """The three cold starts of :class:`ColdStart` (``dims``: as ``--dim``)."""
    cold_start(model_path, dims=dims)  # fill the default caches first (numba's, Python's bytecode): "warm" is warm
    warm, _ = cold_start(model_path, dims=dims)
    warm_core, rss = cold_start(model_path, absent=non_core_modules(), dims=dims)
    with tempfile.TemporaryDirectory() as empty:
        cold, _ = cold_start(model_path, empty, dims=dims)
    return ColdStart(warm, warm_core, cold, rss)


def describe(c: ColdStart) -> str:
    return (f"warm numba cache {c.warm:.2f} s ({c.warm_core:.2f} s with only the core dependencies importable), "
            f"empty numba cache (compiling) {c.empty_cache:.2f} s; peak RSS of that run alone {c.peak_rss_mb:.0f} MB")


# -- per-op trace -------------------------------------------------------------------------------
def write_trace(pred: Any, feeds: dict, path: str) -> int:
    """Run once with the session's profiler hook; write Chrome trace events (one per op)."""
    events: list[dict] = []

    def on_step(node, kernel, start: float, end: float) -> None:
        events.append({"name": node.label(), "cat": f"{node.domain + '::' if node.domain else ''}{node.op_type}",
                       "ph": "X", "ts": start * 1e6, "dur": (end - start) * 1e6, "pid": os.getpid(), "tid": 0,
                       "args": {"op_type": node.op_type, "kernel": kernel.kind, "inputs": list(node.inputs)}})

    pred.session.profiler = on_step
    try:
        pred.run(feeds)
    finally:
        pred.session.profiler = None
    with open(path, "w") as f:
        json.dump({"traceEvents": events, "displayTimeUnit": "ms"}, f)
    return len(events)


# -- the command --------------------------------------------------------------------------------
def run(args) -> int:
    import onnx

    from inference.onnx_import import load_model

    batches, threads = _csv_ints(args.batch, "batch"), _csv_ints(args.threads, "threads")
    dim_text = ",".join(args.dim)  # every --dim given, not only the last
    dims = parse_dims(dim_text)
    peers = [p for p in args.compare.split(",") if p]
    for p in peers:
        if p not in PEERS:
            raise ConfigError(f"--compare: unknown peer {p!r}; choose from {PEERS}")
    proto = onnx.load(args.model)
    model = load_model(proto)
    ours_only = sorted({n.domain for n in proto.graph.node} - {"", "ai.onnx"})
    if ours_only and peers:
        print(f"note: the model uses domains {ours_only} (an `edgelearn optimize` output?) that the peers "
              "cannot run; benchmark the original model to compare")
        peers = []
    if not has_symbolic_batch(model) and batches != [1]:
        print(f"note: {args.model} has a fixed batch dim; running batch 1 only")
        batches = [1]
    shapes = feed_shapes(model, batches[0], dims)  # an unsized symbolic dim stops here, named
    print(f"model: {args.model}   OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}   "
          f"load average: {os.getloadavg()[0]:.1f}")
    print(f"inputs at batch {batches[0]}: " + ", ".join(f"{name} {list(shape)}" for name, shape in shapes.items()))
    print(f"{'batch':>5} {'thr':>3} {'runtime':<12} {'median ms':>10} {'p90 ms':>9} {'items/s':>9} "
          f"{'vs ours':>8}  max|diff|")
    pred = None
    for t in threads:
        for b in batches:
            ours, pred = edgelearn_runner(proto, t)
            runners = {"edgelearn": ours}
            runners.update({p: peer_runner(p, proto, t) for p in peers})
            feeds = random_feeds(model, b, dims=dims)
            outs = {name: fn(feeds) for name, fn in runners.items()}
            slow = {"reference": max(1, min(3, args.repeat))}
            timings = time_interleaved(runners, feeds, args.repeat, warmup=1, repeats=slow)
            base = timings["edgelearn"].median
            for name, tm in timings.items():
                if name == "edgelearn":
                    diff = ""
                else:
                    value, ok = max_abs_diff(outs["edgelearn"], outs[name])
                    diff = f"{value:.2e} {'ok' if ok else 'FAIL (beyond rtol 1e-4, atol 1e-5)'}"
                print(f"{b:>5} {t:>3} {name:<12} {tm.median * 1e3:>10.2f} {tm.p90 * 1e3:>9.2f} "
                      f"{b / tm.median:>9.1f} {tm.median / base:>7.2f}x  {diff}")
    print(f"peak RSS: {peak_rss_mb():.0f} MB (whole process, peers included)")
    for b in batches if pred is not None else ():
        print(f"batch {b}: {pred.memory_plan(b, random_feeds(model, b, dims=dims)).report()}")
    if pred is not None:
        print(f"activation arena held after these runs: {pred.arena_bytes / 2**20:.2f} MiB (block and scratch; "
              f"Config.memory_arena)")
        print(f"kernel replay (the last runner): {pred.replay_report()}")
    if args.trace and pred is not None:
        n = write_trace(pred, random_feeds(model, batches[0], dims=dims), args.trace)
        print(f"per-op trace: {args.trace} ({n} ops; open in chrome://tracing or ui.perfetto.dev)")
    if not args.no_cold_start:
        print(f"cold start (import + load + first run, 1 thread): {describe(cold_starts(args.model, dim_text))}")
    return 0
