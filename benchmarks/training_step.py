"""Training-step table: our Trainer vs PyTorch CPU eager, same thread count, one process.

Run from the project root:  env -u OPENBLAS_CORETYPE python benchmarks/training_step.py [--quick]

Cases: (a) MLP 64-128-10 batch 32, (b) MLP 784-256-256-10 batch 64, (c) CNN conv3x3(16)-relu-
maxpool-conv3x3(32)-relu-maxpool-fc on 1x28x28 batch 32, (d) that CNN with only ``fc`` trainable;
each with SGD (momentum 0.9) and Adam, at 1 and 2 threads. Random data (timing does not depend
on the values), no metrics on either side, shuffled batches.

How a step is timed: both sides run the same epoch loop over the same data set, and a timed
block is one whole loop: ours is one ``Trainer.fit`` call (loader, step graph, epoch end),
PyTorch's is zero_grad/forward/loss/backward/step per batch plus ``loss.item()``, as
``Trainer.fit`` also returns the loss to Python. ms/step = block wall time / steps; the table
gives the median over blocks, which alternate between the two frameworks (interleaved, so
bursts of load from other jobs hit both). The first block of each side is a warm-up. At one
thread every step computes in the calling thread on both sides, so the "cpu" column also gives
the ratio of thread CPU time, which other jobs on a shared machine inflate far less than wall time.

How the frozen-prefix cache of (d) is accounted: ``Trainer.fit`` runs the frozen convolutions
once over the data set at the start of every fit call and trains the head on the cached
features. A timed (d) block is one fit of ``EPOCHS_D`` epochs, so the cost of building the cache
is inside the block and amortized over those epochs only (PyTorch runs the frozen layers every
step, without their backward, as eager fine-tuning does). The "cache" column gives the share
of our block spent building it.

Peak RSS: each row is a fresh subprocess reporting its peak RSS (VmHWM; see :func:`peak_rss_mb`).
The training rows train the CNN (c) with Adam for ``RSS_STEPS`` steps, importing only their own
framework; the first rows give the floor any numba runtime pays: the interpreter, numpy, numba's
import (~65 MB) and the first cached kernel load (LLVM's JIT, ~50 MB; ~65 MB with scipy, which
numba imports when it is installed). "core install" blocks scipy in the child, as an install of
edgelearn without scipy has it (the CNN's kernels do not use numba's BLAS). Above the floor ours
holds onnx (~15 MB: module and its C++ schema registry), our modules (~10 MB), the data set
(shared by both sides) and a few MB of kernels, activations and gradients.

Both sides of a timing cell share one process, so the glibc heap settings our training step
makes (:mod:`training.heap`: no page faults on re-allocated temporaries) apply to PyTorch's
blocks as well.

2 threads on a shared 2-core machine: with other jobs running, a second spinning thread mostly
waits for a core, so those rows measure the machine's load as much as the frameworks.
"""
from __future__ import annotations

import argparse
import inspect
import os
import resource
import subprocess
import sys
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

EPOCHS_D = 3      # epochs per timed fit of case (d): the cache is built once per fit
RSS_STEPS = 200

CASES = {  # name: (kind, batch, steps per epoch, trainable)
    "a mlp 64-128-10": ("mlp_small", 32, 32, None),
    "b mlp 784-256-256-10": ("mlp_big", 64, 12, None),
    "c cnn": ("cnn", 32, 8, None),
    "d cnn, fc only": ("cnn", 32, 8, "fc*"),
}


# -- models ---------------------------------------------------------------------------------------
def ours_model(kind: str):
    from training import nn

    if kind == "mlp_small":
        seq = nn.Sequential(OrderedDict(fc1=nn.Linear(64, 128), relu=nn.ReLU(), fc=nn.Linear(128, 10)))
        return seq.to_model((None, 64))
    if kind == "mlp_big":
        seq = nn.Sequential(OrderedDict(fc1=nn.Linear(784, 256), relu1=nn.ReLU(), fc2=nn.Linear(256, 256),
                                        relu2=nn.ReLU(), fc=nn.Linear(256, 10)))
        return seq.to_model((None, 784))
    seq = nn.Sequential(OrderedDict(conv1=nn.Conv2d(1, 16, 3), relu1=nn.ReLU(), pool1=nn.MaxPool2d(2),
                                    conv2=nn.Conv2d(16, 32, 3), relu2=nn.ReLU(), pool2=nn.MaxPool2d(2),
                                    flat=nn.Flatten(), fc=nn.Linear(32 * 5 * 5, 10)))
    return seq.to_model((None, 1, 28, 28))


