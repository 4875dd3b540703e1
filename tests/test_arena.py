"""Runs from the activation arena give what numpy's allocation gives, keep every output and every
view valid, and allocate no activation memory once the arena is laid out."""
from __future__ import annotations

import threading
import tracemalloc

import numpy as np
import onnx
import onnx.numpy_helper
import pytest

from inference import Config, Predictor, Session, load_model, zoo
from inference.arena import arenas_for
from inference.builder import GraphBuilder
from inference.ir import Model
from inference.kernels.arena_slot import new_scratch
from inference.memory_plan import plan_memory
from inference.onnx_export import model_to_proto
from inference.ops.registry import register

DOMAIN = "test.arena"


@register("PassThrough", domain=DOMAIN)
def _pass_through(x):
    """A kernel that hands back its input as it is (not one of the ops planned as views)."""
    return x


@register("DoubleInScratch", domain=DOMAIN)
def _double_in_scratch(x):
    """A kernel that (wrongly) returns memory it took as scratch."""
    s = new_scratch(x.shape)
    np.multiply(x, 2, out=s)
    return s


def _model(build) -> Model:
    b = GraphBuilder("arena", opset=17)
    x = b.input("x", np.float32, ["batch", 8, 4, 4])
    build(b, x)
    model = b.build()
    model.opset_imports[DOMAIN] = 1
    return load_model(model_to_proto(model))  # as loaded: with the types shape inference gives


def _runs_alike(model: Model, feeds_list: list[dict]) -> list[list[np.ndarray]]:
    """Run ``model`` from an arena and without, on each feed; equal bit for bit, and the arena
    run's outputs unchanged by the runs after it. Returns the arena runs' outputs."""
    plain, pooled = Session(model), Session(model)
    pooled.arenas = arenas_for(pooled)
    assert pooled.arenas is not None
    kept, copies = [], []
    for feeds in feeds_list:
        got, want = pooled.run(feeds), plain.run(feeds)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
        kept.append(got)
        copies.append([g.copy() for g in got])
    for got, copy in zip(kept, copies):
        for g, c in zip(got, copy):
            np.testing.assert_array_equal(g, c)
    assert pooled.arenas.block.size > 0  # something ran from the arena
    return kept


def _feeds(batch: int, seed: int) -> dict:
    return {"x": np.random.default_rng(seed).standard_normal((batch, 8, 4, 4)).astype(np.float32)}


def _later_tenants(b: GraphBuilder, x: str) -> str:
    """Two intermediates of x's size after the nodes above: they take the regions freed so far."""
    return b.op("Neg", b.op("Sigmoid", x))


def test_a_graph_output_viewing_an_intermediate_stays_valid():
    def build(b, x):  # the reference Identity hands back its input: the output is that very array
        b.op("Identity", b.op("Relu", x), outputs=["flat"])
        b.op("Tanh", _later_tenants(b, x), outputs=["other"])
        b.output("flat", np.float32)
        b.output("other", np.float32)

    model = _model(build)
    (flat, _), = _runs_alike(model, [_feeds(1, 0)])
    np.testing.assert_array_equal(flat, np.maximum(_feeds(1, 0)["x"], 0))


def test_a_view_keeps_the_block_it_views_until_its_last_reader():
    def build(b, x):
        r = b.op("Reshape", b.op("Relu", x), b.const(np.array([1, 128], np.int64)))
        c = b.op("Reshape", _later_tenants(b, x), b.const(np.array([1, 128], np.int64)))
        b.op("Add", r, c, outputs=["y"])
        b.output("y", np.float32)

    model = _model(build)
    x = _feeds(1, 1)["x"]
    (y,), = _runs_alike(model, [_feeds(1, 1)])
    np.testing.assert_allclose(y, (np.maximum(x, 0) - 1 / (1 + np.exp(-x))).reshape(1, 128), rtol=1e-6)
    session = Session(model)
    plan = plan_memory(session)
    relu, reshape = session.steps[0].node.outputs[0], session.steps[1].node.outputs[0]
    assert plan.buffers[reshape].shares_with == relu and plan.buffers[reshape].view
    assert plan.buffers[reshape].size == 0


