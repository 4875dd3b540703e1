"""A Predictor's replay of its recorded kernel calls (``inference.kernel_replay``): the same outputs
as its step-by-step runs, bit for bit, or no replay at all."""
from __future__ import annotations

import threading

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from inference import Config, Predictor, zoo
from inference import kernel_replay
from inference.errors import EdgelearnError, KernelError
from inference.kernel_replay import CAPTURE_AFTER, Replay, _signature
from inference.onnx_export import model_to_proto
from tests.conftest import count_step_calls


def _predictor(proto: onnx.ModelProto, replay: bool = True, threads: int = 1, **config) -> Predictor:
    return Predictor(Config(model_path=proto.SerializeToString(), num_threads=threads, kernel_replay=replay, **config))


def _states(p: Predictor) -> list:
    return [type(v).__name__ if isinstance(v, Replay) else v for v in p.session.replays._entries.values()]


@pytest.fixture(scope="module")
def ds_cnn() -> onnx.ModelProto:
    return model_to_proto(zoo.ds_cnn_kws())


def _inputs(seed: int, shape: tuple, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(n)]


@pytest.mark.parametrize("threads", [1, 2])
def test_replay_equals_the_step_by_step_run(ds_cnn, threads):
    """From the third run of a shape on, no step runs in Python, and every output equals a
    Predictor's without replay bit for bit (new inputs each run, batch 3 and 1)."""
    p, plain = _predictor(ds_cnn, threads=threads), _predictor(ds_cnn, replay=False, threads=threads)
    count = count_step_calls(p)
    for batch in (3, 1):  # the larger first: the arena never grows after, both replays stay
        for i, x in enumerate(_inputs(batch, (batch, 1, 49, 10), CAPTURE_AFTER + 4)):
            before = count[0]
            got, want = p.run({"input": x})["logits"], plain.run({"input": x})["logits"]
            assert np.array_equal(got, want)
            if i > CAPTURE_AFTER:  # captured on run CAPTURE_AFTER (0-based), replayed after
                assert count[0] == before
    assert _states(p).count("Replay") == 2


@pytest.mark.parametrize("threads", [1, 2])
def test_attention_replays(threads):
    """A transformer encoder replays too: its products of two activations, its heads' (0, 2, 1, 3)
    transposes and its scale (a Mul by a one-element constant) are numba calls; outputs as a
    step-by-step run's on the same kernels, bit for bit (without replay the products are numpy's)."""
    proto = model_to_proto(zoo.transformer_encoder(seq=16, dim=32, heads=2, layers=2, ffn=64))
    p, plain = _predictor(proto, threads=threads), _predictor(proto, threads=threads)
    plain.session.replays = None  # step by step, on the replaying kernels
    count = count_step_calls(p)
    for i, x in enumerate(_inputs(5, (2, 16, 32), CAPTURE_AFTER + 3)):
        before = count[0]
        assert np.array_equal(p.run({"input": x})["output"], plain.run({"input": x})["output"])
        if i > CAPTURE_AFTER:
            assert count[0] == before
    assert _states(p) == ["Replay"]


def test_replayed_outputs_are_the_callers_own(ds_cnn):
    """Each run returns fresh arrays: a later replay does not rewrite an earlier run's outputs."""
    p = _predictor(ds_cnn)
    xs = _inputs(7, (1, 1, 49, 10), CAPTURE_AFTER + 3)
    outs = [p.run({"input": x})["logits"] for x in xs]
    kept = [o.copy() for o in outs]
    p.run({"input": xs[0] * 2})
    assert all(np.array_equal(o, k) for o, k in zip(outs, kept))
    assert not np.shares_memory(outs[-1], outs[-2])


