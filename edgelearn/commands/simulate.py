"""`edgelearn simulate`: federated rounds of on-device training on Flower's simulation engine.

With no arguments: the embedded default (sklearn digits, 20 clients, Dirichlet 0.5, 10 clients a
round, top-1% + error feedback + 8-bit updates). Prints a table, writes results.json and plots.
"""
from __future__ import annotations

NAME = "simulate"
HELP = "simulate federated learning (Flower simulation engine); no arguments: digits default"


def add_arguments(p) -> None:
    p.add_argument("--config", help="scenario TOML (e.g. simulations/codecs.toml or a shipped name: "
                                    "digits, codecs, mnist_cnn)")
    p.add_argument("--data", help=".npz with x_train, y_train, x_test, y_test (overrides the scenario's data)")
    p.add_argument("--rounds", type=int, help="number of rounds")
    p.add_argument("--clients", type=int, help="number of clients")
    p.add_argument("--per-round", type=int, help="clients sampled each round")
    p.add_argument("--codec", help="uplink codec, e.g. fp32, q8, topk:0.01+q8")
    p.add_argument("--compare", help="comma-separated codecs to compare, e.g. fp32,topk:0.01+q8")
    p.add_argument("--strategy", help="fedavg, fedavgm, fedprox, fedadam, fedyogi, fedadagrad, "
                                      "fedmedian, fedtrimmedavg, krum, multikrum, bulyan")
    p.add_argument("--out", help="output directory (default: results/<scenario name>)")
    p.add_argument("--no-plots", action="store_true", help="skip the matplotlib plots")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--verbose", action="store_true", help="show Flower's own logging")


def scenario_from_args(args):
    """The scenario the arguments describe (shared with `edgelearn deploy`)."""
    from federated.scenario import Scenario
    from simulations import scenario_path

    sc = Scenario.from_toml(scenario_path(args.config)) if args.config else Scenario()
    changes = {}
    for arg, fld in (("data", "dataset"), ("rounds", "num_rounds"), ("clients", "num_clients"),
                     ("per_round", "clients_per_round"), ("codec", "codec"), ("strategy", "strategy")):
        if getattr(args, arg, None) is not None:
            changes[fld] = getattr(args, arg)
    if getattr(args, "compare", None):
        changes["compare"] = [c.strip() for c in args.compare.split(",") if c.strip()]
    if "num_clients" in changes and "clients_per_round" not in changes:
        changes["clients_per_round"] = min(sc.clients_per_round, changes["num_clients"])
    return sc.replace(**changes) if changes else sc


def run(args) -> int:
    from simulations import run_scenario
    from simulations.report import format_table

    sc = scenario_from_args(args)
    out = args.out or f"results/{sc.name}"
    results = run_scenario(sc, out, progress=not args.no_progress, plots=not args.no_plots,
                           verbose=args.verbose)
    print(format_table(results))
    print(f"results: {out}/results.json" + ("" if args.no_plots else
                                             f"; plots: {out}/accuracy_vs_round.png, {out}/accuracy_vs_uplink.png"))
    return 0
