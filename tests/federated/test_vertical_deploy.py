"""Vertical FL end to end on Flower's deployment engine: a real SuperLink and one SuperNode per party."""
from __future__ import annotations

import json
import os

import pytest

from federated.vertical import VerticalConfig, metrics
from federated.vertical_data import fate_breast, read_party_csv
from federated.vertical_deploy import deploy_vertical, node_config
from federated.vertical_errors import VerticalError
from federated.vertical_model import SplitModel


def test_node_config_names_party_file_and_model_dir(tmp_path):
    assert node_config("guest", tmp_path / "g.csv") == f"party='guest' csv='{tmp_path / 'g.csv'}'"
    with pytest.raises(VerticalError, match="single quote"):
        node_config("host", "/data/o'brien.csv")
    with pytest.raises(VerticalError, match=r"parties \['bank'\]"):
        deploy_vertical(VerticalConfig(), csvs={"bank": tmp_path / "b.csv"})
    with pytest.raises(VerticalError, match="no such CSV"):
        deploy_vertical(VerticalConfig(), csvs={"host": tmp_path / "missing.csv"})


@pytest.mark.slow
def test_edgelearn_deploy_vertical_breast_split_on_a_superlink_and_two_supernodes(tmp_path, capsys):
    """`edgelearn deploy --vertical`: PSI + split training on real Flower processes, models saved per party."""
    from edgelearn.cli import main

    paths = fate_breast(tmp_path / "data", missing=0.05)
    shared = set(read_party_csv(paths["guest"]).ids) & set(read_party_csv(paths["host"]).ids)
    # Flower 1.42 starts one ClientApp process per message, so few, large batches keep this short
    toml = tmp_path / "breast_deploy.toml"
    toml.write_text('name = "breast_deploy"\ndataset = "breast"\nepochs = 1\nfolds = 1\nbatch_size = 128\n'
                    'lr = 0.05\ncompare = ["q8+deflate"]\n')
    code = main(["deploy", "--vertical", "--config", str(toml), "--party", f"guest={paths['guest']}",
                 "--party", f"host={paths['host']}", "--label-party", "guest", "--model-dir", str(tmp_path / "model"),
                 "--out", str(tmp_path / "out"), "--no-plots"])
    assert code == 0 and "2 SuperNodes (one per party)" in capsys.readouterr().out
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["alignment"]["aligned"] == len(shared) and res["alignment"]["psi"]
    assert all(p["csv"] == "" for p in res["config"]["parties"])  # paths travelled only in node configs
    run = res["runs"]["q8+deflate"]
    assert run["mean"]["auc"] > 0.97 and run["bytes_per_epoch"]["grad_bytes"] > 0
    assert res["deployment"]["supernodes"] == 2
    for party, files in res["saved"].items():  # each party saved its own models
        assert all(os.path.exists(f) for f in files) and any(f.endswith(f"{party}.bottom.onnx") for f in files)
    # the deployed parties' saved models predict jointly, as the label party scored in the run
    parties = {p: read_party_csv(paths[p], p, label_column="y" if p == "guest" else None) for p in paths}
    al, proba = SplitModel(tmp_path / "model").predict(parties)
    assert len(al.ids) == len(shared) and metrics(proba, parties["guest"].take(al.ids).y)["auc"] > 0.97
    for name, pid in res["deployment"]["pids"].items():  # every process we started is gone
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
