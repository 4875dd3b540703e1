"""Vertical FL: party CSVs, split-learning maths, the Flower protocol, and its failure modes."""
from __future__ import annotations

import numpy as np
import pytest

from federated.inprocess import InProcessGrid
from federated.vertical import (Bottom, Top, VerticalConfig, decode_tensor, encode_tensor,
                                load_party)
from federated.vertical_apps import make_vertical_client_app, run_inprocess
from federated.vertical_data import PartyData, fate_breast, read_party_csv, write_party_csv
from federated.vertical_errors import AlignmentError, MalformedTensor, PartyDataError, PartyDropped
from federated.vertical_server import VerticalServer

FAST = dict(dataset="breast", epochs=2, folds=5, run_folds=1, batch_size=64)


# --- data ---------------------------------------------------------------------------------------

def test_fate_breast_split_and_csv_roundtrip(tmp_path):
    paths = fate_breast(tmp_path)
    guest = read_party_csv(paths["guest"], "guest", label_column="y")
    host = read_party_csv(paths["host"], "host")
    assert guest.x.shape == (569, 10) and host.x.shape == (569, 20) and host.y is None
    assert all(f.startswith("worst") for f in guest.features)
    assert all(f.startswith("mean") or f.endswith("error") for f in host.features)
    assert abs(float(guest.x.mean())) < 1e-3 and set(np.unique(guest.y)) == {0, 1}


def test_duplicate_and_bad_rows_are_reported(tmp_path):
    with pytest.raises(PartyDataError, match="duplicate ids"):
        PartyData("p", ["a", "b", "a"], np.zeros((3, 2), np.float32), ["x", "y"])
    p = tmp_path / "p.csv"
    p.write_text("id,f1\na,1\nb,oops\n")
    with pytest.raises(PartyDataError, match="non-numeric"):
        read_party_csv(p)
    with pytest.raises(PartyDataError, match="label column"):
        read_party_csv(tmp_path / "p.csv", label_column="y")
    ok = PartyData("p", ["a", "b"], np.ones((2, 1), np.float32), ["f"])
    with pytest.raises(AlignmentError, match="no rows"):
        ok.take(["a", "zz"])
    write_party_csv(tmp_path / "q.csv", ok)
    assert read_party_csv(tmp_path / "q.csv").ids == ["a", "b"]


# --- maths ----------------------------------------------------------------------------------------

def test_top_gives_the_true_embedding_gradient():
    cfg = VerticalConfig(top_hidden=[5], optimizer="sgd", lr=1e-9)
    top = Top(6, 2, cfg, seed=1)
    rng = np.random.default_rng(0)
    emb, y = rng.standard_normal((8, 6)).astype(np.float32), rng.integers(0, 2, 8)
    loss, grad = top.step(emb, y)

    def f(e):
        return top._grad.run({"emb": e, top.tg.target: top.target(y)})[0]

    eps, num = 1e-2, np.zeros_like(emb)
    for i in np.ndindex(emb.shape):
        d = np.zeros_like(emb)
        d[i] = eps
        num[i] = (f(emb + d) - f(emb - d)) / (2 * eps)
    assert np.allclose(grad, num, atol=2e-3) and np.isclose(loss, f(emb), atol=1e-5)


def test_bottom_learns_from_upstream_gradient_by_the_chain_rule():
    cfg = VerticalConfig(optimizer="sgd", lr=0.1, embed=3)
    bottom = Bottom(4, cfg, seed=0)
    w_name = next(n for n, a in bottom.tg.parameters().items() if a.ndim == 2)
    w0 = bottom.tg.parameters()[w_name].copy()
    rng = np.random.default_rng(1)
    x, g = rng.standard_normal((5, 4)).astype(np.float32), rng.standard_normal((5, 3)).astype(np.float32)
    bottom.backward(x, g)
    # emb = x W^T + b  =>  dL/dW = g^T x ; SGD's first momentum step moves by lr * grad
    assert np.allclose(bottom.tg.parameters()[w_name], w0 - 0.1 * g.T @ x, atol=1e-5)


def test_tensor_payloads_are_checked():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert np.allclose(decode_tensor(encode_tensor(x, "q8", [0]), (3, 4), "t"), x, atol=0.1)
    with pytest.raises(MalformedTensor, match="t:"):
        decode_tensor(encode_tensor(x, "fp32", [0]), (4, 3), "t")
    with pytest.raises(MalformedTensor):
        decode_tensor(b"garbage", (3, 4), "t")
    nan = encode_tensor(x, "fp32", [0])[:-4] + np.float32(np.nan).tobytes()
    with pytest.raises(MalformedTensor, match="non-finite"):  # the codec's strict decoder refuses it
        decode_tensor(nan, (3, 4), "t")


# --- protocol -------------------------------------------------------------------------------------

