"""`edgelearn deploy`: the same federated apps on Flower's deployment engine, on this machine.

Starts a real `flower-superlink` and one `flower-supernode` per client on loopback, submits the
apps with `flwr run`, prints the results table, writes results.json, and stops every process it
started. Same scenario options as `edgelearn simulate`.
"""
from __future__ import annotations

from edgelearn.commands.simulate import add_arguments as _scenario_arguments, scenario_from_args

NAME = "deploy"
HELP = "run the federated apps on a local Flower SuperLink + SuperNodes (real processes)"


def add_arguments(p) -> None:
    _scenario_arguments(p)
    p.add_argument("--tls", action="store_true", help="TLS on every connection (throw-away CA and certificate)")
    p.add_argument("--auth", action="store_true", help="SuperNode authentication (key pair per node; implies --tls)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the run's results")
    p.add_argument("--keep-logs", action="store_true", help="keep FLWR_HOME with the process logs")


def run(args) -> int:
    from federated.deploy import deploy
    from federated.server_app import write_results
    from simulations.report import format_table, plot_results

    sc = scenario_from_args(args)
    out = args.out or f"results/{sc.name}-deploy"
    print(f"deploying {sc.name}: 1 SuperLink + {sc.num_clients} SuperNodes on 127.0.0.1"
          f"{' (TLS + SuperNode auth)' if args.auth else ' (TLS)' if args.tls else ''}, {sc.num_rounds} rounds ...", flush=True)
    results = deploy(sc, timeout=args.timeout, tls=args.tls, auth=args.auth, keep_home=args.keep_logs, verbose=args.verbose)
    write_results(results, f"{out}/results.json")
    if not args.no_plots:
        plot_results(results, out)
    print(format_table(results))
    print(f"results: {out}/results.json")
    return 0
