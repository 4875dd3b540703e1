"""The edgelearn CLI as a user calls it."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgelearn.cli import main


@pytest.mark.slow
def test_default_job_is_the_federated_simulation(tmp_path, monkeypatch, capsys):
    """The Quickstart's first command: `edgelearn` alone runs the embedded digits scenario."""
    monkeypatch.chdir(tmp_path)
    assert main([]) == 0
    out = capsys.readouterr().out
    results = json.loads((tmp_path / "results" / "digits-default" / "results.json").read_text())
    history = results["runs"][0]["history"]
    assert results["scenario"]["num_clients"] == 20 and results["runs"][0]["codec"] == "topk:0.01+q8"
    assert history[-1]["accuracy"] > 0.85 and history[-1]["cum_uplink_bytes"] > 0
    assert (tmp_path / "results" / "digits-default" / "accuracy_vs_round.png").exists()
    assert "final acc" in out


def test_demo_builds_and_runs_a_model(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "edgelearn-digits.onnx").exists()
    accuracy = float(out.split("held-out digits: ")[1].split("%")[0])
    assert accuracy > 90.0


def test_info_reports_ops_params_and_flops(squeezenet_path, capsys):
    assert main(["info", str(squeezenet_path)]) == 0
    out = capsys.readouterr().out
    assert "Conv" in out and "parameters:" in out
    flops = int(out.split("FLOPs at batch 1: ")[1].split()[0].replace(",", ""))
    assert flops > 100_000_000  # squeezenet 1.0 is ~0.8 GFLOPs at 224x224


def test_run_with_npy_inputs(tmp_path, mlp_path, capsys):
    x = tmp_path / "x.npy"
    np.save(x, np.ones((3, 8), np.float32))
    out_file = tmp_path / "out.npz"
    assert main(["run", str(mlp_path), "--input", f"x={x}", "--output", str(out_file)]) == 0
    saved = np.load(out_file)
    np.testing.assert_allclose(saved["y"].sum(1), 1.0, rtol=1e-5)


def test_run_reports_bad_input_cleanly(tmp_path, mlp_path, capsys):
    assert main(["run", str(mlp_path), "--input", f"x={tmp_path / 'missing.npy'}"]) == 2
    assert "does not exist" in capsys.readouterr().err
