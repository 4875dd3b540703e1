"""The fast LSTM, GRU and RNN (``inference.kernels.recurrent``) give the reference op's outputs
(``inference.ops.rnn``) for every direction, layout, sequence lengths, initial states, bias,
peepholes and GRU reset form; what they do not take (clip, other activations) is the reference's
result; and a PyTorch export runs on them as onnxruntime runs it."""
from __future__ import annotations

import io
import itertools

import numpy as np
import onnxruntime as ort
import pytest

from inference import Config, Predictor, Session
from inference.kernels.recurrent import gru_fast, lstm_fast, rnn_fast
from inference.onnx_import import load_model
from inference.ops.registry import lookup
from inference.ops.rnn import gru, lstm, rnn
from inference.session import select_kernel

RNG = np.random.default_rng(7)
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
REFERENCE = {"LSTM": lstm, "GRU": gru, "RNN": rnn}
FAST = {"LSTM": lstm_fast, "GRU": gru_fast, "RNN": rnn_fast}
SEQ, INPUT, HIDDEN = 6, 5, 7


def _inputs(op: str, dirs: int, batch: int, layout: int, lens: bool, init: bool, bias: bool, peep: bool) -> list:
    g = GATES[op]
    f = lambda *shape: RNG.standard_normal(shape).astype(np.float32)  # noqa: E731
    x = f(batch, SEQ, INPUT) if layout else f(SEQ, batch, INPUT)
    state = (batch, dirs, HIDDEN) if layout else (dirs, batch, HIDDEN)
    args = [x, f(dirs, g * HIDDEN, INPUT) * 0.6, f(dirs, g * HIDDEN, HIDDEN) * 0.6,
            f(dirs, 2 * g * HIDDEN) if bias else None,
            RNG.integers(0, SEQ + 1, batch).astype(np.int32) if lens else None,
            f(*state) if init else None]
    if op == "LSTM":
        args += [f(*state) if init else None, f(dirs, 3 * HIDDEN) if peep else None]
    return args


def _bound(op: str, kind: str, attrs: dict):
    """The kernel the session would call: the entry's binder with the node's attributes."""
    entry = lookup(op, "", 17, kind)
    return entry.bind(**attrs)


def _close(got, want, rtol=1e-5, atol=2e-6) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


CASES = [(op, direction, lens, init, bias, batch)
         for op, direction, lens, init, bias, batch in itertools.product(
             GATES, ("forward", "reverse", "bidirectional"), (False, True), (False, True), (False, True), (1, 3))]


@pytest.mark.parametrize("op, direction, lens, init, bias, batch", CASES)
def test_same_as_the_reference(op, direction, lens, init, bias, batch, threads):
    """At two threads a one-direction batch recurs in two parts, a thread each."""
    dirs = 2 if direction == "bidirectional" else 1
    args = _inputs(op, dirs, batch, 0, lens, init, bias, peep=op == "LSTM" and bias)
    attrs = {"direction": direction, "hidden_size": HIDDEN}
    for kind in ("fast", "packed"):
        _close(_bound(op, kind, attrs)(*args), REFERENCE[op](*args, **attrs))


@pytest.mark.parametrize("lbr", [0, 1])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("batch", [1, 6])
def test_gru_reset_forms(lbr, direction, batch):
    dirs = 2 if direction == "bidirectional" else 1
    args = _inputs("GRU", dirs, batch, 0, True, True, True, False)
    attrs = {"direction": direction, "linear_before_reset": lbr}
    _close(_bound("GRU", "fast", attrs)(*args), gru(*args, **attrs))


@pytest.mark.parametrize("op", list(GATES))
@pytest.mark.parametrize("batch", [2, 9])  # 9: the recurrent product's blocks of 4 rows and a tail
def test_layout_1_and_larger_batches(op, batch, threads):
    args = _inputs(op, 2, batch, 1, True, True, True, op == "LSTM")
    attrs = {"direction": "bidirectional", "layout": 1}
    _close(_bound(op, "fast", attrs)(*args), REFERENCE[op](*args, **attrs))


def test_sequence_lens_semantics(threads):
    """Past a sequence's length Y is zero and Y_h is the state at its last step (its first for
    the reverse direction); a length 0 keeps the initial state."""
    args = _inputs("LSTM", 2, 3, 0, False, True, True, True)
    args[4] = np.array([SEQ, 2, 0], np.int32)
    y, yh, yc = _bound("LSTM", "fast", {"direction": "bidirectional"})(*args)
    assert not y[2:, :, 1].any() and not y[:, :, 2].any()
    np.testing.assert_array_equal(yh[0, 1], y[1, 0, 1])
    np.testing.assert_array_equal(yh[1, 1], y[0, 1, 1])
    np.testing.assert_array_equal(yh[:, 2], args[5][:, 2])
    np.testing.assert_array_equal(yc[:, 2], args[6][:, 2])
    _close((y, yh, yc), lstm(*args, direction="bidirectional"))


@pytest.mark.parametrize("attrs", [{"clip": 0.5}, {"activations": ["Sigmoid", "Relu", "Tanh"]},
                                   {"input_forget": 1}])