def torch_model(kind: str):
    import torch.nn as tnn

    if kind == "mlp_small":
        return tnn.Sequential(tnn.Linear(64, 128), tnn.ReLU(), tnn.Linear(128, 10))
    if kind == "mlp_big":
        return tnn.Sequential(tnn.Linear(784, 256), tnn.ReLU(), tnn.Linear(256, 256), tnn.ReLU(), tnn.Linear(256, 10))
    return tnn.Sequential(tnn.Conv2d(1, 16, 3), tnn.ReLU(), tnn.MaxPool2d(2), tnn.Conv2d(16, 32, 3), tnn.ReLU(),
                          tnn.MaxPool2d(2), tnn.Flatten(), tnn.Linear(32 * 5 * 5, 10))


def data(kind: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = {"mlp_small": (64,), "mlp_big": (784,), "cnn": (1, 28, 28)}[kind]
    return rng.random((n,) + shape, dtype=np.float32), rng.integers(0, 10, n).astype(np.int64)


# -- runners: each call is one timed block: (wall s, calling thread's CPU s, steps, wall s on the cache)
def ours_runner(kind: str, batch: int, steps: int, trainable: str | None, opt: str, threads: int):
    import training as T

    x, y = data(kind, batch * steps)
    optimizer = T.SGD(lr=0.01, momentum=0.9) if opt == "sgd" else T.Adam(lr=1e-3)
    trainer = T.Trainer(ours_model(kind), T.CrossEntropyLoss(), optimizer, trainable=trainable, metrics=[],
                        num_threads=threads)
    epochs = EPOCHS_D if trainer.split is not None else 1
    features = trainer.split.features if trainer.split is not None else None
    cache_time = [0.0]

    if features is not None:  # time the cache build inside fit, without changing what fit does
        def timed_features(*args, **kwargs):
            t = time.perf_counter()
            out = features(*args, **kwargs)
            cache_time[0] += time.perf_counter() - t
            return out

        trainer.split.features = timed_features

    def run():
        cache_time[0] = 0.0
        t, cpu = time.perf_counter(), time.thread_time()
        trainer.fit(x, y, epochs=epochs, batch_size=batch, shuffle=True)
        return time.perf_counter() - t, time.thread_time() - cpu, epochs * steps, cache_time[0]

    return run


def torch_runner(kind: str, batch: int, steps: int, trainable: str | None, opt: str, threads: int):
    import torch

    torch.set_num_threads(threads)
    model = torch_model(kind)
    if trainable:
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith("7."))  # the final Linear ("fc")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9) if opt == "sgd" else torch.optim.Adam(params, lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    x, y = (torch.from_numpy(a) for a in data(kind, batch * steps))
    epochs = EPOCHS_D if trainable else 1
    gen = torch.Generator().manual_seed(0)

    def run():
        t, cpu = time.perf_counter(), time.thread_time()
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=gen)
            for s in range(steps):
                idx = order[s * batch:(s + 1) * batch]
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(model(x[idx]), y[idx])
                loss.backward()
                optimizer.step()
                loss.item()
        return time.perf_counter() - t, time.thread_time() - cpu, epochs * steps, 0.0

    return run


def cell(case: str, opt: str, threads: int, blocks: int) -> dict:
    kind, batch, steps, trainable = CASES[case]
    runners = {"ours": ours_runner(kind, batch, steps, trainable, opt, threads),
               "torch": torch_runner(kind, batch, steps, trainable, opt, threads)}
    for run in runners.values():  # warm-up: compiles, plans, first-touch allocations
        run()
    per_step: dict[str, list[float]] = {k: [] for k in runners}
    cpu_step: dict[str, list[float]] = {k: [] for k in runners}
    cache_share: list[float] = []
    for b in range(blocks):
        for name in (list(runners) if b % 2 == 0 else list(runners)[::-1]):
            secs, cpu, n, cache = runners[name]()
            per_step[name].append(secs / n * 1e3)
            cpu_step[name].append(cpu / n * 1e3)
            if name == "ours":
                cache_share.append(cache / secs)
    ours, peer = float(np.median(per_step["ours"])), float(np.median(per_step["torch"]))
    cpu = float(np.median(cpu_step["ours"]) / np.median(cpu_step["torch"])) if threads == 1 else None
    return dict(case=case, opt=opt, threads=threads, ours=ours, torch=peer, ratio=ours / peer, cpu=cpu,
                cache=float(np.median(cache_share)) if trainable else None)


