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


@pytest.fixture(scope="module")
def sequence_path(tmp_path_factory):
    """A token model as exported with dynamic axes: int64 ids of (batch, sequence) into an embedding."""
    rng = np.random.default_rng(1)
    b = GraphBuilder("tokens", opset=17)
    ids = b.input("ids", np.int64, ["batch", "sequence"])
    h = b.op("Gather", b.const(rng.standard_normal((4, 16)).astype(np.float32)), ids)
    b.op("MatMul", h, b.const(rng.standard_normal((16, 8)).astype(np.float32)), outputs=["y"])
    b.output("y", np.float32, ["batch", "sequence", 8])
    path = tmp_path_factory.mktemp("bench") / "tokens.onnx"
    save_model(b.build(), str(path))
    return str(path)


def test_a_symbolic_sequence_length_is_benchmarked_at_the_size_given(sequence_path, capsys):
    assert main(["bench", sequence_path, "--batch", "2", "--dim", "sequence=48", "--repeat", "3",
                 "--no-cold-start"]) == 0
    out = capsys.readouterr().out
    assert "inputs at batch 2: ids [2, 48]" in out
    assert re.search(r"^\s+2\s+1 onnxruntime .*\dx\s+[\d.e+-]+ ok$", out, re.MULTILINE), out
    plan = re.search(r"^batch 2: planned activation memory ([\d.]+) MiB", out, re.MULTILINE)
    assert plan and float(plan.group(1)) * 2**20 >= 2 * 48 * 16 * 4  # the embedded tokens, at 48 of them
    assert "ids [2, 48] at 1 thread(s): replayed" in out


def test_an_unnamed_dim_is_sized_as_input_and_axis(tmp_path, capsys):
    b = GraphBuilder("unnamed", opset=17)
    x = b.input("x", np.float32, [1, None])
    b.op("Relu", x, outputs=["y"])
    b.output("y", np.float32)
    path = str(tmp_path / "unnamed.onnx")
    save_model(b.build(), path)
    assert main(["bench", path, "--compare", "", "--no-cold-start"]) == 2
    assert "give its size with --dim x:1=N" in capsys.readouterr().err
    assert main(["bench", path, "--compare", "", "--dim", "x:1=5", "--repeat", "2", "--no-cold-start"]) == 0
    assert "inputs at batch 1: x [1, 5]" in capsys.readouterr().out


def test_repeated_dims_all_count(tmp_path, capsys):
    """``--dim length=1 --dim cached=30`` (a KV-cache decoder's two lengths) sizes both, as one
    comma-separated ``--dim`` does: argparse had kept only the last, and the first was missing."""
    b = GraphBuilder("two_lengths", opset=17)
    ids = b.input("ids", np.float32, ["batch", "length"])
    past = b.input("past", np.float32, ["batch", "cached"])
    b.op("Concat", past, ids, outputs=["y"], axis=1)
    b.output("y", np.float32)
    path = str(tmp_path / "two_lengths.onnx")
    save_model(b.build(), path)
    assert main(["bench", path, "--compare", "", "--dim", "length=1", "--dim", "cached=30", "--repeat", "2",
                 "--no-cold-start"]) == 0
    assert "inputs at batch 1: ids [1, 1], past [1, 30]" in capsys.readouterr().out


@pytest.mark.parametrize("model, argv, message", [
    ("cnn_path", ["--compare", "tensorflow"], "--compare: unknown peer 'tensorflow'"),
    ("cnn_path", ["--batch", "0"], "--batch needs positive integers"),
    ("cnn_path", ["--threads", "two"], "--threads takes comma-separated integers"),
    # a symbolic dim past the batch is sized by name, never taken as the batch
    ("sequence_path", [], "input 'ids' axis 1 is symbolic (sequence) and not the batch axis: give its size with "
                          "--dim sequence=N"),
    ("sequence_path", ["--dim", "sequence=8,length=3"], "--dim length: no fed input has such a symbolic dim"),
    ("sequence_path", ["--dim", "batch=4,sequence=8"],
     "--dim batch: that is the batch axis of input 'ids'; give it with --batch"),
    ("sequence_path", ["--dim", "sequence"], "--dim takes name=size pairs with positive sizes, got 'sequence'"),
])
def test_bad_arguments_are_named(request, capsys, model, argv, message):
    assert main(["bench", request.getfixturevalue(model), *argv, "--no-cold-start"]) == 2
    assert message in capsys.readouterr().err