def test_inprocess_run_aligns_by_psi_trains_and_compresses(tmp_path):
    paths = fate_breast(tmp_path, missing=0.1)
    cfg = VerticalConfig(**{**FAST, "dataset": "csv"}, compare=["fp32", "q8"],
                         parties=[{"name": "guest", "csv": str(paths["guest"]), "label_column": "y"},
                                  {"name": "host", "csv": str(paths["host"])}])
    shared = set(read_party_csv(paths["guest"]).ids) & set(read_party_csv(paths["host"]).ids)
    epochs: list[dict] = []
    res = run_inprocess(cfg, on_epoch=epochs.append)
    assert res["alignment"]["aligned"] == len(shared) < 569
    assert len(epochs) == 4 and res["runs"]["fp32"]["mean"]["auc"] > 0.97
    fp, q8 = (res["runs"][c]["bytes_per_epoch"] for c in ("fp32", "q8"))
    assert fp["emb_bytes"] > 3 * q8["emb_bytes"] and fp["grad_bytes"] > 3 * q8["grad_bytes"]
    assert abs(res["runs"]["q8"]["mean"]["auc"] - res["runs"]["fp32"]["mean"]["auc"]) < 0.01


def test_misaligned_ids_without_psi_are_reported():
    with pytest.raises(AlignmentError, match="misaligned"):
        run_inprocess(VerticalConfig(**FAST, missing=0.05, psi=False))


def test_dropout_gives_clear_error_and_resumes_to_the_same_model():
    cfg = VerticalConfig(**FAST)
    reference = run_inprocess(cfg)["runs"]["fp32"]["folds"][0]
    grid = InProcessGrid(make_vertical_client_app(cfg.replace(fail_at="host:1:2")), 2)
    server = VerticalServer(grid, cfg)
    server.align()
    server.setup()
    with pytest.raises(PartyDropped, match="'host' dropped out at epoch 1, step 2") as e:
        server.fit("fp32", 0)
    assert e.value.resume["epoch"] == 1 and len(e.value.resume["history"]) == 1
    resumed = server.fit("fp32", 0, resume=e.value.resume)
    assert [r["auc"] for r in resumed] == [r["auc"] for r in reference]
    assert [r["loss"] for r in resumed] == pytest.approx([r["loss"] for r in reference])


def test_malformed_embedding_is_rejected_by_the_label_party():
    cfg = VerticalConfig(**FAST, psi=False)
    grid = InProcessGrid(make_vertical_client_app(cfg), 2)
    server = VerticalServer(grid, cfg)
    server.align()
    server.setup()
    server.to_all({p: {"op": "init"} for p in cfg.party_names}, "query")
    bad = encode_tensor(np.zeros((3, 3), np.float32), "fp32", [0])
    with pytest.raises(MalformedTensor, match="embedding from 'host'"):
        server.to("guest", {"op": "step", "codec": "fp32", "fold": 0, "epoch": 0, "step": 0, "emb:host": bad})


def test_joint_model_beats_either_party_on_digits_halves():
    cfg = VerticalConfig(dataset="digits", folds=1, epochs=3, embed=8, bottom_hidden=[32], lr=0.01)
    left, right = (load_party(cfg, p) for p in ("left", "right"))
    from federated.vertical import train_local

    joint = train_local(cfg, [left, right])[-1]["accuracy"]
    alone = train_local(cfg, [left])[-1]["accuracy"]
    assert joint > alone + 0.03 and joint > 0.9


@pytest.mark.slow
def test_flower_simulation_engine_runs_the_apps():
    from federated.vertical_apps import simulate_vertical

    res = simulate_vertical(VerticalConfig(**{**FAST, "epochs": 1}))
    assert res["alignment"]["aligned"] == 569 and res["runs"]["fp32"]["mean"]["auc"] > 0.95


def test_cli_party_files_form(tmp_path, capsys):
    from edgelearn.cli import main

    paths = fate_breast(tmp_path / "data", missing=0.05)
    code = main(["simulate-vertical", "--party", f"guest={paths['guest']}", "--party", f"host={paths['host']}",
                 "--label-party", "guest", "--epochs", "1", "--run-folds", "1", "--engine", "inprocess",
                 "--no-progress", "--no-plots", "--out", str(tmp_path / "out")])
    assert code == 0 and (tmp_path / "out" / "results.json").exists()
    assert "aligned samples (PSI)" in capsys.readouterr().out
    assert main(["simulate-vertical", "--party", "guest", "--label-party", "guest"]) == 2


def test_three_parties_align_on_the_common_intersection(tmp_path):
    from federated.vertical_data import breast_parties

    guest, host = breast_parties(missing=0.05)
    a = PartyData("mean", host.ids, host.x[:, :10], host.features[:10])
    b = PartyData("err", host.ids[7:], host.x[7:, 10:], host.features[10:])
    paths = {p.name: write_party_csv(tmp_path / f"{p.name}.csv", p) for p in (guest, a, b)}
    cfg = VerticalConfig(**{**FAST, "dataset": "csv", "epochs": 1},
                         parties=[{"name": n, "csv": str(p), "label_column": "y" if n == "guest" else ""}
                                  for n, p in paths.items()])
    res = run_inprocess(cfg)
    assert res["alignment"]["aligned"] == len(set(guest.ids) & set(host.ids[7:]))
    assert res["runs"]["fp32"]["mean"]["auc"] > 0.9
