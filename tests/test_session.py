"""The session plan: intermediates freed after their last reader, several inputs and outputs, kernels
bound at plan time (attributes, memoised geometry) giving the reference kernels' results."""
from __future__ import annotations

import numpy as np
import pytest

from inference import Session
from inference.builder import GraphBuilder
from inference.errors import InputError, KernelError


def _two_in_two_out():
    b = GraphBuilder("two", opset=17)
    x = b.input("x", np.float32, ["n"])
    y = b.input("y", np.float32, ["n"])
    s = b.op("Add", x, y)
    t = b.op("Mul", s, s)
    u = b.op("Relu", t, outputs=["u"])
    v = b.op("Neg", s, outputs=["v"])
    b.output(u)
    b.output(v)
    return b.build(), s, t


def test_multiple_inputs_and_outputs():
    model, _, _ = _two_in_two_out()
    x, y = np.arange(4, dtype=np.float32), np.ones(4, np.float32)
    u, v = Session(model).run({"x": x, "y": y})
    np.testing.assert_array_equal(u, (x + y) ** 2)
    np.testing.assert_array_equal(v, -(x + y))


def test_intermediates_freed_after_last_reader():
    model, s, t = _two_in_two_out()
    steps = Session(model).steps
    freed_at = {name: i for i, step in enumerate(steps) for name in step.free_after}
    readers = {name: max(i for i, st in enumerate(steps) if name in st.node.inputs) for name in (s, t)}
    assert {name: freed_at.get(name) for name in (s, t)} == readers  # freed right after the last reader
    assert "u" not in freed_at and "v" not in freed_at  # graph outputs are never freed


# -- the planned run loop: attributes bound once, omitted inputs/outputs, errors, profiler ----------
def test_omitted_optional_input_and_unnamed_output():
    b = GraphBuilder("opt", opset=17)
    x = b.input("x", np.float32, [5])
    hi = b.const(np.array(1.5, np.float32))
    clipped = b.op("Clip", x, None, hi)  # min omitted: reads as None
    b.op("Dropout", clipped, outputs=["y", ""])  # mask not wanted
    b.output("y")
    x_val = np.array([-3, -1, 0, 1, 3], np.float32)
    session = Session(b.build())
    for _ in range(2):  # the plan is reused: nothing of one run leaks into the next
        (y,) = session.run({"x": x_val})
        np.testing.assert_array_equal(y, np.minimum(x_val, 1.5))


def test_missing_feed_names_the_node_and_the_value():
    model, _, _ = _two_in_two_out()
    with pytest.raises(InputError, match=r"needs 'y'"):
        Session(model).run({"x": np.ones(4, np.float32)})


def test_kernel_failure_names_node_and_inputs_and_keeps_cause():
    b = GraphBuilder("bad", opset=17)
    x = b.input("x", np.float32, [6])
    b.op("Reshape", x, b.const(np.array([4, 4], np.int64)), outputs=["y"], name="bad_reshape")
    b.output("y")
    with pytest.raises(KernelError, match="bad_reshape") as info:
        Session(b.build()).run({"x": np.ones(6, np.float32)})
    assert isinstance(info.value.__cause__, KernelError)  # the kernel's own message stays reachable


def test_profiler_sees_every_step_in_order():
    model, _, _ = _two_in_two_out()
    session = Session(model)
    seen = []
    session.profiler = lambda node, kernel, start, end: seen.append((node.op_type, kernel.kind, end >= start))
    session.run({"x": np.ones(4, np.float32), "y": np.ones(4, np.float32)})
    assert [op for op, _, _ in seen] == [s.node.op_type for s in session.steps]
    assert all(ok for _, _, ok in seen) and seen[2][1] == "fast"  # Relu ran its fast kernel


def test_a_failing_profiler_hook_is_not_reported_as_the_node_failing():
    model, _, _ = _two_in_two_out()
    session = Session(model)

    def hook(node, kernel, start, end):
        raise RuntimeError("the hook broke")

    session.profiler = hook
    with pytest.raises(RuntimeError, match="the hook broke") as caught:
        session.run({"x": np.ones(4, np.float32), "y": np.ones(4, np.float32)})
    assert not isinstance(caught.value, KernelError)


def test_attributes_are_bound_at_plan_time():
    b = GraphBuilder("flat", opset=17)
    x = b.input("x", np.float32, [2, 3, 4])
    b.op("Flatten", x, axis=2, outputs=["y"])
    b.output("y")
    model = b.build()
    session = Session(model)
    model.graph.nodes[0].attrs["axis"] = 1  # an edit after planning needs a new session
    x_val = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    assert session.run({"x": x_val})[0].shape == (6, 4)
    assert Session(model).run({"x": x_val})[0].shape == (2, 12)