def _graph(nodes, inits, x_shape, opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_a_graph_with_work_outside_numba_is_not_replayed():
    """Sin runs as numpy (no compiled kernel): a replay would skip it, so the check on random inputs
    refuses the capture and every run stays step by step, right."""
    w = np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32)
    proto = _graph([helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Sin", ["h"], ["s"]),
                    helper.make_node("MatMul", ["s", "w"], ["y"])], {"w": w}, [1, 8])
    p = _predictor(proto)
    count = count_step_calls(p)
    for x in _inputs(1, (1, 8), CAPTURE_AFTER + 3):
        before = count[0]
        np.testing.assert_allclose(p.run({"x": x})["y"], np.sin(x @ w) @ w, rtol=1e-5, atol=1e-5)
        assert count[0] > before
    assert _states(p) == ["refused"]
    assert p.replay_report() == f"x [1, 8] at 1 thread(s): {kernel_replay.REFUSED_NOTE}"


def test_winograd_replay_runs_again_when_its_outputs_are_not_finite(monkeypatch):
    """A Winograd convolution falls back in Python on an inf or a NaN: a replayed run whose outputs
    are not all finite is made again step by step, so a NaN reaches exactly the outputs it does
    without replay (the direct convolution's 5x5 neighbourhood after two 3x3 layers)."""
    from inference.passes import layout

    monkeypatch.setattr(layout, "MIN_GEMM_MACS_PER_BOUNDARY", 0.0)  # a toy graph: channels-last anyway
    rng = np.random.default_rng(2)
    w1, w2 = ((rng.standard_normal((64, 64, 3, 3)) / 24).astype(np.float32) for _ in range(2))
    proto = _graph([helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
                    helper.make_node("Relu", ["c1"], ["r1"]),
                    helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
                    helper.make_node("Add", ["c2", "x"], ["y"])], {"w1": w1, "w2": w2}, [1, 64, 28, 28])
    p, plain = _predictor(proto), _predictor(proto, replay=False)
    assert sum(s.node.attrs.get("algorithm") == "winograd" for s in p.session.steps) == 2
    for x in _inputs(3, (1, 64, 28, 28), CAPTURE_AFTER + 2):
        assert np.array_equal(p.run({"x": x})["y"], plain.run({"x": x})["y"])
    assert _states(p) == ["Replay"]
    x[0, 5, 10, 10] = np.nan
    got, want = p.run({"x": x})["y"], plain.run({"x": x})["y"]
    assert np.isnan(want).sum() == 25 * 64
    assert np.array_equal(got, want, equal_nan=True)


def test_replays_from_many_threads(ds_cnn):
    """Concurrent runs of one Predictor: one holds the arena and replays, the others run step by
    step; every result is checked."""
    p = _predictor(ds_cnn)
    xs = _inputs(11, (1, 1, 49, 10), 24)
    plain = _predictor(ds_cnn, replay=False)
    want = [plain.run({"input": x})["logits"] for x in xs]
    for x in xs[:CAPTURE_AFTER + 1]:
        p.run({"input": x})
    errors: list = []

    def worker(offset: int) -> None:
        for i in range(offset, len(xs), 4):
            if not np.array_equal(p.run({"input": xs[i]})["logits"], want[i]):
                errors.append(i)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert _states(p) == ["Replay"]


def test_a_grown_arena_drops_its_replays_and_captures_again(ds_cnn):
    """A larger batch lays the arena out anew; the smaller batch's replay (over the old block) is
    dropped at the next run, freeing the old block, and captured again on the new one, outputs
    right throughout."""
    import gc
    import weakref

    p, plain = _predictor(ds_cnn), _predictor(ds_cnn, replay=False)
    small, large = _inputs(4, (1, 1, 49, 10), 8), _inputs(5, (6, 1, 49, 10), 1)
    for x in small[:CAPTURE_AFTER + 1]:
        p.run({"input": x})
    old_block = weakref.ref(p.session.arenas._owner)
    assert np.array_equal(p.run({"input": large[0]})["logits"], plain.run({"input": large[0]})["logits"])
    assert p.session.arenas._owner is not old_block()
    p.run({"input": small[0]})  # the next run drops the replay recorded on the old block ...
    gc.collect()
    assert old_block() is None  # ... and with it the old block's memory
    for x in small[CAPTURE_AFTER + 1:]:
        assert np.array_equal(p.run({"input": x})["logits"], plain.run({"input": x})["logits"])
    replay = next(v for v in p.session.replays._entries.values() if isinstance(v, Replay))
    assert replay.block is p.session.arenas.block


