"""Joint inference for new rows: parties' saved ONNX models, PSI alignment, the predict-vertical CLI."""
from __future__ import annotations

import csv
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from federated.vertical_data import PartyData, breast_parties, read_party_csv, write_party_csv
from federated.vertical_errors import PartyDataError, VerticalError
from federated.vertical_model import SplitModel, bottom_path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`simulate-vertical --model-dir` on the first 450 people; the other 119 are new (host lacks 9)."""
    from edgelearn.cli import main

    tmp = tmp_path_factory.mktemp("vfl")
    guest, host = breast_parties()
    old, new = guest.ids[:450], guest.ids[450:]
    files = {}
    for tag, g_ids, h_ids in (("train", old, old), ("new", new, new[9:])):
        files[tag] = {"guest": write_party_csv(tmp / f"{tag}_guest.csv", guest.take(g_ids)),
                      "host": write_party_csv(tmp / f"{tag}_host.csv", host.take(h_ids))}
    code = main(["simulate-vertical", "--party", f"guest={files['train']['guest']}", "--party",
                 f"host={files['train']['host']}", "--label-party", "guest", "--folds", "0", "--epochs", "8",
                 "--codec", "q8+deflate", "--engine", "inprocess", "--model-dir", str(tmp / "model"),
                 "--out", str(tmp / "out"), "--no-plots", "--no-progress"])
    assert code == 0
    return tmp, files, json.loads((tmp / "out" / "results.json").read_text()), guest


def test_every_party_saves_checked_onnx_models(trained):
    tmp, _, res, _ = trained
    assert sorted(res["saved"]) == ["guest", "host"]
    assert any(f.endswith("top.onnx") for f in res["saved"]["guest"])
    assert not any(f.endswith("top.onnx") for f in res["saved"]["host"])  # the top stays at the label party
    for name in ("guest.bottom.onnx", "host.bottom.onnx", "top.onnx"):
        onnx.checker.check_model(onnx.load(tmp / "model" / name), full_check=True)


def test_predict_vertical_cli_aligns_new_rows_and_matches_onnxruntime(trained, capsys):
    from edgelearn.cli import main

    tmp, files, _, guest = trained
    out = tmp / "pred.csv"
    code = main(["predict-vertical", "--model-dir", str(tmp / "model"), "--party", f"guest={files['new']['guest']}",
                 "--party", f"host={files['new']['host']}", "--label-column", "y", "-o", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and "110 rows aligned by psi" in printed and "guest 9" in printed
    with out.open() as f:
        rows = list(csv.DictReader(f))
    ids = [r["id"] for r in rows]
    assert ids == guest.ids[459:] and {r["prediction"] for r in rows} <= {"0", "1"}
    proba = np.array([float(r["probability"]) for r in rows])
    from sklearn.metrics import roc_auc_score

    y = guest.take(ids).y
    assert roc_auc_score(y, proba) > 0.97 and ((proba > 0.5) == y).mean() > 0.9
    # the same joint prediction computed by onnxruntime from the saved files (independent runtime)
    model = SplitModel(tmp / "model")
    embs = []
    for party in (read_party_csv(files["new"]["guest"], "guest"), read_party_csv(files["new"]["host"], "host")):
        s = ort.InferenceSession(str(bottom_path(tmp / "model", party.name)))
        embs.append(s.run(None, {"input": model.columns(party.take(ids))})[0])
    logits = ort.InferenceSession(str(tmp / "model" / "top.onnx")).run(None, {"emb": np.concatenate(embs, 1)})[0]
    assert np.allclose(proba, 1 / (1 + np.exp(-logits[:, 0])), atol=1e-5)


def test_plain_id_join_gives_the_same_rows(trained, tmp_path):
    from edgelearn.cli import main

    tmp, files, _, _ = trained
    argv = ["predict-vertical", "--model-dir", str(tmp / "model"), "--party", f"guest={files['new']['guest']}",
            "--party", f"host={files['new']['host']}"]
    assert main(argv + ["--no-psi", "-o", str(tmp_path / "a.csv")]) == 0
    assert main(argv + ["-o", str(tmp_path / "b.csv")]) == 0
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()


def test_bad_inputs_name_the_party_and_columns(trained, tmp_path):
    tmp, files, _, _ = trained
    model = SplitModel(tmp / "model")
    g = read_party_csv(files["new"]["guest"], "guest")
    h = read_party_csv(files["new"]["host"], "host")
    with pytest.raises(VerticalError, match=r"missing data for \['host'\]"):
        model.predict({"guest": g})
    short = PartyData("host", h.ids, h.x[:, 1:], h.features[1:])
    with pytest.raises(PartyDataError, match=f"party 'host': columns \\['{h.features[0]}'\\]"):
        model.predict({"guest": g, "host": short})
    with pytest.raises(VerticalError, match="split_model.json"):
        SplitModel(tmp_path)
