"""The session plan: intermediates freed after their last reader, several inputs and outputs."""
from __future__ import annotations

import numpy as np

from inference import Session
from inference.builder import GraphBuilder


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
