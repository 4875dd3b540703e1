"""Continual learning on the 5000 offline MNIST images, published numbers beside ours.

    env -u OPENBLAS_CORETYPE PYTHONPATH=. python benchmarks/continual.py            # everything
    env -u OPENBLAS_CORETYPE PYTHONPATH=. python benchmarks/continual.py --scenario class --methods replay,joint

Prints, per scenario and method, average accuracy and average forgetting after 5 tasks, with
van de Ven & Tolias (full MNIST, 60000 images; class-incremental) beside them;
then the replay buffer's measured bytes against its budget, the peak RSS of each method run
alone in a fresh process (the CLI; target below 200 MB), the personalization run, a
kill-and-resume check (a child process SIGKILLed mid-stream, rerun from its checkpoint: the
final accuracy must equal the uninterrupted run's) and this process's peak RSS.

Where a continual run's peak RSS goes (EWC, class-incremental, ~200 MB): ~110 MB is imports
(numpy ~26, onnx ~11, numba ~55, ours ~12), ~60 MB is numba's first dispatch (its target context
loads the LLVM JIT and ~220 modules, scipy.linalg among them, ~23 MB: numba's BLAS check), and
the learner itself is ~15 MB of arrays (weights, Adam moments, Fisher and anchor, the uint8
images) plus a few MB of per-step and end-of-task temporaries.
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from inference.rss import peak_rss_mb  # noqa: E402
from training.continual import ReplayBuffer  # noqa: E402
from training.continual_benchmarks import METHODS, PUBLISHED, permuted_mnist, personalize, run, split_mnist  # noqa: E402

RSS_TARGET_MB = 200
TARGETS = {("split", "class", "replay"): 0.85, ("split", "class", "joint"): 0.95,
           ("split", "task", "ewc"): 0.95, ("split", "task", "lwf"): 0.95}


def table(kind: str, scenario: str, methods: list[str], epochs: int) -> None:
    bench = permuted_mnist() if kind == "permuted" else split_mnist(scenario)
    pub = PUBLISHED.get((kind, scenario), {})
    print(f"\n{bench.name}, {scenario}-incremental ({len(bench.tasks)} tasks, {epochs} epochs per task)")
    print(f"  {'method':<12} {'avg acc':>8} {'forget':>8} {'published':>10} {'target':>8} {'time':>7}")
    for m in methods:
        r = run(bench, m, epochs=epochs)
        target = TARGETS.get((kind, scenario, m))
        mark = "" if target is None else (f">={target * 100:.0f} " + ("ok" if r.average_accuracy >= target else "MISS"))
        p = pub.get(m)
        print(f"  {m:<12} {r.average_accuracy * 100:7.2f}% {r.forgetting * 100:7.2f}% "
              f"{'' if p is None else f'{p:.2f}%':>10} {mark:>8} {r.seconds:6.1f}s", flush=True)


def replay_memory() -> None:
    print("\nreplay buffer memory (500 MNIST samples, measured nbytes of the allocated arrays):")
    for codec in ("uint8", "fp16", "fp32"):
        budget = 500 * ReplayBuffer.bytes_per_sample((784,), codec)
        buf = ReplayBuffer(budget, (784,), codec)
        print(f"  {codec:<6} budget {budget:>9} B  allocated {buf.nbytes:>9} B  capacity {buf.capacity} samples")


def _cli(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "edgelearn.cli", "continual", *args]


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def rss_per_method(methods: list[str], epochs: int) -> None:
    """Each method alone in a fresh process (the CLI, class-incremental Split-MNIST): its peak RSS,
    which the one-process tables above cannot give (their peak is the largest of all methods)."""
    print(f"\npeak RSS per method, each in a fresh process (split-mnist class, {epochs} epochs; target "
          f"< {RSS_TARGET_MB} MB):")
    for m in methods:
        out = subprocess.run(_cli(["--strategy", m, "--epochs", str(epochs)]), env=_env(), capture_output=True,
                             text=True, check=True).stdout
        mb = float(re.search(r"peak RSS ([\d.]+) MB", out).group(1))
        print(f"  {m:<12} {mb:6.1f} MB  {'ok' if mb < RSS_TARGET_MB else 'MISS'}", flush=True)


def kill_and_resume(epochs: int) -> None:
    """Run the CLI in a child, SIGKILL it once its checkpoint shows it is mid-stream, rerun to the end;
    compare with an uninterrupted child."""
    cmd = _cli(["--strategy", "replay+lwf", "--scenario", "class", "--epochs", str(epochs), "--checkpoint-every", "20"])
    env = _env()
    with tempfile.TemporaryDirectory() as d:
        ck = os.path.join(d, "cl.ckpt")
        child = subprocess.Popen(cmd + ["--checkpoint", ck], env=env, stdout=subprocess.PIPE, text=True)
        for line in child.stdout:  # kill inside task 3, well after the first checkpoints
            if line.startswith("after task 2"):
                time.sleep(1.0)
                child.send_signal(signal.SIGKILL)
                break
        child.wait()
        resumed = subprocess.run(cmd + ["--checkpoint", ck], env=env, capture_output=True, text=True, check=True).stdout
        whole = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    last = lambda out: [l for l in out.splitlines() if l.startswith("average accuracy")][-1]  # noqa: E731
    print(f"\nkill -9 mid-stream then resume (replay+lwf, class-incremental):\n  resumed:       {last(resumed)}"
          f"\n  uninterrupted: {last(whole)}\n  same final accuracy: {last(resumed) == last(whole)}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenario", choices=["task", "domain", "class", "permuted", "all"], default="all")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--skip-extras", action="store_true", help="only the accuracy tables")
    p.add_argument("--rss-only", action="store_true", help="only the per-method peak RSS table")
    a = p.parse_args()
    methods = a.methods.split(",")
    if a.rss_only:
        rss_per_method(methods, a.epochs)
        return 0
    print(f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}; model 784-400-400-out MLP, Adam 1e-3, "
          "batch 32 new samples (+32 replayed), 4000 train / 1000 test images")
    scenarios = ["class", "task", "domain", "permuted"] if a.scenario == "all" else [a.scenario]
    for s in scenarios:
        table("permuted" if s == "permuted" else "split", "domain" if s == "permuted" else s, methods, a.epochs)
    print(f"\npeak RSS of the continual runs above: {peak_rss_mb():.0f} MB")
    if not a.skip_extras:
        replay_memory()
        rss_per_method(methods, a.epochs)
        r = personalize()
        print(f"\npersonalization (head only, 100 user samples, 200 replayed originals): user accuracy "
              f"{r.user_before * 100:.1f}% -> {r.user_after * 100:.1f}%, original {r.original_before * 100:.1f}% -> "
              f"{r.original_after * 100:.1f}% (margin {r.margin * 100:.0f} points: {'ok' if r.ok else 'MISS'})")
        kill_and_resume(a.epochs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