# -- peak RSS in fresh subprocesses -----------------------------------------------------------------
# Each row is one fresh child: (label, code run before reporting its peak). The first five rows are
# the floor under any numba-based runtime; "core install" blocks scipy, which numba imports only to
# check its version and (numba.np.arraymath) to find BLAS for np.dot inside @njit - none of the
# kernels the CNN runs needs that, and edgelearn's core install has no scipy.
_NO_SCIPY = "sys.modules['scipy'] = None  # what numba sees in an install without scipy\n"
_TRAIN = "from benchmarks.training_step import {runner}\n{runner}('cnn', 32, {steps}, None, 'adam', 1)()\n"
_FLOOR = ("import numba, numpy\nfrom benchmarks.training_step import _floor_kernel\n"
          "numba.njit(cache=True)(_floor_kernel)(numpy.zeros(4))\n")
RSS_ROWS = [
    ("python interpreter", ""),
    ("+ import numpy", "import numpy\n"),
    ("+ import numba", "import numba\n"),
    ("+ one cached numba kernel (floor)", _FLOOR),
    ("  the same, scipy blocked (core floor)", _NO_SCIPY + _FLOOR),
    ("import training (no step yet)", "import training\n"),
    ("ours: CNN Adam steps", _TRAIN.format(runner="ours_runner", steps=RSS_STEPS)),
    ("ours, core install (scipy blocked)", _NO_SCIPY + _TRAIN.format(runner="ours_runner", steps=RSS_STEPS)),
    ("torch: CNN Adam steps", _TRAIN.format(runner="torch_runner", steps=RSS_STEPS)),
]


def _floor_kernel(a):
    """The trivial kernel of the floor row (compiled with ``cache=True`` by that child only)."""
    return a + 1


def peak_rss_mb() -> float:
    """This process's peak RSS in MB: VmHWM, which exec resets. (``getrusage``'s ru_maxrss is
    not reset by exec: a child of the benchmark would report the parent's peak, torch included.)

    Its source is pasted into each RSS child (:func:`peak_rss`), so a child imports nothing
    beyond what its row measures."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def anon_rss_mb() -> float:
    """This process's current private (anonymous) RSS in MB: RssAnon, i.e. without the pages of
    mapped files such as shared libraries' code (clean, shared, and evictable by the kernel)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def peak_rss(code: str) -> tuple[float, float]:
    """(peak RSS, anonymous RSS at the end) in MB of a fresh interpreter that runs ``code``
    (with the project on sys.path)."""
    script = (f"import resource, sys\nsys.path.insert(0, {str(ROOT)!r})\n{code}"
              f"{inspect.getsource(peak_rss_mb)}{inspect.getsource(anon_rss_mb)}"
              f"print(peak_rss_mb(), anon_rss_mb())\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"RSS child failed:\n{out.stderr.strip()[-2000:]}")
    peak, anon = out.stdout.strip().splitlines()[-1].split()
    return float(peak), float(anon)


def rss_table() -> None:
    """Print the RSS rows, each with its ratio to the PyTorch child."""
    peak_rss(_FLOOR)  # fills the floor kernel's on-disk cache, so its row measures a cache load
    rows = [(label, *peak_rss(code)) for label, code in RSS_ROWS]
    torch_mb = rows[-1][1]
    data_mb = RSS_STEPS * 32 * 28 * 28 * 4 / 2**20
    print(f"peak RSS (VmHWM) of fresh processes; the training rows run {RSS_STEPS} CNN (c) Adam steps at 1 thread "
          f"and hold the same {data_mb:.0f} MB data set; 'anon' = private memory at the end (no file-backed pages)")
    for label, mb, anon in rows:
        print(f"  {label:38} {mb:6.0f} MB  {mb / torch_mb:5.2f}x torch   anon {anon:5.0f} MB")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer blocks per cell")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--cases", default="abcd", help="letters of the cases to run")
    p.add_argument("--no-rss", action="store_true")
    args = p.parse_args()
    blocks = 3 if args.quick else 5
    import torch

    print(f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}  torch {torch.__version__}  "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores  blocks/cell {blocks}")
    print(f"{'case':22} {'optim':5} {'thr':>3} {'ours ms':>8} {'torch ms':>8} {'ratio':>6} {'cpu':>6} {'cache':>6}")
    t0 = time.perf_counter()
    for case in [c for c in CASES if c[0] in args.cases]:
        for opt in ("sgd", "adam"):
            for threads in [int(t) for t in args.threads.split(",")]:
                r = cell(case, opt, threads, blocks)
                cache = f"{r['cache']:.0%}" if r["cache"] is not None else "-"
                cpu = f"{r['cpu']:.2f}x" if r["cpu"] is not None else "-"
                print(f"{r['case']:22} {r['opt']:5} {r['threads']:>3} {r['ours']:8.3f} {r['torch']:8.3f} "
                      f"{r['ratio']:5.2f}x {cpu:>6} {cache:>6}", flush=True)
    if not args.no_rss:
        rss_table()
    print(f"load average {os.getloadavg()[0]:.1f}; wall {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
