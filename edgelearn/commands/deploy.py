"""`edgelearn deploy`: the same federated apps on Flower's deployment engine, on this machine.

Starts a real `flower-superlink` and one `flower-supernode` per client on loopback, submits the
apps with `flwr run`, prints the results table, writes results.json, and stops every process it
started. Same scenario options as `edgelearn simulate`.

    edgelearn deploy --vertical --config breast_vertical --epochs 2 --folds 1 --model-dir model/
    edgelearn deploy --vertical --party bank=bank.csv --party shop=shop.csv --label-party bank

`--vertical` deploys the vertical-FL apps (federated/app_vertical) instead: one SuperNode per
party, told its party name and CSV by its node config.
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
    _vertical_arguments(p)


def _vertical_arguments(p) -> None:
    """`--vertical`: the vertical-FL apps instead (one SuperNode per party; see run_vertical)."""
    g = p.add_argument_group("vertical FL (--vertical; --config then names a vertical TOML)")
    g.add_argument("--vertical", action="store_true", help="deploy the vertical-FL (PSI + split learning) apps")
    g.add_argument("--party", action="append", default=[], metavar="NAME=PATH.csv",
                   help="a party and its CSV, given to that party's SuperNode only (repeat per party)")
    g.add_argument("--label-party", help="the party holding the label column")
    g.add_argument("--label-column", default="y", help="label column of the label party's CSV (default y)")
    g.add_argument("--epochs", type=int)
    g.add_argument("--folds", type=int, help="k-fold CV (1 = holdout, 0 = train = test)")
    g.add_argument("--model-dir", help="every party saves its ONNX models here (for predict-vertical)")


def run(args) -> int:
    if getattr(args, "vertical", False):
        return run_vertical(args)
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


def run_vertical(args) -> int:
    """The vertical scenario on a local SuperLink + one SuperNode per party; CSV paths go only in
    each party's node config, never in the run config the SuperLink sees."""
    from dataclasses import asdict

    from edgelearn.commands.simulate_vertical import config_from_args
    from federated.vertical_deploy import deploy_vertical
    from simulations.vertical_report import format_table, write_results

    cfg = config_from_args(args)
    csvs = {p.name: p.csv for p in cfg.parties if p.csv}
    cfg = cfg.replace(parties=[{**asdict(p), "csv": ""} for p in cfg.parties])
    out = args.out or f"results/{cfg.name}-deploy"
    print(f"deploying {cfg.name}: 1 SuperLink + {len(cfg.parties)} SuperNodes (one per party) on 127.0.0.1 ...",
          flush=True)
    results = deploy_vertical(cfg, csvs, model_dir=args.model_dir, timeout=args.timeout, tls=args.tls,
                              auth=args.auth, keep_home=args.keep_logs, verbose=args.verbose)
    paths = write_results(results, out, plots=not args.no_plots)
    print(format_table(results))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