def test_a_block_a_graph_output_views_is_left_out_of_the_arena():
    def build(b, x):
        b.op("Flatten", b.op("Relu", x), outputs=["flat"])
        b.output("flat", np.float32)

    session = Session(_model(build))
    plan = plan_memory(session)
    assert session.steps[0].node.outputs[0] not in plan.buffers


def test_an_elementwise_op_runs_in_place_over_its_dying_input():
    def build(b, x):
        b.op("Tanh", b.op("Relu", b.op("Sigmoid", b.op("Neg", x))), outputs=["y"])
        b.output("y", np.float32)

    model = _model(build)
    x = _feeds(1, 4)["x"]
    (y,), = _runs_alike(model, [_feeds(1, 4)])
    np.testing.assert_allclose(y, np.tanh(1 / (1 + np.exp(x))), rtol=1e-6)
    session = Session(model)
    session.arenas = arenas_for(session)
    slots = session.arenas.acquire({"x": x})
    session.arenas.release(0)
    sigmoid, relu = (session.steps[i].node.outputs[0] for i in (1, 2))
    plan = plan_memory(session)
    assert plan.buffers[relu].shares_with == sigmoid and not plan.buffers[relu].view
    assert np.shares_memory(slots[1], slots[2])  # Relu writes over Sigmoid's output


def test_a_kernel_returning_its_input_gets_a_copy_of_it():
    def build(b, x):
        p = b.op("PassThrough", b.op("Relu", x), domain=DOMAIN)
        b.op("Add", p, _later_tenants(b, x), outputs=["y"])
        b.output("y", np.float32)

    x = _feeds(1, 2)["x"]
    (y,), = _runs_alike(_model(build), [_feeds(1, 2)])
    np.testing.assert_allclose(y, np.maximum(x, 0) - 1 / (1 + np.exp(-x)), rtol=1e-6)


def test_a_result_in_the_workspace_gets_copied_out():
    def build(b, x):
        p = b.op("DoubleInScratch", x, domain=DOMAIN)
        q = b.op("DoubleInScratch", b.op("Neg", x), domain=DOMAIN)
        b.op("Add", p, b.op("Relu", q), outputs=["y"])
        b.output("y", np.float32)

    model = _model(build)
    x = _feeds(1, 3)["x"]
    _runs_alike(model, [_feeds(1, 3)] * 3)  # the first run sizes the workspace, the next ones use it
    session = Session(model)
    session.arenas = arenas_for(session)
    for _ in range(3):
        y, = session.run({"x": x})
        np.testing.assert_allclose(y, 2 * x + np.maximum(-2 * x, 0), rtol=1e-6)
    assert session.arenas.workspace.size >= x.nbytes


def test_each_batch_size_gets_its_plan_and_the_block_fits_the_largest():
    def build(b, x):
        h = b.op("Relu", b.op("Mul", x, b.const(np.float32(0.5))))
        b.op("Sigmoid", b.op("Add", h, b.op("Neg", x)), outputs=["y"])
        b.output("y", np.float32)

    model = _model(build)
    _runs_alike(model, [_feeds(n, n) for n in (1, 3, 1, 5, 2)])
    session = Session(model)
    session.arenas = arenas_for(session)
    for n in (1, 5):
        session.run(_feeds(n, 0))
    assert session.arenas.block.size >= plan_memory(session, 5).peak_bytes