@pytest.fixture
def kept(monkeypatch) -> int:
    """A session's replays bounded at 4 (the default's 64 batch sizes would take long here)."""
    monkeypatch.setattr(kernel_replay, "KEPT_REPLAYS", 4)
    return 4


def test_kept_replays_are_bounded(ds_cnn, kept):
    p = _predictor(ds_cnn, batch_split=False)
    for batch in range(kept + 2, 0, -1):  # largest first: the arena never grows after
        for x in _inputs(batch, (batch, 1, 49, 10), CAPTURE_AFTER + 1):
            p.run({"input": x})
    assert _states(p).count("Replay") == kept


def _captures(p: Predictor) -> list[int]:
    """A counter of the session's captures."""
    replays, count = p.session.replays, [0]
    capture = replays._capture

    def counted(*args):
        count[0] += 1
        return capture(*args)

    replays._capture = counted
    return count


def _replayed(p: Predictor, batch: int) -> bool:
    key = _signature({"input": np.zeros((batch, 1, 49, 10), np.float32)})
    return isinstance(p.session.replays._entries.get(key), Replay)


def test_shapes_in_turn_do_not_evict_each_others_replays(ds_cnn, kept):
    """More input shapes in turn than a session keeps replays of (a transformer's sequence
    lengths, say): the first ones captured keep their replays and the rest run step by step, not
    a capture every third run evicting a replay before its next use; outputs right throughout."""
    p, plain = _predictor(ds_cnn, batch_split=False), _predictor(ds_cnn, replay=False)
    captures = _captures(p)
    batches = list(range(kept + 2, 0, -1))  # the largest first: the arena never grows after
    xs = {b: _inputs(b, (b, 1, 49, 10), 1)[0] for b in batches}
    for _ in range(CAPTURE_AFTER + 6):
        for b in batches:
            assert np.array_equal(p.run({"input": xs[b]})["logits"], plain.run({"input": xs[b]})["logits"])
    assert captures[0] == kept
    assert [_replayed(p, b) for b in batches] == [True] * kept + [False] * 2
    assert "replays kept are of shapes run more" in p.replay_report()


def test_a_used_replay_outlives_shapes_seen_less(ds_cnn, kept):
    p = _predictor(ds_cnn, batch_split=False)
    rare = list(range(kept + 4, 1, -1))
    p.run({"input": _inputs(1, (rare[0], 1, 49, 10), 1)[0]})  # the arena at its largest first
    for x in _inputs(2, (1, 1, 49, 10), CAPTURE_AFTER + 10):
        p.run({"input": x})
    for b in rare:  # each captured when a slot is free, then counted: never more used than batch 1
        for x in _inputs(b, (b, 1, 49, 10), CAPTURE_AFTER + 2):
            p.run({"input": x})
    assert _replayed(p, 1)
    assert _states(p).count("Replay") == kept


def test_replays_follow_a_workload_that_moves_on(ds_cnn, monkeypatch, kept):
    """Counts halve every AGE_EVERY runs: once the shapes in use change, the old shapes' replays
    give way to the new ones."""
    monkeypatch.setattr(kernel_replay, "AGE_EVERY", 16)
    p = _predictor(ds_cnn, batch_split=False)
    old, new = list(range(9, 9 - kept, -1)), list(range(kept, 0, -1))
    xs = {b: _inputs(b, (b, 1, 49, 10), 1)[0] for b in old + new}
    for _ in range(30):
        for b in old:
            p.run({"input": xs[b]})
    assert all(_replayed(p, b) for b in old)
    for _ in range(40):
        for b in new:
            p.run({"input": xs[b]})
    assert all(_replayed(p, b) for b in new) and not any(_replayed(p, b) for b in old)


