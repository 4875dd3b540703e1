"""``merge_concat_convs``: channels-last convolutions concatenated from one input become one
convolution (SqueezeNet's fire module, Inception's 1x3 / 3x1 pairs), outputs unchanged, and the
cases that must stay apart."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from inference.builder import GraphBuilder
from inference.onnx_export import model_to_proto
from inference.passes import layout, optimize
from inference.session import CONSTANT_WEIGHT_KINDS, Session
from tests.conftest import run_as_standard_onnx

RTOL, ATOL = 1e-4, 1e-5
C, HW = 16, 9


def _net(branches, acts=None, reader=False, residual=False, second_input=False, squeeze=C):
    """x -> 1x1 squeeze to ``squeeze`` channels + Relu -> one Conv (+ activation) per branch
    ``(M, kernel, pads)`` -> Concat on the channels -> 1x1 conv -> y. ``reader``: the first
    branch is also a graph output; ``residual``: the first branch adds the squeeze output (M =
    ``squeeze``); ``second_input``: the last branch reads x instead (``squeeze`` = C)."""
    rng = np.random.default_rng(len(branches))
    b = GraphBuilder("fire", opset=17)
    x = b.input("x", np.float32, [1, C, HW, HW])
    sq = b.op("Relu", b.op("Conv", x, b.const(rng.standard_normal((squeeze, C, 1, 1)).astype(np.float32)),
                           b.const(rng.standard_normal(squeeze).astype(np.float32))))
    outs = []
    for i, (m, kernel, pads) in enumerate(branches):
        scale = 1 / np.sqrt(squeeze * np.prod(kernel))
        w = b.const((rng.standard_normal((m, squeeze, *kernel)) * scale).astype(np.float32))
        src = x if second_input and i == len(branches) - 1 else sq
        h = b.op("Conv", src, w, b.const(rng.standard_normal(m).astype(np.float32)), kernel_shape=list(kernel),
                 pads=list(pads))
        if residual and i == 0:
            h = b.op("Add", h, sq)
        outs.append(b.op((acts or ["Relu"] * len(branches))[i], h))
    if reader:
        b.op("Identity", outs[0], outputs=["side"])
    cat = b.op("Concat", *outs, axis=1)
    total = sum(m for m, _, _ in branches)
    b.op("Conv", cat, b.const(rng.standard_normal((8, total, 1, 1)).astype(np.float32)), outputs=["y"])
    b.output("y", np.float32, [1, 8, HW, HW])
    if reader:
        b.output("side", np.float32, [1, branches[0][0], HW, HW])
    return b.build()


def _feeds():
    return {"x": np.random.default_rng(7).standard_normal((1, C, HW, HW)).astype(np.float32)}


@pytest.fixture(autouse=True)
def channels_last(monkeypatch):
    monkeypatch.setattr(layout, "MIN_DEPTHWISE_PER_BOUNDARY", 0.0)  # toy graphs: convert them anyway
    monkeypatch.setattr(layout, "MIN_GEMM_MACS_PER_BOUNDARY", 0.0)


def _check_outputs(build, merged):
    want = Session(build(), kinds=("reference",)).run(_feeds())
    apart = build()
    optimize(apart, switches={"merge_concat_convs": False})
    for kinds in (CONSTANT_WEIGHT_KINDS, ("fast", "reference"), ("reference",)):
        got = Session(merged, kinds=kinds).run(_feeds())
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL, err_msg=str(kinds))
    # a Predictor's kinds: the merged product skips the zero taps and gives the sums of the branches apart
    np.testing.assert_array_equal(Session(merged, kinds=CONSTANT_WEIGHT_KINDS).run(_feeds())[0],
                                  Session(apart, kinds=CONSTANT_WEIGHT_KINDS).run(_feeds())[0])


FIRE = [(64, (1, 1), (0, 0, 0, 0)), (64, (3, 3), (1, 1, 1, 1))]
CASES = {
    "fire": (FIRE, (3, 3), [1, 1, 1, 1]),
    "3x3-first": (FIRE[::-1], (3, 3), [1, 1, 1, 1]),
    "three-branches": (FIRE + [(128, (5, 5), (2, 2, 2, 2))], (5, 5), [2, 2, 2, 2]),
    "1x3-and-3x1": ([(64, (1, 3), (0, 1, 0, 1)), (64, (3, 1), (1, 0, 1, 0))], (3, 3), [1, 1, 1, 1]),
    "uneven-pads": ([(64, (1, 1), (0, 0, 0, 0)), (64, (2, 2), (1, 1, 0, 0))], (2, 2), [1, 1, 0, 0]),
}


@pytest.mark.parametrize("case", CASES)
def test_branches_become_one_conv(case):
    branches, kernel, pads = CASES[case]
    model = _net(branches)
    applied = optimize(model)
    assert "merge_concat_convs" in applied
    g = model.graph
    assert not any(n.op_type == "Concat" for n in g.nodes)
    merged = [n for n in g.nodes if n.op_type == "FusedConvNHWC" and n.attrs.get("kernel_shape") == list(kernel)]
    assert len(merged) == 1 and merged[0].attrs["pads"] == pads and merged[0].attrs["activation"] == "Relu"
    w = g.initializers[merged[0].inputs[1]]
    assert w.shape == (*kernel, C, sum(m for m, _, _ in branches))
    _check_outputs(lambda: _net(branches), model)


def test_exports_as_standard_onnx():
    model = _net(FIRE)
    optimize(model)
    want = ort.InferenceSession(model_to_proto(_net(FIRE)).SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, _feeds())[0]
    np.testing.assert_allclose(run_as_standard_onnx(model, _feeds())[0], want, rtol=RTOL, atol=ATOL)


STAY = {
    "branch-read-elsewhere": dict(reader=True),
    "other-activation": dict(acts=["Relu", "Sigmoid"]),
    "residual": dict(residual=True, squeeze=64),
    "other-input": dict(second_input=True),
    "unaligned-widths": dict(branches=[(40, (1, 1), (0, 0, 0, 0)), (64, (3, 3), (1, 1, 1, 1))]),
}


@pytest.mark.parametrize("case", STAY)
def test_branches_that_stay_apart(case):
    kwargs = dict(STAY[case])
    branches = kwargs.pop("branches", FIRE)

    def build():
        return _net(branches, **kwargs)

    model = build()
    applied = optimize(model)
    assert "layout_nhwc" in applied and "merge_concat_convs" not in applied
    assert any(n.op_type == "Concat" for n in model.graph.nodes)
    _check_outputs(build, model)


def test_a_window_short_of_the_end_is_not_merged():
    """A 3x3 / 2 conv on 10 rows without padding never reads the last row: its window would need
    an end padding of -1, which a merged convolution cannot express."""
    from inference.ops._window import window_geometry
    from inference.passes.concat_convs import _merged_window

    short = window_geometry((10, 10), (3, 3), (2, 2), None, (0, 0, 0, 0))
    centre = window_geometry((10, 10), (1, 1), (2, 2), None, (0, 0, 0, 0))
    assert short.out_shape == (4, 4) and _merged_window([short, centre], (10, 10)) is None
    fire = [window_geometry((9, 9), (1, 1)), window_geometry((9, 9), (3, 3), None, None, (1, 1, 1, 1))]
    assert _merged_window(fire, (9, 9)) == ([3, 3], [1, 1, 1, 1], [(1, 1), (0, 0)])