POOLS = [  # (op, kernel, strides, dilations, pads, ceil_mode): the unpadded fast path and the padded one
    ("MaxPool", [2, 2], [2, 2], [1, 1], None, 0),
    ("MaxPool", [3, 2], [1, 1], [2, 1], None, 0),  # stride 1 reads contiguous slices
    ("MaxPool", [2, 3], [1, 3], [1, 2], [0, 0, 0, 0], 0),
    ("MaxPool", [3, 3], [2, 2], [1, 1], [1, 1, 1, 1], 0),
    ("MaxPool", [2, 2], [2, 2], [1, 1], None, 1),  # ceil_mode on an odd size: padded end
    ("AveragePool", [2, 2], [2, 2], None, None, 0),
    ("AveragePool", [3, 3], [1, 1], None, [1, 0, 1, 2], 0),
    ("AveragePool", [3, 2], [2, 1], None, None, 1),
]


@pytest.mark.parametrize("op, kernel, strides, dilations, pads, ceil", POOLS)
def test_fast_pools_match_reference_through_a_session(op, kernel, strides, dilations, pads, ceil):
    b = GraphBuilder("pool", opset=19)
    x = b.input("x", np.float32, [2, 3, 9, 11])
    attrs = dict(kernel_shape=kernel, strides=strides, ceil_mode=ceil)
    if dilations is not None:
        attrs["dilations"] = dilations
    if pads is not None:
        attrs["pads"] = pads
    b.op(op, x, outputs=["y"], **attrs)
    b.output("y")
    model = b.build()
    fast, ref = Session(model), Session(model, kinds=("reference",))
    assert fast.steps[0].kernel.kind == "fast"
    rng = np.random.default_rng(0)
    for shape in ((2, 3, 9, 11), (1, 3, 9, 11), (2, 3, 9, 11)):  # the memoised geometry is per shape
        x_val = rng.standard_normal(shape).astype(np.float32)
        np.testing.assert_allclose(fast.run({"x": x_val})[0], ref.run({"x": x_val})[0], rtol=1e-6, atol=1e-6)


CONVS = [  # (op, attrs, with residual): the bound fast conv against the reference kernels
    ("Conv", dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), False),
    ("Conv", dict(strides=[2, 1], dilations=[1, 2], auto_pad="SAME_UPPER"), False),
    ("Conv", dict(group=2, kernel_shape=[1, 1]), False),
    ("FusedConv", dict(kernel_shape=[3, 3], pads=[1, 0, 1, 2], activation="Relu"), True),
    ("FusedConv", dict(strides=[2, 2], activation="Clip", alpha=-0.5, beta=0.5), False),
]


@pytest.mark.parametrize("op, attrs, residual", CONVS)
def test_bound_fast_conv_matches_reference(op, attrs, residual):
    rng = np.random.default_rng(1)
    b = GraphBuilder("conv", opset=17)
    x = b.input("x", np.float32, ["n", 4, "h", "w"])
    k = attrs.get("kernel_shape", [3, 3])
    w = b.const(rng.standard_normal((6, 4 // attrs.get("group", 1), *k)).astype(np.float32) * 0.3)
    bias = b.const(rng.standard_normal(6).astype(np.float32))
    domain = "edgelearn" if op == "FusedConv" else ""
    if residual:
        z = b.input("z", np.float32, ["n", 6, "h", "w"])
        b.op(op, x, w, bias, z, outputs=["y"], domain=domain, **attrs)
    else:
        b.op(op, x, w, bias, outputs=["y"], domain=domain, **attrs)
    b.output("y")
    model = b.build()
    model.opset_imports["edgelearn"] = 1
    fast, ref = Session(model), Session(model, kinds=("reference",))
    assert fast.steps[0].kernel.bind is not None and fast.steps[0].kernel.kind == "fast"
    for shape in ((2, 4, 9, 8), (1, 4, 6, 7), (2, 4, 9, 8)):  # the window is memoised per input shape
        feeds = {"x": rng.standard_normal(shape).astype(np.float32)}
        if residual:
            feeds["z"] = rng.standard_normal((shape[0], 6) + shape[2:]).astype(np.float32)
        np.testing.assert_allclose(fast.run(feeds)[0], ref.run(feeds)[0], rtol=1e-4, atol=1e-4)


def test_bad_attribute_of_a_bound_kernel_fails_when_the_node_runs():
    b = GraphBuilder("bad", opset=17)
    x = b.input("x", np.float32, [1, 1, 4, 4])
    w = b.const(np.ones((1, 1, 1, 1), np.float32))
    b.op("FusedConv", x, w, outputs=["y"], domain="edgelearn", activation="Frobnicate", name="odd_conv")
    b.output("y")
    model = b.build()
    model.opset_imports["edgelearn"] = 1
    session = Session(model)  # planning succeeds: the unknown activation is the kernel's to report
    with pytest.raises(KernelError, match=r"odd_conv.*Frobnicate"):
        session.run({"x": np.ones((1, 1, 4, 4), np.float32)})