@pytest.mark.parametrize("name, build", [
    ("mobilenet_v3_style", lambda: zoo.mobilenet_v3_style(size=96, classes=10)),
    ("yolov8_style", lambda: zoo.yolov8_style(size=96)),
    ("resnet8_cifar", zoo.resnet8_cifar),
    ("transformer", lambda: zoo.transformer_encoder(seq=16, dim=32, heads=2, layers=2, ffn=64)),
])
def test_zoo_models_give_the_same_outputs_with_and_without_the_arena(name, build):
    proto = model_to_proto(build()).SerializeToString()
    pooled = Predictor(Config(model_path=proto, num_threads=1))
    plain = Predictor(Config(model_path=proto, num_threads=1, memory_arena=False))
    assert pooled.session.arenas is not None and plain.session.arenas is None
    feed_name = pooled.get_input_names()[0]
    shape = [d if isinstance(d, int) else 1 for d in pooled.get_input_tensor(feed_name).shape]
    rng = np.random.default_rng(0)
    runs = []
    for _ in range(2):
        feeds = {feed_name: rng.standard_normal(shape).astype(np.float32)}
        got, want = pooled.run(feeds), plain.run(feeds)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=f"{name} output {k}")
        runs.append((got, {k: v.copy() for k, v in got.items()}))
    for got, copy in runs:  # the second run left the first one's outputs alone
        for k in copy:
            np.testing.assert_array_equal(got[k], copy[k])


def _traced_peak(predictor: Predictor, feeds: dict) -> int:
    tracemalloc.start()
    try:
        predictor.run(feeds)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_run_from_the_arena_allocates_no_activation_memory():
    proto = model_to_proto(zoo.mobilenet_v2(size=96, classes=10)).SerializeToString()
    feeds = {"input": np.random.default_rng(0).standard_normal((1, 3, 96, 96)).astype(np.float32)}
    pooled = Predictor(Config(model_path=proto, num_threads=1))
    plain = Predictor(Config(model_path=proto, num_threads=1, memory_arena=False))
    for p in (pooled, plain):
        p.run(feeds)  # the arena and its workspace are laid out by now
    with_arena, without = _traced_peak(pooled, feeds), _traced_peak(plain, feeds)
    assert with_arena < 0.1 * without, (with_arena, without)
    assert pooled.session.arenas.nbytes >= pooled.memory_plan(1).peak_bytes * 0.5


def test_concurrent_runs_of_one_predictor_stay_correct():
    proto = model_to_proto(zoo.mobilenet_v3_style(size=64, classes=10)).SerializeToString()
    p = Predictor(Config(model_path=proto, num_threads=1))
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((1, 3, 64, 64)).astype(np.float32) for _ in range(4)]
    name = p.get_output_names()[0]
    want = [p.run({"input": x})[name].copy() for x in inputs]
    errors: list[str] = []

    def worker(k: int) -> None:
        for i in range(12):
            j = (i + k) % len(inputs)
            got = p.run({"input": inputs[j]})[name]
            if not np.array_equal(got, want[j]):
                errors.append(f"thread {k} run {i}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def _if_model() -> bytes:
    f = onnx.TensorProto.FLOAT
    branch = lambda op, name: onnx.helper.make_graph(  # noqa: E731
        [onnx.helper.make_node(op, ["x"], [name])], name, [], [onnx.helper.make_tensor_value_info(name, f, [2])])
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
         onnx.helper.make_node("Greater", ["s", "zero"], ["c"]),
         onnx.helper.make_node("If", ["c"], ["y"], then_branch=branch("Relu", "t"), else_branch=branch("Neg", "e"))],
        "if", [onnx.helper.make_tensor_value_info("x", f, [2])], [onnx.helper.make_tensor_value_info("y", f, [2])],
        [onnx.numpy_helper.from_array(np.zeros((), np.float32), "zero")])
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]).SerializeToString()


def test_the_arena_is_off_for_control_flow_and_when_asked():
    p = Predictor(Config(model_path=_if_model()))
    assert p.session.arenas is None  # subgraphs run outside any plan
    np.testing.assert_array_equal(p.run({"x": np.array([1, -3], np.float32)})["y"], [-1, 3])

    def relu(b, x):
        b.op("Relu", x, outputs=["y"])
        b.output("y", np.float32)

    proto = model_to_proto(_model(relu)).SerializeToString()
    assert Predictor(Config(model_path=proto)).session.arenas is not None
    assert Predictor(Config(model_path=proto, memory_arena=False)).session.arenas is None
    assert Predictor(Config(model_path=proto, memory_optimization=False)).session.arenas is None


