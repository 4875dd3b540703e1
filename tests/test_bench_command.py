"""`edgelearn bench`: every promised part of its report for a small CNN, and clear errors."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from edgelearn.cli import main
from inference.builder import GraphBuilder
from inference.onnx_export import save_model


@pytest.fixture(scope="module")
def cnn_path(tmp_path_factory):
    rng = np.random.default_rng(0)
    b = GraphBuilder("cnn", opset=17)
    x = b.input("x", np.float32, ["n", 3, 16, 16])
    w = b.const((rng.standard_normal((8, 3, 3, 3)) * 0.2).astype(np.float32))
    h = b.op("Relu", b.op("Conv", x, w, b.const(np.zeros(8, np.float32)), pads=[1, 1, 1, 1]))
    h = b.op("MaxPool", h, kernel_shape=[2, 2], strides=[2, 2])
    h = b.op("Flatten", b.op("GlobalAveragePool", h))
    b.op("Gemm", h, b.const(rng.standard_normal((8, 4)).astype(np.float32)), outputs=["y"])
    b.output("y", np.float32, ["n", 4])
    path = tmp_path_factory.mktemp("bench") / "cnn.onnx"
    save_model(b.build(), str(path))
    return str(path)


def test_reports_latency_peers_memory_and_trace(cnn_path, tmp_path, capsys):
    trace = tmp_path / "trace.json"
    assert main(["bench", cnn_path, "--batch", "1,4", "--threads", "1", "--compare", "onnxruntime,reference",
                 "--repeat", "3", "--trace", str(trace), "--no-cold-start"]) == 0
    out = capsys.readouterr().out
    for batch in (1, 4):
        for runtime in ("edgelearn", "onnxruntime", "reference"):
            row = re.search(rf"^\s+{batch}\s+1 {runtime}\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)x\s*(.*)$", out,
                            re.MULTILINE)
            assert row, f"no row for batch {batch} {runtime}:\n{out}"
            median, p90, per_second = (float(row.group(i)) for i in (1, 2, 3))
            assert 0 < median <= p90 and per_second > 0
            if runtime != "edgelearn":
                assert float(row.group(5).split()[0]) < 1e-4 and row.group(5).split()[1] == "ok"
        plan = re.search(rf"^batch {batch}: planned activation memory ([\d.]+) MiB vs ([\d.]+) MiB", out, re.MULTILINE)
        assert plan and 0 < float(plan.group(1)) <= float(plan.group(2))
    assert re.search(r"^peak RSS: \d+ MB", out, re.MULTILINE)
    # the last runner (batch 4) replays its runs from the third on; the report says so
    assert re.search(r"^kernel replay \(the last runner\): x \[4, 3, 16, 16\] at 1 thread\(s\): replayed \(\d+ runs\)",
                     out, re.MULTILINE), out
    events = json.loads(trace.read_text())["traceEvents"]
    assert events and all(e["ph"] == "X" and e["dur"] >= 0 for e in events)
    assert {"Conv", "MaxPool", "Gemm"} <= {e["name"].split("_")[0] for e in events}  # the model's nodes, by name
    assert "edgelearn::FusedConvNHWC" in {e["cat"] for e in events}  # as optimized: what ran


def test_cold_start_is_reported_with_and_without_a_warm_cache(cnn_path, capsys):
    assert main(["bench", cnn_path, "--compare", "", "--repeat", "2"]) == 0
    out = capsys.readouterr().out
    cold = re.search(r"warm numba cache ([\d.]+) s \(([\d.]+) s with only the core dependencies importable\), "
                     r"empty numba cache \(compiling\) ([\d.]+) s; peak RSS of that run alone (\d+) MB", out)
    assert cold, out
    warm, core, empty, rss = (float(cold.group(i)) for i in (1, 2, 3, 4))
    assert 0 < warm < empty and 0 < core < empty
    whole = float(re.search(r"^peak RSS: (\d+) MB", out, re.MULTILINE).group(1))
    assert 50 < rss <= whole + 50  # Python, numpy and numba at least; about this process's own at most


@pytest.mark.parametrize("argv, message", [
    (["--compare", "tensorflow"], "--compare: unknown peer 'tensorflow'"),
    (["--batch", "0"], "--batch needs positive integers"),
    (["--threads", "two"], "--threads takes comma-separated integers"),
])
def test_bad_arguments_are_named(cnn_path, capsys, argv, message):
    assert main(["bench", cnn_path, *argv, "--no-cold-start"]) == 2
    assert message in capsys.readouterr().err
