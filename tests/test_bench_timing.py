"""``edgelearn bench``'s timers: every interleaved block is settled before it is timed; layers in
model order rotate their sides."""
import time

from edgelearn.commands.bench import time_in_model_order, time_interleaved


def _recorder(stamps: list[float], pause: float = 0.0):
    def run(feeds):
        stamps.append(time.perf_counter())
        if pause:
            time.sleep(pause)
    return run


def test_each_block_starts_with_one_untimed_run():
    stamps = {"a": [], "b": []}
    timed = time_interleaved({k: _recorder(v) for k, v in stamps.items()}, {}, repeat=6, warmup=0, block=3)
    assert {k: len(t.times) for k, t in timed.items()} == {"a": 6, "b": 6}
    assert {k: len(v) for k, v in stamps.items()} == {"a": 8, "b": 8}  # 2 blocks x (1 settle + 3 timed)


def test_settle_time_passes_before_a_block_is_timed():
    stamps: list[float] = []
    start = time.perf_counter()
    timed = time_interleaved({"a": _recorder(stamps, pause=0.005)}, {}, repeat=3, warmup=0, block=3, settle_s=0.05)
    assert len(timed["a"].times) == 3
    assert stamps[-3] >= start + 0.05  # untimed 5 ms runs repeat until 0.05 s have passed, then it is timed


def test_model_order_runs_every_layer_on_one_side_then_the_next_rotating():
    """Per round, all layers on one side, then on the other; which side goes first rotates; the
    warm-up rounds run but are not timed."""
    calls: list[tuple[int, str]] = []
    layers = [{side: (lambda i=i, s=side: calls.append((i, s))) for side in ("a", "b")} for i in range(3)]
    times = time_in_model_order(layers, rounds=2, warmup=1)
    assert [{k: len(v) for k, v in t.items()} for t in times] == [{"a": 2, "b": 2}] * 3
    a, b = [(i, "a") for i in range(3)], [(i, "b") for i in range(3)]
    assert calls == a + b + b + a + a + b  # warm-up round a-first, then b-first, then a-first again


def test_our_runner_runs_a_model_of_two_outputs_once_per_call():
    """It had run the model once per output (a comprehension over ``run(feeds)[name]``): the
    YOLOv8-style detector with its two scales timed at twice its latency."""
    import numpy as np

    from edgelearn.commands.bench import edgelearn_runner
    from inference.builder import GraphBuilder

    b = GraphBuilder("two_outputs", opset=17)
    x = b.input("x", np.float32, [2, 3])
    b.op("Relu", x, outputs=["r"])
    b.op("Neg", x, outputs=["n"])
    b.output("r", np.float32, [2, 3])
    b.output("n", np.float32, [2, 3])
    runner, pred = edgelearn_runner(b.build(), 1)
    runs, run = [], pred.run
    pred.run = lambda feeds: runs.append(1) or run(feeds)
    feeds = {"x": np.arange(-3, 3, dtype=np.float32).reshape(2, 3)}
    r, n = runner(feeds)
    assert len(runs) == 1
    assert np.array_equal(r, np.maximum(feeds["x"], 0)) and np.array_equal(n, -feeds["x"])
