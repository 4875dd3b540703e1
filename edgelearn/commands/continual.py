"""`edgelearn continual --benchmark split-mnist --scenario class --strategy replay+lwf`.

Runs one continual-learning method over a benchmark stream on the offline MNIST images and
prints the accuracy matrix, average accuracy and forgetting. With ``--checkpoint`` the whole
continual state is saved every ``--checkpoint-every`` steps and at each task's end; rerunning
the same command after a crash or a kill resumes where the file left off.
"""
from __future__ import annotations

NAME = "continual"
HELP = "continual learning over a task stream (Split-/Permuted-MNIST): replay, EWC, LwF, combinations"


# as training.continual_benchmarks.SCENARIOS / METHODS, spelled out so that building the CLI's
# parser does not import the training stack (every `edgelearn` command builds every parser)
SCENARIOS = ("task", "domain", "class")
METHODS = ("finetune", "ewc", "online-ewc", "lwf", "replay", "replay+lwf", "joint")


def add_arguments(p) -> None:
    p.add_argument("--benchmark", choices=["split-mnist", "permuted-mnist"], default="split-mnist")
    p.add_argument("--scenario", choices=SCENARIOS, default="class",
                   help="split-mnist: task-, domain- or class-incremental (permuted-mnist is domain)")
    p.add_argument("--strategy", default="replay+lwf",
                   help=f"one of {', '.join(METHODS)}, or strategies joined by '+' (e.g. replay+ewc)")
    p.add_argument("--epochs", type=int, default=10, help="epochs per task")
    p.add_argument("--batch-size", type=int, default=32, help="new samples per step (replay adds as many)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--replay-samples", type=int, default=500, help="replay budget in samples (stored as bytes)")
    p.add_argument("--codec", choices=["uint8", "fp16", "fp32"], default="uint8", help="replay storage")
    p.add_argument("--hidden", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", help="continual checkpoint file; resumed from if it exists")
    p.add_argument("--checkpoint-every", type=int, default=0, metavar="STEPS")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps in total (resume later)")


def run(args) -> int:
    from inference.rss import peak_rss_mb
    from training.continual_benchmarks import permuted_mnist, run as run_method, split_mnist

    bench = permuted_mnist(seed=args.seed) if args.benchmark == "permuted-mnist" else split_mnist(args.scenario, seed=args.seed)
    print(f"{bench.name} ({bench.scenario}-incremental), {len(bench.tasks)} tasks, strategy {args.strategy}")

    def report(i: int, acc) -> None:
        print(f"after task {i + 1}: " + " ".join(f"{a * 100:5.1f}" for a in acc[i][:i + 1]), flush=True)

    result = run_method(bench, args.strategy, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                        seed=args.seed, replay_samples=args.replay_samples, codec=args.codec, hidden=args.hidden,
                        checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every,
                        max_steps=args.max_steps, on_task=report)
    if result is None:
        print(f"stopped at --max-steps {args.max_steps}; state saved in {args.checkpoint}")
        return 0
    print(f"average accuracy {result.average_accuracy * 100:.2f}%  average forgetting {result.forgetting * 100:.2f}%")
    print("memory: " + ", ".join(f"{k} {v / 1024:.1f} KiB" for k, v in result.memory.items())
          + f"; peak RSS {peak_rss_mb():.1f} MB; {result.seconds:.1f} s")
    return 0