def _sequence_model() -> bytes:
    """x (1, seq, 32) -> a two-layer MLP with a residual: every intermediate's size is a symbolic
    sequence length's, which the inferred shapes cannot give."""
    rng = np.random.default_rng(0)
    b = GraphBuilder("seq", opset=17)
    x = b.input("x", np.float32, [1, "seq", 32])
    h = b.op("Relu", b.op("MatMul", x, b.const(rng.standard_normal((32, 128)).astype(np.float32))))
    h = b.op("MatMul", h, b.const(rng.standard_normal((128, 32)).astype(np.float32)))
    b.op("Tanh", b.op("Add", h, x), outputs=["y"])
    b.output("y", np.float32)
    return model_to_proto(b.build()).SerializeToString()


def _sequence_feeds(seq: int, seed: int) -> dict:
    return {"x": np.random.default_rng(seed).standard_normal((1, seq, 32)).astype(np.float32)}


def test_a_symbolic_sequence_length_is_planned_from_a_run_of_it():
    """Taken as the batch, the sequence dim planned every region at one token: nothing fitted and
    every run allocated. Now the first run of a length notes its shapes, the next is planned from
    them, and runs of other lengths keep theirs."""
    from inference.arena import sized_by_run

    model = load_model(_sequence_model())
    session = Session(model)
    session.arenas = arenas_for(session)
    assert sized_by_run(session)
    feeds = _sequence_feeds(100, 0)
    session.run(feeds)
    assert session.arenas.block.size == 0  # the first run of a length: numpy's, shapes noted
    session.run(feeds)
    planned = plan_memory(session, seen=session.value_shapes(feeds))
    assert not planned.unknown and planned.peak_bytes >= 100 * 128 * 4
    assert session.arenas.block.size == planned.peak_bytes
    _runs_alike(model, [_sequence_feeds(n, n) for n in (7, 7, 100, 7, 100, 100, 3)])


def test_a_longer_sequence_keeps_the_shorter_ones_replays():
    """A decoder's sequence grows a token a run: grown just to fit, each longer one replaced the
    block and dropped every replay recorded on it. Grown by half again, a token more fits."""
    from inference.arena import grown
    from inference.kernel_replay import CAPTURE_AFTER, Replay

    p = Predictor(Config(model_path=_sequence_model(), num_threads=1))
    short, longer, longest = _sequence_feeds(40, 0), _sequence_feeds(41, 1), _sequence_feeds(42, 2)
    for feeds in (short, short, longer, longer):  # planned at 40 tokens, grown at 41: room for 60
        p.run(feeds)
    for _ in range(CAPTURE_AFTER + 1):
        want = p.run(short)["y"]
    block = p.session.arenas.block
    for _ in range(2):  # the second run is planned: more than 41 tokens took, less than the block
        p.run(longest)
    assert p.session.arenas.block is block
    replays = [e for e in p.session.replays._entries.values() if isinstance(e, Replay)]
    assert len(replays) == 1 and replays[0].block is block
    uses = replays[0].uses
    np.testing.assert_array_equal(p.run(short)["y"], want)
    assert replays[0].uses == uses + 1  # replayed, not captured again
    assert grown(0, 100) == 100 and grown(100, 120) == 150 and grown(100, 400) == 400
    assert grown(64 << 20, (64 << 20) + 1) == (72 << 20)  # at most GROWTH_CAP more


def _planned_peaks(pooled: Predictor, plain: Predictor, feeds: dict, output: str) -> tuple[int, int]:
    """The traced allocation peaks of a planned run of ``feeds`` from the arena and of one without
    (after two runs each), their ``output`` checked equal."""
    for p in (pooled, plain):
        p.run(feeds)
        p.run(feeds)  # planned by now
    peaks = _traced_peak(pooled, feeds), _traced_peak(plain, feeds)
    np.testing.assert_array_equal(pooled.run(feeds)[output], plain.run(feeds)[output])
    return peaks