def test_a_profiled_run_is_made_step_by_step(ds_cnn):
    """A profiler (``edgelearn bench``'s per-op trace) sees every node: no replay under it."""
    p = _predictor(ds_cnn)
    xs = _inputs(6, (1, 1, 49, 10), CAPTURE_AFTER + 2)
    for x in xs:
        p.run({"input": x})
    seen = []
    p.session.profiler = lambda node, kernel, start, end: seen.append(node.op_type)
    p.run({"input": xs[0]})
    assert len(seen) == len(p.session.steps)


def test_no_replay_when_switched_off(ds_cnn):
    p = _predictor(ds_cnn, replay=False)
    assert p.session.replays is None


def test_the_recording_hook_is_gone_after_a_capture(ds_cnn):
    """The hook that records numba calls is on numba's dispatcher class only while a capture runs:
    afterwards every dispatcher call is numba's own again (no Python in between)."""
    from numba.core.registry import CPUDispatcher

    p = _predictor(ds_cnn)
    for x in _inputs(8, (1, 1, 49, 10), CAPTURE_AFTER + 1):
        p.run({"input": x})
    assert _states(p) == ["Replay"]
    assert "__call__" not in vars(CPUDispatcher)


def _doubled_relu(x):
    """A test kernel: numpy doubles ``x`` into a fixed scratch region (work a replay skips), then a
    numba kernel takes the Relu of that region into the output."""
    from inference.kernels.activations import activation_code
    from inference.kernels.arena_slot import new_output, new_scratch
    from inference.kernels.elementwise import activate_flat

    doubled = new_scratch(x.shape)
    np.multiply(x, np.float32(2), out=doubled)
    y = new_output(x.shape)
    activate_flat(doubled.reshape(-1), y.reshape(-1), activation_code("Relu"), 0.0, 0.0, False)
    return y


def test_numpy_work_into_a_fixed_buffer_is_caught_by_the_check():
    """The random-input check replays before it runs step by step: had the step-by-step run come
    first, it would have left the probe's own doubled values in the scratch region the replay then
    reads, and a recording missing the numpy work would have passed."""
    from inference.ops.registry import lookup, register

    if lookup("DoubledRelu", "test.replay", 1) is None:
        register("DoubledRelu", since=1, domain="test.replay")(_doubled_relu)
    graph = helper.make_graph([helper.make_node("DoubledRelu", ["x"], ["y"], domain="test.replay")], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 50])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 50])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("test.replay", 1)])
    p = _predictor(proto)
    for x in _inputs(9, (2, 50), CAPTURE_AFTER + 3):
        np.testing.assert_array_equal(p.run({"x": x})["y"], np.maximum(2 * x, 0))
    assert _states(p) == ["refused"]


def test_a_long_run_is_not_captured(ds_cnn, monkeypatch):
    """A recorded run past :data:`MAX_REPLAY_SECONDS` is not checked or kept: its Python is a sliver
    of it while the check costs two more runs. Such a shape keeps running step by step; a later
    shape under the limit is replayed (the limit set to 0 for batch 2, then lifted for batch 1)."""
    from inference import kernel_replay

    p = _predictor(ds_cnn)
    count = count_step_calls(p)
    monkeypatch.setattr(kernel_replay, "MAX_REPLAY_SECONDS", 0.0)
    for x in _inputs(11, (2, 1, 49, 10), CAPTURE_AFTER + 2):
        p.run({"input": x})  # batch 2 first: the arena never grows after
    monkeypatch.setattr(kernel_replay, "MAX_REPLAY_SECONDS", 60.0)
    for x in _inputs(10, (1, 1, 49, 10), CAPTURE_AFTER + 2):
        p.run({"input": x})
    assert _states(p) == ["refused", "Replay"]
    x = _inputs(12, (2, 1, 49, 10), 1)[0]
    before = count[0]
    p.run({"input": x})
    assert count[0] == before + len(p.session.steps)