def test_what_it_does_not_take_is_the_reference(attrs):
    args = _inputs("LSTM", 1, 2, 0, True, True, True, True)
    want = lstm(*args, **attrs)
    got = lstm_fast(*args, **attrs)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def _node_model(op: str, attrs: dict) -> bytes:
    from onnx import TensorProto, helper
    g = GATES[op]
    inits = [helper.make_tensor("W", TensorProto.FLOAT, [1, g * HIDDEN, INPUT],
                                RNG.standard_normal(g * HIDDEN * INPUT).astype(np.float32)),
             helper.make_tensor("R", TensorProto.FLOAT, [1, g * HIDDEN, HIDDEN],
                                RNG.standard_normal(g * HIDDEN * HIDDEN).astype(np.float32))]
    node = helper.make_node(op, ["x", "W", "R"], ["y"], hidden_size=HIDDEN, **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [SEQ, 2, INPUT])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_the_session_picks_them_only_where_they_apply():
    plain = load_model(_node_model("LSTM", {}))
    assert select_kernel(plain, plain.graph, plain.graph.nodes[0]).fn is lstm_fast
    assert Session(plain).steps[0].kernel.kind == "fast"  # weights may change: packed on every call
    clipped = load_model(_node_model("LSTM", {"clip": 1.0}))
    assert select_kernel(clipped, clipped.graph, clipped.graph.nodes[0]).kind == "reference"
    x = RNG.standard_normal((SEQ, 2, INPUT)).astype(np.float32)
    data = _node_model("GRU", {"activations": ["HardSigmoid", "Tanh"]})
    p = Predictor(Config(model_path=data))
    assert p.session.steps[0].kernel.kind == "reference"
    want = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(p.run({"x": x})["y"], want, rtol=1e-4, atol=1e-5)


def _torch_export(module, x) -> bytes:
    torch = pytest.importorskip("torch")
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(module.eval(), (torch.from_numpy(x),), buf, input_names=["in0"], opset_version=17,
                          dynamo=False, dynamic_axes={"in0": {0: "batch"}})
    return buf.getvalue()


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch: a GRU exported at batch 3, run at 1
@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_torch_export_matches_onnxruntime_on_the_fast_kernel(name):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = (torch.nn.LSTM(12, 16, 2, batch_first=True) if name == "lstm" else
                        torch.nn.GRU(12, 16, batch_first=True, bidirectional=True))

        def forward(self, x):
            return self.rnn(x)[0]

    x = RNG.standard_normal((3, 9, 12)).astype(np.float32)
    data = _torch_export(Net(), x)
    p = Predictor(Config(model_path=data))
    ops = [s for s in p.session.steps if s.node.op_type in ("LSTM", "GRU")]
    assert ops and all(s.kernel.fn in (lstm_fast, gru_fast) and s.kernel.kind == "packed" for s in ops)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    for batch in (3, 1, 3, 3, 3):  # the later runs of batch 3 are replays
        xb = x[:batch]
        want = sess.run(None, {"in0": xb})[0]
        got = p.run({"in0": xb})
        np.testing.assert_allclose(next(iter(got.values())), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("op", list(GATES))
def test_wider_than_one_panel(op, threads):
    """Hidden and input sizes past the 64 columns of one weight panel (a keyword spotter's 118).
    Inputs from a generator of its own: drawn from the module's, they depended on which tests ran
    before in the same worker, and an RNN draw once came out past the bound (our float32 recurrence
    is ~2.5x the float32 reference's distance from float64 here: 2.8e-6 against 1.6e-6)."""
    g, hidden, k_in, batch, dirs = GATES[op], 70, 80, 5, 2
    rng = np.random.default_rng(hidden)
    f = lambda *shape: (rng.standard_normal(shape) * 0.3).astype(np.float32)  # noqa: E731
    args = [f(SEQ, batch, k_in), f(dirs, g * hidden, k_in), f(dirs, g * hidden, hidden), f(dirs, 2 * g * hidden),
            None, f(dirs, batch, hidden)]
    if op == "LSTM":
        args += [f(dirs, batch, hidden), f(dirs, 3 * hidden)]
    attrs = {"direction": "bidirectional", "hidden_size": hidden}
    _close(_bound(op, "packed", attrs)(*args), REFERENCE[op](*args, **attrs), atol=5e-6)


def test_batch_parts_give_each_thread_work(two_threads):
    from inference.kernels.recurrent import batch_parts
    assert batch_parts(1, 8) == 2 and batch_parts(1, 1) == 1  # one direction: its batch in two halves
    assert batch_parts(2, 8) == 1  # two directions already fill two threads


def test_flops_count_the_products_of_every_step():
    """So that the thread policy threads a recurrent model by its work (it had counted one FLOP
    an output element: a batch-8 LSTM ran serial at two threads)."""
    from inference.flops import node_flops
    model = load_model(_node_model("LSTM", {}))
    g = model.graph
    assert node_flops(g, g.nodes[0]) == 2 * SEQ * 2 * 1 * 4 * HIDDEN * (INPUT + HIDDEN)