def _int8_mobilenet(**config) -> tuple[Predictor, dict]:
    proto = model_to_proto(zoo.mobilenet_v2(size=64, classes=10)).SerializeToString()
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((8, 3, 64, 64)).astype(np.float32)
    p = Predictor(Config(model_path=proto, num_threads=1, precision="int8", calibration_data=calib, **config))
    hist = p.model.graph.op_histogram()
    assert hist.get("edgelearn::QConvNHWC", 0) + hist.get("edgelearn::QConv", 0) > 10, hist
    return p, {"input": rng.standard_normal((1, 3, 64, 64)).astype(np.float32)}


def test_an_int8_model_runs_from_the_arena_too():
    """Static int8 (QuantizeLinear, the int8 convolutions on both tiles, QAdd, DequantizeLinear):
    their results go to their arena slots as float kernels' do; they had allocated each activation
    anew on every run."""
    (pooled, feeds), (plain, _) = (_int8_mobilenet(kernel_replay=False, memory_arena=arena) for arena in (True, False))
    with_arena, without = _planned_peaks(pooled, plain, feeds, "logits")
    assert with_arena < 0.35 * without, (with_arena, without)


def test_an_int8_replay_holds_no_activations_of_its_own():
    """A replay repeats the calls its capture recorded, holding the arrays they wrote: from the
    arena, not one array per activation (int8 MobileNetV2 at 224: +9.8 MB over its first run
    replayed, +2.4 from the arena)."""
    p, feeds = _int8_mobilenet()
    p.run(feeds)
    p.run(feeds)  # planned
    tracemalloc.start()
    try:
        p.run(feeds)  # captured: what the replay keeps stays allocated
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert "replayed" in p.replay_report()
    activations = p.memory_plan(feeds=feeds).no_reuse_bytes
    assert held < 0.4 * activations, (held, activations)  # the feed and output copies, mostly


def test_a_run_of_a_planned_sequence_length_allocates_no_activation_memory():
    pooled, plain = (Predictor(Config(model_path=_sequence_model(), num_threads=1, kernel_replay=False,
                                      memory_arena=arena)) for arena in (True, False))
    feeds = _sequence_feeds(256, 1)
    with_arena, without = _planned_peaks(pooled, plain, feeds, "y")
    assert with_arena < 0.3 * without, (with_arena, without)
    plan = pooled.memory_plan(feeds=feeds)
    assert plan.peak_bytes >= 256 * 128 * 4 and pooled.memory_plan(1).peak_bytes < plan.peak_bytes / 100


@pytest.mark.parametrize("heads, planned_as_view", [(4, False), (1, True)])
def test_a_transpose_that_copies_gets_a_region_and_one_that_reshapes_stays_a_view(heads, planned_as_view):
    """Attention's (0, 2, 1, 3) over (B, L, H, D) swaps blocks: the kernel writes a new array, which
    the plan now places (as a view it had been allocated by numpy every run). With one head the
    same permutation moves nothing (a reshape): a view of its input, as before."""
    b = GraphBuilder("heads", opset=17)
    x = b.input("x", np.float32, ["batch", 8, heads, 16])
    t = b.op("Transpose", b.op("Mul", x, b.const(np.float32(2))), perm=[0, 2, 1, 3])
    b.op("Relu", t, outputs=["y"])
    b.output("y", np.float32)
    model = load_model(model_to_proto(b.build()))
    session = Session(model)
    out = next(s.node.outputs[0] for s in session.steps if s.node.op_type == "Transpose")
    assert plan_memory(session).buffers[out].view == planned_as_view
    feeds = {"x": np.random.default_rng(5).standard_normal((2, 8, heads, 16)).astype(np.float32)}
    (y,), = _runs_alike(model, [feeds])
    np.testing.assert_array_equal(y, np.maximum(2 * feeds["x"], 0).transpose(0, 2, 1, 3))
