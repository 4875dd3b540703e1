"""`edgelearn predict-vertical`: joint inference for new rows with a saved split model.

    edgelearn simulate-vertical --config simulations/breast_vertical.toml --folds 1 --model-dir model/
    edgelearn predict-vertical --model-dir model/ --party guest=new_guest.csv --party host=new_host.csv \\
        -o predictions.csv

Each party's CSV holds an id column and (at least) the feature columns its bottom model was
trained on. The rows every party has are aligned by PSI (default; --no-psi: a plain id join),
each party's bottom model embeds its own columns, the label party's top model predicts, and
id,prediction,probability goes to the output CSV (rows some party lacks are counted, not guessed).
With --label-column naming the label party's label column, accuracy (and AUC) are printed too.
"""
from __future__ import annotations

NAME = "predict-vertical"
HELP = "joint inference for new rows across the parties with a saved vertical (split) model"


def add_arguments(p) -> None:
    p.add_argument("--model-dir", required=True, help="where simulate-vertical --model-dir saved the split model")
    p.add_argument("--party", action="append", default=[], metavar="NAME=PATH.csv",
                   help="a party and its CSV of new rows (repeat for each party)")
    p.add_argument("--id-column", default="id", help="id column of every CSV (default id)")
    p.add_argument("--label-column", help="label party's label column, if the new rows have labels (scores them)")
    p.add_argument("--no-psi", action="store_true", help="align by a plain id join instead of PSI")
    p.add_argument("-o", "--out", default="predictions.csv", help="output CSV (default predictions.csv)")


def run(args) -> int:
    from federated.vertical import metrics
    from federated.vertical_data import read_party_csv
    from federated.vertical_errors import VerticalError
    from federated.vertical_model import SplitModel, write_predictions

    model = SplitModel(args.model_dir)
    parties = {}
    for item in args.party:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise VerticalError(f"--party expects NAME=PATH.csv, got {item!r}")
        label = args.label_column if name == model.label_party else None
        parties[name] = read_party_csv(path, name, args.id_column, label)
    al, proba = model.predict(parties, psi=not args.no_psi)
    out = write_predictions(args.out, al.ids, proba, args.id_column)
    dropped = ", ".join(f"{p} {n}" for p, n in al.dropped.items() if n)
    print(f"{len(al.ids)} rows aligned by {al.method} across {', '.join(model.parties)}"
          f"{f' (rows not held by every party, skipped: {dropped})' if dropped else ''}")
    lab = parties[model.label_party]
    if lab.y is not None:
        scores = metrics(proba, lab.take(al.ids).y)
        print("  ".join(f"{k} {v:.4f}" for k, v in scores.items()))
    print(f"predictions: {out}")
    return 0