def test_a_symbolic_sequence_length_is_limited_by_its_run(monkeypatch):
    """A sequence length left symbolic gives no FLOP count before the run; the limit is the recorded
    run's own time, so a long sequence is refused there while a short one replays."""
    from inference import kernel_replay

    w = np.random.default_rng(3).standard_normal((8, 8)).astype(np.float32)
    proto = _graph([helper.make_node("MatMul", ["x", "w"], ["y"])], {"w": w}, [1, "seq", 8])
    p = _predictor(proto)
    monkeypatch.setattr(kernel_replay, "MAX_REPLAY_SECONDS", 0.0)
    for x in _inputs(14, (1, 64, 8), CAPTURE_AFTER + 2):
        np.testing.assert_allclose(p.run({"x": x})["y"], x @ w, rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(kernel_replay, "MAX_REPLAY_SECONDS", 60.0)
    for x in _inputs(15, (1, 4, 8), CAPTURE_AFTER + 2):
        np.testing.assert_allclose(p.run({"x": x})["y"], x @ w, rtol=1e-5, atol=1e-5)
    assert _states(p) == ["refused", "Replay"]
    assert f"x [1, 64, 8] at 1 thread(s): {kernel_replay.REFUSED_NOTE}" in p.replay_report()


def test_the_report_says_how_each_shape_runs(ds_cnn):
    """``Predictor.replay_report()`` (printed by ``edgelearn bench``): per input shape, replayed or
    step by step and why."""
    p = _predictor(ds_cnn)
    assert p.replay_report() == "no runs yet"
    xs = _inputs(13, (1, 1, 49, 10), CAPTURE_AFTER + 1)
    p.run({"input": xs[0]})
    assert p.replay_report() == f"input [1, 1, 49, 10] at 1 thread(s): step by step, 1 of {CAPTURE_AFTER} runs before its capture"
    for x in xs[1:]:
        p.run({"input": x})
    assert p.replay_report() == f"input [1, 1, 49, 10] at 1 thread(s): replayed ({CAPTURE_AFTER + 1} runs)"
    assert _predictor(ds_cnn, replay=False).replay_report() == "off"


def test_the_report_covers_a_batch_split_over_threads(ds_cnn):
    """At two threads a large batch runs as one part per thread, each on a replica session with
    replays of its own: the report says how those parts run, not "no runs yet"."""
    p = _predictor(ds_cnn, threads=2)
    for x in _inputs(14, (8, 1, 49, 10), CAPTURE_AFTER + 2):
        p.run({"input": x})
    assert p.splitter is not None and len(p.splitter.sessions) == 2
    report = p.replay_report()
    for i in range(2):
        assert f"batch part {i} (thread {i}): input [4, 1, 49, 10] at 1 thread(s): replayed" in report, report
    assert "no runs yet" not in report


def _embedding_model() -> onnx.ModelProto:
    """Token ids (2, 8) int64 -> an embedding Gather -> MatMul -> masked by a bool (2, 8, 1) mask."""
    rng = np.random.default_rng(8)
    inits = {"table": rng.standard_normal((50, 16)).astype(np.float32),
             "w": rng.standard_normal((16, 16)).astype(np.float32), "zero": np.zeros((), np.float32)}
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"]), helper.make_node("MatMul", ["e", "w"], ["h"]),
             helper.make_node("Where", ["mask", "zero", "h"], ["y"])]
    graph = helper.make_graph(nodes, "embed", [helper.make_tensor_value_info("ids", onnx.TensorProto.INT64, [2, 8]),
                                               helper.make_tensor_value_info("mask", onnx.TensorProto.BOOL, [2, 8, 1])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _token_feeds(rng: np.random.Generator, same_id: bool = False) -> dict[str, np.ndarray]:
    ids = np.full((2, 8), 7) if same_id else rng.integers(0, 50, (2, 8))
    return {"ids": ids.astype(np.int64), "mask": rng.random((2, 8, 1)) < 0.3}


@pytest.mark.parametrize("threads", [1, 2])
def test_token_ids_and_masks_replay(threads):
    """Integer and bool feeds are captured too (probed with their recorded values shuffled): new ids
    and masks every run, no step called after the capture, outputs as step by step's."""
    proto = _embedding_model()
    p, plain = _predictor(proto, threads=threads), _predictor(proto, threads=threads)
    plain.session.replays = None
    count = count_step_calls(p)
    rng = np.random.default_rng(threads)
    for i in range(CAPTURE_AFTER + 4):
        feeds, before = _token_feeds(rng), count[0]
        assert np.array_equal(p.run(feeds)["y"], plain.run(feeds)["y"])
        if i > CAPTURE_AFTER:
            assert count[0] == before
    assert _states(p) == ["Replay"]


def test_a_bad_token_id_after_the_capture_is_named():
    """A replay never reads past the embedding table: the kernel's own check stops it, the run made
    again step by step raises the reference's error, and the replay stays for the good ids after."""
    proto = _embedding_model()
    p = _predictor(proto)
    count = count_step_calls(p)
    rng = np.random.default_rng(5)
    for _ in range(CAPTURE_AFTER + 1):
        p.run(_token_feeds(rng))
    assert _states(p) == ["Replay"]
    bad = _token_feeds(rng)
    bad["ids"][1, 3] = 50
    with pytest.raises(KernelError, match=r"node Gather->e .*Gather index out of range"):
        p.run(bad)
    assert _states(p) == ["Replay"]
    good, before = _token_feeds(rng), count[0]
    want = _predictor(proto, replay=False).run(good)["y"]
    np.testing.assert_array_equal(p.run(good)["y"], want)
    assert count[0] == before


def test_a_broken_record_goes_step_by_step(monkeypatch):
    """A replay that raises where the step-by-step run succeeds is a broken record: that run's
    outputs come from the steps, and the signature is refused."""
    proto = _embedding_model()
    p = _predictor(proto)
    rng = np.random.default_rng(7)
    for _ in range(CAPTURE_AFTER + 1):
        p.run(_token_feeds(rng))

    def broken(self, arenas, feeds):
        raise RuntimeError("a broken record")

    monkeypatch.setattr(Replay, "run", broken)
    feeds = _token_feeds(rng)
    np.testing.assert_array_equal(p.run(feeds)["y"], _predictor(proto, replay=False).run(feeds)["y"])
    assert _states(p) == ["refused"]


@pytest.mark.parametrize("later", ["varied", "another single value"])
def test_a_feed_of_one_value_pins_the_replay_until_another_comes(later):
    """Ids of one value throughout cannot be varied by the probe's shuffle, and no other value was
    seen yet, so the replay is kept for that value alone (the report says so). Other ids, varied or
    another single value, are captured anew (probed with the pinned value where they are one value)
    and replay from then on whatever they hold."""
    proto = _embedding_model()
    p, plain = _predictor(proto), _predictor(proto, replay=False)
    count = count_step_calls(p)
    rng = np.random.default_rng(6)
    for _ in range(CAPTURE_AFTER + 1):
        p.run(_token_feeds(rng, same_id=True))
    assert "only for the recorded ids" in p.replay_report()
    before = count[0]
    p.run(_token_feeds(rng, same_id=True))
    assert count[0] == before
    for i, single in enumerate((3, 11, 7, 42)):
        feeds = _token_feeds(rng, same_id=later != "varied")
        if later != "varied":
            feeds["ids"][:] = single
        before = count[0]
        assert np.array_equal(p.run(feeds)["y"], plain.run(feeds)["y"])
        # the first run is the new capture's (its steps), the rest replays
        assert (count[0] > before) == (i == 0)
    assert "only for" not in p.replay_report() and _states(p) == ["Replay"]


def _index_model() -> onnx.ModelProto:
    """y = Gather(x, at) * 2: x (n,) float, at (1,) int64, so an index valid at one length is out of
    range at a shorter one."""
    nodes = [helper.make_node("Gather", ["x", "at"], ["g"]), helper.make_node("Add", ["g", "g"], ["y"])]
    graph = helper.make_graph(nodes, "index", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n"]),
                                               helper.make_tensor_value_info("at", onnx.TensorProto.INT64, [1])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _captured(p: Predictor, feeds: dict[str, np.ndarray]) -> None:
    for _ in range(CAPTURE_AFTER + 1):
        p.run(feeds)


def test_a_single_value_is_probed_with_one_another_capture_ran_on():
    """A decoder with a key/value cache is fed one token a step at a new cache length: the capture
    at a second length probes its single index with the one the first capture ran on, so it
    replays every index at once, not pinned to the recorded one."""
    p, plain = _predictor(_index_model()), _predictor(_index_model(), replay=False)
    rng = np.random.default_rng(0)
    x10, x12 = (rng.standard_normal(n).astype(np.float32) for n in (10, 12))
    _captured(p, {"x": x10, "at": np.array([4])})
    assert "x [10], at [1] at 1 thread(s): replayed (3 runs; only for the recorded at" in p.replay_report()
    _captured(p, {"x": x12, "at": np.array([9])})
    assert "x [12], at [1] at 1 thread(s): replayed (3 runs)" in p.replay_report()
    count = count_step_calls(p)
    for at in (0, 5, 11, -1):
        feeds = {"x": x12, "at": np.array([at])}
        assert np.array_equal(p.run(feeds)["y"], plain.run(feeds)["y"])
    assert count[0] == 0


def test_a_single_value_the_model_rejects_at_this_shape_pins_the_replay():
    """The index another capture ran on is out of range at this length: the check falls back to the
    recorded index alone (pinned), and another index there runs step by step rather than being
    captured again on every new value; the recorded one still replays."""
    p, plain = _predictor(_index_model()), _predictor(_index_model(), replay=False)
    rng = np.random.default_rng(1)
    x12, x5 = (rng.standard_normal(n).astype(np.float32) for n in (12, 5))
    _captured(p, {"x": x12, "at": np.array([9])})
    _captured(p, {"x": x5, "at": np.array([2])})
    assert "x [5], at [1] at 1 thread(s): replayed (3 runs; only for the recorded at" in p.replay_report()
    count = count_step_calls(p)
    for at in (3, 4, 3):
        feeds = {"x": x5, "at": np.array([at])}
        before = count[0]
        assert np.array_equal(p.run(feeds)["y"], plain.run(feeds)["y"])
        assert count[0] == before + 2  # step by step: not a capture (its three runs)
    before = count[0]
    assert np.array_equal(p.run({"x": x5, "at": np.array([2])})["y"], x5[[2]] * 2)
    assert count[0] == before and _states(p) == ["Replay", "Replay"]
    with pytest.raises(EdgelearnError, match="Gather"):  # the bad index is named step by step
        p.run({"x": x5, "at": np.array([9])})


def _length_model() -> onnx.ModelProto:
    """y = Relu(x[:, :n]) * 2: x (1, L) float, n (1,) int64, so the output's shape follows n's value."""
    nodes = [helper.make_node("Slice", ["x", "zero", "n", "one"], ["s"]), helper.make_node("Relu", ["s"], ["r"]),
             helper.make_node("Add", ["r", "r"], ["y"])]
    inits = [numpy_helper.from_array(np.array([v], np.int64), name) for name, v in (("zero", 0), ("one", 1))]
    graph = helper.make_graph(nodes, "length", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, "L"]),
                                                helper.make_tensor_value_info("n", onnx.TensorProto.INT64, [1])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_single_value_that_changes_the_computation_pins_the_replay():
    """A length fed as a value: probed with the length another capture ran on, the replay (recorded
    at this one) would differ from the run, so the check falls back to the recorded length alone;
    another length at this shape runs step by step (right, its output shorter), the recorded one
    replays."""
    p = _predictor(_length_model())
    rng = np.random.default_rng(2)
    x20, x30 = (rng.standard_normal((1, n)).astype(np.float32) for n in (20, 30))
    _captured(p, {"x": x20, "n": np.array([5])})
    _captured(p, {"x": x30, "n": np.array([7])})
    assert "x [1, 30], n [1] at 1 thread(s): replayed (3 runs; only for the recorded n" in p.replay_report()
    count = count_step_calls(p)
    for n in (9, 7, 3):
        before = count[0]
        y = p.run({"x": x30, "n": np.array([n])})["y"]
        np.testing.assert_array_equal(y, 2 * np.maximum(x30[:, :n], 0))
        assert (count[0] == before) == (n == 7)  # replayed for the recorded length only
    assert "x [1, 30], n [1] at 1 thread(s): replayed (6 runs; only for the recorded n" in p.replay_report()


def test_feeds_of_other_kinds_are_not_captured():
    assert _signature({"x": np.zeros(3, np.float32), "ids": np.zeros(3, np.int64), "m": np.zeros(3, bool)})
    assert _signature({"x": np.zeros(3, np.float32), "s": np.array(["a"])}) is None
    assert _signature({"x": [np.zeros(3, np.float32)]}) is None


def test_replays_are_bounded_by_the_bytes_they_hold(ds_cnn, monkeypatch):
    """Each replay holds copies of its feeds and outputs: past KEPT_REPLAY_BYTES the least-used go
    back to counting, however many the count bound allows."""
    p = _predictor(ds_cnn, batch_split=False)
    for batch in (6, 5, 4, 3):  # largest first: the arena never grows after
        for x in _inputs(batch, (batch, 1, 49, 10), CAPTURE_AFTER + 1 + batch):
            p.run({"input": x})
    replays = [v for v in p.session.replays._entries.values() if isinstance(v, Replay)]
    assert len(replays) == 4 and all(r.nbytes >= r.feeds["input"].nbytes for r in replays)
    sizes = sorted(r.nbytes for r in replays)  # batches 3, 4, 5, 6: a batch of 2 holds 2/3 of 3's
    budget = sizes[-1] + sizes[-2] + sizes[0] * 2 // 3  # room for batches 6, 5 and 2
    monkeypatch.setattr(kernel_replay, "KEPT_REPLAY_BYTES", budget)
    for x in _inputs(2, (2, 1, 49, 10), CAPTURE_AFTER + 6):  # run more than batch 3's replay (6 runs):
        p.run({"input": x})  # captured, past the budget: the least used (3, then 4) go back to counting
    assert [_replayed(p, b) for b in (6, 5, 4, 3, 2)] == [True, True, False, False, True]
    # a record larger than the whole budget is refused, not captured again run after run
    monkeypatch.setattr(kernel_replay, "KEPT_REPLAY_BYTES", 1)
    q = _predictor(ds_cnn, batch_split=False)
    captures = _captures(q)
    for x in _inputs(3, (1, 1, 49, 10), CAPTURE_AFTER + 4):
        q.run({"input": x})
    assert captures[0] == 1 and _states(q) == ["refused"]


def test_argument_types_are_numba_s_own():
    """A capture resolves each call's overload from remembered argument types: each must be the
    type numba's dispatch gives (else the call runs through the dispatch, or a wrong overload)."""
    from inference.kernels.strided import copy_strided

    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    frozen = a.copy()
    frozen.flags.writeable = False
    values = [a, a.T, a[:, ::2], frozen, a.astype(np.float64), a.astype(">f4"), np.zeros((0, 3), np.int64),
              np.ones((), bool), np.float32(1.5), np.int64(3), np.bool_(True), 1.5, True, 7, -(2**40), 2**63,
              (1, 2), None, "text"]
    for _ in range(2):  # the second time from what was remembered
        for v in values:
            got = kernel_replay._numba_type(copy_strided, v, kernel_replay._type_key(v))
            assert got == copy_strided.typeof_pyval(v), v


def test_overloads_are_remembered_per_argument_types():
    """A capture's overload lookup is remembered per arguments' keys: the same types find the same
    overload, other types (a layout, a dtype) their own, never a wrong one."""
    import numba

    @numba.njit
    def total(x):
        return x.sum()

    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    for v in (a, a.T, a.astype(np.float64)):
        total(v)  # compiled for each
    entries = {}
    for _ in range(2):
        for v in (a, a.T, a.astype(np.float64), a + 1):
            entry = kernel_replay._compiled(total, (v,), {})
            want = total.overloads[(total.typeof_pyval(v),)].entry_point
            assert entry is want
            entries.setdefault(total.typeof_pyval(v), set()).add(entry)
    assert len(entries) == 3 and all(len(e) == 1 for e in entries.values())
