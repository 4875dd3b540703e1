"""A kernel replay reads the caller's feeds where they are and writes its outputs into new arrays
(``inference.replay_bindings``): the same results as step by step, no copy through its own buffers,
no caller's array held after a run, and a copy wherever the record's arguments do not allow that."""
from __future__ import annotations

import gc
import weakref

import numpy as np
import onnx
import pytest
from onnx import helper

from inference import Config, Predictor, zoo
from inference.kernel_replay import CAPTURE_AFTER, Replay
from inference.onnx_export import model_to_proto
from inference.replay_bindings import Bindings, borrowable, restore


@pytest.fixture(scope="module")
def ds_cnn() -> bytes:
    return model_to_proto(zoo.ds_cnn_kws()).SerializeToString()


def _replayed(proto: bytes, feeds_of, runs: int = CAPTURE_AFTER + 2) -> tuple[Predictor, Replay]:
    p = Predictor(Config(model_path=proto, num_threads=1))
    for i in range(runs):
        p.run(feeds_of(i))
    replays = [v for v in p.session.replays._entries.values() if isinstance(v, Replay)]
    assert len(replays) == 1, p.replay_report()
    return p, replays[0]


def _x(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 1, 49, 10)).astype(np.float32)


def test_a_replay_reads_the_callers_feed_in_place_and_copies_one_it_cannot(ds_cnn):
    p, replay = _replayed(ds_cnn, lambda i: {"input": _x(i)})
    stepwise = Predictor(Config(model_path=ds_cnn, num_threads=1, kernel_replay=False))
    assert replay.borrowed_feeds == {"input"} and replay.fresh_outputs == [0]
    buffer = replay.feeds["input"]
    buffer.fill(7.0)  # what the record's buffer holds: a run that copied its feed would overwrite it
    x = _x(50)
    np.testing.assert_array_equal(p.run({"input": x})["logits"], stepwise.run({"input": x})["logits"])
    assert (buffer == 7.0).all()
    # arrays the compiled calls were not typed for are copied into the buffer: read-only, Fortran order
    readonly = _x(51)
    readonly.flags.writeable = False
    fortran = np.asfortranarray(_x(52))
    for y in (readonly, fortran):
        assert not borrowable(y, buffer)
        np.testing.assert_array_equal(p.run({"input": y})["logits"], stepwise.run({"input": y})["logits"])
        np.testing.assert_array_equal(buffer, y)


def test_a_replay_holds_no_callers_array_after_its_run(ds_cnn):
    p, replay = _replayed(ds_cnn, lambda i: {"input": _x(i)})
    x = _x(60)
    out = p.run({"input": x})["logits"]
    feed_ref, out_ref = weakref.ref(x), weakref.ref(out)
    assert not any(np.shares_memory(out, o) for o in replay.outputs)
    del x, out
    p._feeds = p._outputs = None  # the Predictor's own handles show the latest run
    gc.collect()
    assert feed_ref() is None and out_ref() is None


def _half_in_python(x):
    """A test kernel: the output's first row set in Python, its second row x's second row through
    a numba Relu. A replay repeats only the Relu, so the first row must be copied out of the array
    the record wrote."""
    from inference.kernels.activations import activation_code
    from inference.kernels.elementwise import activate_flat

    y = np.empty(x.shape, np.float32)
    y[0] = 1.0
    activate_flat(x[1], y[1], activation_code("Relu"), 0.0, 0.0, False)
    return y


def test_an_output_partly_written_outside_the_record_is_copied_out():
    from inference.ops.registry import lookup, register

    if lookup("HalfInPython", "test.bindings", 1) is None:
        register("HalfInPython", since=1, domain="test.bindings")(_half_in_python)
    graph = helper.make_graph([helper.make_node("HalfInPython", ["x"], ["y"], domain="test.bindings")], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 40])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 40])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("test.bindings", 1)]).SerializeToString()
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((2, 40)).astype(np.float32) for _ in range(CAPTURE_AFTER + 4)]
    p, replay = _replayed(proto, lambda i: {"x": xs[i]})
    assert replay.fresh_outputs == []  # the check saw row 0 of a new array left as it was made
    for x in xs[-2:]:
        y = p.run({"x": x})["y"]
        np.testing.assert_array_equal(y[0], 1.0)
        np.testing.assert_array_equal(y[1], np.maximum(x[1], 0))


def test_bindings_remake_views_and_refuse_what_they_cannot_stand_in_for():
    feed, out, other = np.arange(24, dtype=np.float32).reshape(4, 6), np.zeros(6, np.float32), np.zeros(3)
    inside = np.zeros(8, np.float32)
    args = [feed, feed.reshape(-1), feed[1:, ::2], feed[::-1], out, 3.0]
    calls = [(None, args, {}), (None, [(inside[:4],), inside], {}), (None, [other], {"y": other})]
    b = Bindings(calls, {"feed": feed, "out": out, "tupled": inside, "keyword": other,
                         "overlapping": feed.reshape(-1)[4:10]})
    # the feed and a view of it overlap: neither is stood in for; an array reached in a tuple or
    # as a keyword is refused; the output alone is bound
    assert b.refused == {"feed", "overlapping", "tupled", "keyword"}
    assert b.reaches("out") and not b.reaches("feed")
    b = Bindings(calls[:1], {"feed": feed, "out": out})
    recorded = list(args)
    stand_in = feed + 100
    patched = []
    b.bind("feed", stand_in, patched)
    assert args[0] is stand_in
    for got, want in zip(args[1:4], (stand_in.reshape(-1), stand_in[1:, ::2], stand_in[::-1])):
        assert np.shares_memory(got, stand_in)
        np.testing.assert_array_equal(got, want)
    restore(patched)
    assert all(a is r for a, r in zip(args, recorded))


def test_a_partial_overlap_refuses_its_source():
    block = np.zeros(32, np.float32)
    source = block[8:16]
    calls = [(None, [block[4:12]], {})]  # reads the source and memory before it
    assert not Bindings(calls, {"s": source}).reaches("s")
    calls = [(None, [block[10:12]], {})]
    assert Bindings(calls, {"s": source}).reaches("s")


def test_a_kv_cache_decoder_replays_without_copying_its_cache():
    """Every cache feed read in place and every present written into a new array: the cache's
    bytes were copied in and out each step (48 MB at 1000 cached tokens of a 6-layer 512-wide one)."""
    torch = pytest.importorskip("torch")
    from benchmarks.decode_loop import KvDecoder, export_kv

    torch.manual_seed(0)
    proto = export_kv(KvDecoder(vocab=60, dim=32, heads=2, layers=2, context=24).eval())
    names = [f"past_key_values.{i}.{k}" for i in range(2) for k in ("key", "value")]
    rng = np.random.default_rng(0)
    feeds = [{"ids": np.array([[i + 3]], np.int64), **{n: rng.standard_normal((1, 2, 9, 16)).astype(np.float32)
                                                      for n in names}} for i in range(CAPTURE_AFTER + 4)]
    p, replay = _replayed(proto, lambda i: feeds[i])
    assert replay.borrowed_feeds == set(names) | {"ids"}
    assert len(replay.fresh_outputs) == len(p.get_output_names()) == 5
    for f in feeds[-2:]:  # against the same session step by step (its kernels are the replayable ones)
        got, want = p.run(f), dict(zip(p.get_output_names(), p.session.execute(f)))
        for name in want:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)
