"""Shape arithmetic computed once per set of feed shapes: the steps skipped are exactly those whose
values follow from the shapes, later runs skip them and give the same outputs, and values that
follow from the data (or that the caller owns) are computed every run."""
from __future__ import annotations

import numpy as np
import pytest

from inference import Session, load_model
from inference.builder import GraphBuilder
from inference.onnx_export import model_to_proto
from inference.session import CONSTANT_WEIGHT_KINDS
from tests.conftest import on_each_step_call


def _built(build):
    b = GraphBuilder("shapes", opset=17)
    build(b, b.input("x", np.float32, ["batch", "seq", 8]))
    return b.build()


def _session(build) -> Session:
    return Session(load_model(model_to_proto(_built(build))), kinds=CONSTANT_WEIGHT_KINDS)  # a Predictor's


def _counted(session: Session) -> dict[str, int]:
    """Calls per op type of ``session``'s steps from now on."""
    calls: dict[str, int] = {}

    def note(step) -> None:
        calls[step.node.op_type] = calls.get(step.node.op_type, 0) + 1

    on_each_step_call(session, note)
    return calls


def _x(batch: int, seq: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, seq, 8)).astype(np.float32)


def _heads(b: GraphBuilder, x: str) -> None:
    """What torch writes for a split into heads: (B, L, 8) -> (B, L, 2, 4) from the run's shape."""
    shape = b.op("Shape", x)
    dims = [b.op("Unsqueeze", b.op("Gather", shape, b.const(np.array(i, np.int64)), axis=0),
                 b.const(np.array([0], np.int64))) for i in (0, 1)]
    target = b.op("Concat", *dims, b.const(np.array([2, 4], np.int64)), axis=0)
    b.op("Relu", b.op("Reshape", b.op("Mul", x, b.const(np.float32(2))), target), outputs=["y"])
    b.output("y", np.float32)


def test_the_shape_arithmetic_runs_once_per_set_of_feed_shapes():
    session = _session(_heads)
    values = session.shape_values
    assert values is not None
    skipped = sorted(session.steps[i].node.op_type for i in range(len(session.steps)) if i not in values.kept_index)
    assert skipped == ["Concat", "Gather", "Gather", "Shape", "Unsqueeze", "Unsqueeze"]
    calls = _counted(session)
    # (sequence length, whether this run computes the arithmetic): the first run of each length
    for r, (seq, computes) in enumerate(((5, True), (5, False), (5, False), (9, True), (9, False), (5, False))):
        calls.clear()
        x = _x(2, seq, r)
        y, = session.run({"x": x})
        np.testing.assert_array_equal(y, np.maximum(2 * x, 0).reshape(2, seq, 2, 4))
        assert ("Shape" in calls) == computes and ("Concat" in calls) == computes, (seq, calls)
        assert calls["Reshape"] == 1 and calls["Mul"] == 1


def test_a_cycle_through_many_lengths_keeps_every_length_s_values():
    """A decoder with a key/value cache runs its cache lengths in turn: a cycle of 200 lengths
    (longer than the 64 once kept, which dropped each length before it came back) computes the
    arithmetic in its first round only."""
    session = _session(_heads)
    calls = _counted(session)
    for round_ in range(2):
        calls.clear()
        for seq in range(1, 201):
            y, = session.run({"x": _x(1, seq)})
            assert y.shape == (1, seq, 2, 4)
        assert calls.get("Shape", 0) == (200 if round_ == 0 else 0) and calls["Reshape"] == 200


def test_values_that_follow_the_data_are_computed_every_run():
    """NonZero's length follows the data: the Shape of its output, and what follows, run each time."""
    def build(b, x):
        nz = b.op("NonZero", b.op("Greater", x, b.const(np.float32(0))))
        b.op("Cast", b.op("Shape", nz), to=1, outputs=["y"])
        b.output("y", np.float32)

    session = _session(build)
    assert session.shape_values is None
    for seed in range(3):
        x = _x(1, 4, seed)
        y, = session.run({"x": x})
        assert y.tolist() == [3, int((x > 0).sum())]


def test_a_reshape_target_read_from_data_stops_the_proof():
    """A Reshape whose target is a feed's values: its output's shape, and so its Shape, follows
    the data, not the feeds' shapes."""
    b = GraphBuilder("fed", opset=17)
    x = b.input("x", np.float32, [6])
    t = b.input("t", np.int64, [2])
    b.op("Shape", b.op("Reshape", x, t), outputs=["s"])
    b.op("Add", b.op("Shape", x), b.const(np.array([1], np.int64)), outputs=["n"])
    b.output("s", np.int64)
    b.output("n", np.int64)
    session = Session(load_model(model_to_proto(b.build())), kinds=CONSTANT_WEIGHT_KINDS)
    assert session.shape_values is None  # the Shape of x is x's last reader: it runs too
    for target in ([2, 3], [3, 2], [1, 6]):
        s, n = session.run({"x": np.arange(6, dtype=np.float32), "t": np.array(target, np.int64)})
        assert s.tolist() == target and n.tolist() == [7]


def test_a_shape_that_is_a_tensors_last_reader_still_runs():
    """Skipping it would keep the tensor it measures alive for the rest of the run."""
    def build(b, x):
        h = b.op("Relu", x)
        n = b.op("Cast", b.op("Shape", h), to=1)
        b.op("Mul", b.op("ReduceSum", x, b.const(np.array([1, 2], np.int64)), keepdims=0),
             b.op("ReduceSum", n, keepdims=1), outputs=["y"])
        b.output("y", np.float32)

    session = _session(build)
    shape_step = next(i for i, s in enumerate(session.steps) if s.node.op_type == "Shape")
    assert session.shape_values is None or shape_step in session.shape_values.kept_index
    for seq in (3, 3, 4):
        x = _x(2, seq)
        y, = session.run({"x": x})
        np.testing.assert_allclose(y, x.sum(axis=(1, 2)) * (2 + seq + 8), rtol=1e-5)


def test_values_are_kept_only_after_a_whole_run():
    """A run that fails keeps nothing; the next run of the shapes computes them again."""
    session = _session(_heads)
    bad = _x(2, 5)[:, :, :7]  # 7 channels: the Reshape to (2, 5, 2, 4) fails
    with pytest.raises(Exception, match="Reshape"):
        session.run({"x": np.ascontiguousarray(bad)})
    assert session.shape_values.lookup({"x": bad}) is None
    x = _x(2, 5)
    session.run({"x": x})
    assert session.shape_values.lookup({"x": x}) is not None


def test_a_session_whose_weights_may_change_computes_everything():
    """Training updates initializers in place between runs (LwF's weight, a scalar: its product
    with a constant was kept stale once): only a Predictor's kinds, which pack weights once,
    promise they never change."""
    model = load_model(model_to_proto(_built(_heads)))
    assert Session(model).shape_values is None
    assert Session(model, kinds=CONSTANT_WEIGHT_KINDS).shape_values is not None
