"""`edgelearn simulate-vertical`: split learning across parties holding different features.

    edgelearn simulate-vertical --config simulations/breast_vertical.toml
    edgelearn simulate-vertical --party bank=bank.csv --party shop=shop.csv --label-party bank

Each party's CSV has an id column and its features (the label party also a label column); the
parties align their rows by private set intersection, then train on Flower's simulation engine.
Writes results.json and plots of the metric vs epoch and vs bytes; with --model-dir every party
also saves its models (ONNX) for joint inference on new rows (`edgelearn predict-vertical`).
"""
from __future__ import annotations

from pathlib import Path

NAME = "simulate-vertical"
HELP = "vertical federated learning (PSI + split learning) on Flower's simulation engine"


def add_arguments(p) -> None:
    p.add_argument("--config", help="scenario TOML (e.g. simulations/breast_vertical.toml, or a shipped "
                                    "name: breast_vertical, digits_vertical)")
    p.add_argument("--party", action="append", default=[], metavar="NAME=PATH.csv",
                   help="a party and its CSV (repeat for each party)")
    p.add_argument("--label-party", help="the party holding the label column")
    p.add_argument("--label-column", default="y", help="label column of the label party's CSV (default y)")
    p.add_argument("--id-column", help="id column of every CSV (default id)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--folds", type=int, help="k-fold CV (1 = holdout, 0 = train = test)")
    p.add_argument("--run-folds", type=int, help="run only the first N folds")
    p.add_argument("--codec", help="codec of embeddings and gradients, e.g. fp32, fp16, q8")
    p.add_argument("--compare", help="comma-separated codecs to compare, e.g. fp32,q8")
    p.add_argument("--engine", choices=["simulation", "inprocess"], default="simulation",
                   help="Flower's simulation engine (Ray), or the same apps in this process")
    p.add_argument("--model-dir", help="after training, every party saves its ONNX models here "
                                        "(for `edgelearn predict-vertical`)")
    p.add_argument("--out", help="output directory (default: results/<name>)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--verbose", action="store_true", help="show Flower's own logging")


def config_from_args(args):
    from federated.vertical import VerticalConfig
    from federated.vertical_errors import VerticalError
    from simulations import scenario_path

    changes: dict = {}
    if args.party:
        parties = []
        for item in args.party:
            name, sep, path = item.partition("=")
            if not sep or not name or not path:
                raise VerticalError(f"--party expects NAME=PATH.csv, got {item!r}")
            parties.append({"name": name, "csv": path,
                            "label_column": args.label_column if name == args.label_party else ""})
        if args.label_party not in [p["name"] for p in parties]:
            raise VerticalError("--label-party must name one of the --party entries")
        changes.update(dataset="csv", parties=parties, label_party=args.label_party, name="vertical")
    for arg, fld in (("epochs", "epochs"), ("folds", "folds"), ("run_folds", "run_folds"), ("codec", "codec"),
                     ("id_column", "id_column"), ("model_dir", "model_dir")):
        if getattr(args, arg, None) is not None:
            changes[fld] = getattr(args, arg)
    if args.compare:
        changes["compare"] = [c.strip() for c in args.compare.split(",") if c.strip()]
    elif args.codec:
        changes["compare"] = []
    base = VerticalConfig.from_toml(scenario_path(args.config)) if args.config else VerticalConfig()
    return base.replace(**changes) if changes else base


def run(args) -> int:
    from federated.vertical_apps import run_inprocess, simulate_vertical
    from simulations.vertical_report import format_table, write_results

    cfg = config_from_args(args)
    bar = None
    if not args.no_progress:
        from tqdm import tqdm
        bar = tqdm(total=len(cfg.codecs) * (cfg.run_folds or max(cfg.folds, 1)) * cfg.epochs, unit="epoch",
                   dynamic_ncols=True)

    def on_epoch(rec: dict) -> None:
        if bar is not None:
            m = "auc" if "auc" in rec else "accuracy"
            bar.set_description(f"{rec['codec']:>6} fold {rec['fold']}")
            bar.set_postfix({m: f"{rec[m]:.4f}", "KB": f"{rec['cum_bytes'] / 1e3:.1f}"})
            bar.update(1)

    try:
        results = (simulate_vertical(cfg, on_epoch, verbose=args.verbose) if args.engine == "simulation"
                   else run_inprocess(cfg, on_epoch))
    finally:
        if bar is not None:
            bar.close()
    out = args.out or f"results/{cfg.name}"
    paths = write_results(results, out, plots=not args.no_plots)
    print(format_table(results))
    print("wrote " + ", ".join(str(p) for p in paths))
    if "saved" in results:
        files = ", ".join(Path(f).name for fs in results["saved"].values() for f in fs)
        print(f"split model of the last run ({cfg.codecs[-1]}, last fold) saved in {cfg.model_dir}: {files}")
    return 0
