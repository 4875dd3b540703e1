"""Developer aid: run onnx's single-node backend tests straight against registry kernels.

Usage: python tools/quick_node_check.py [substring ...]   (no argument: every node test)
Prints pass/fail per test and a summary; the real conformance suite is tests/test_conformance.py.
"""
from __future__ import annotations

import glob
import os
import sys
import traceback

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.backend.test.loader import load_model_tests

import inference.ops  # noqa: F401  (registers kernels)
from inference.attributes import attr_to_python
from inference.ops.registry import KernelContext, lookup


def _read(path: str, tp: onnx.TypeProto):
    data = open(path, "rb").read()
    kind = tp.WhichOneof("value")
    if kind == "sequence_type":
        p = onnx.SequenceProto(); p.ParseFromString(data); return numpy_helper.to_list(p)
    if kind == "optional_type":
        p = onnx.OptionalProto(); p.ParseFromString(data); return numpy_helper.to_optional(p)
    p = onnx.TensorProto(); p.ParseFromString(data); return numpy_helper.to_array(p)


def _norm(v):
    if isinstance(v, onnx.TensorProto):
        return numpy_helper.to_array(v)
    if isinstance(v, onnx.SequenceProto):
        return numpy_helper.to_list(v)
    if isinstance(v, onnx.OptionalProto):
        return numpy_helper.to_optional(v)
    return v


def check(t) -> str:
    m = t.model
    g = m.graph
    if len(g.node) != 1:
        return "skip(multi-node)"
    node = g.node[0]
    opset = {o.domain if o.domain != "ai.onnx" else "": o.version for o in m.opset_import}.get(node.domain, 1)
    entry = lookup(node.op_type, node.domain, opset)
    if entry is None:
        return f"MISSING {node.domain}::{node.op_type} opset {opset}"
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
        return "skip(subgraph)"
    attrs = {a.name: attr_to_python(a) for a in node.attribute}
    for inputs, outputs in t.data_sets:
        feeds = {vi.name: _norm(v) for vi, v in zip(g.input, inputs)}
        args = [feeds.get(n) if n else None for n in node.input]
        kw = dict(attrs)
        if entry.wants_ctx:
            kw["ctx"] = KernelContext(node=node, opset=opset, num_outputs=len(node.output))
        try:
            out = entry.fn(*args, **kw)
        except Exception as e:  # noqa: BLE001
            return f"ERROR {type(e).__name__}: {e}"[:300]
        if not isinstance(out, (tuple, list)) or (len(node.output) == 1 and isinstance(out, list)
                                                  and g.output[0].type.WhichOneof("value") == "sequence_type"):
            out = (out,)
        for i, vi in enumerate(g.output):
            exp = _norm(outputs[i])
            got = out[i] if i < len(out) else "<missing>"
            err = _compare(exp, got)
            if err:
                return f"FAIL output {i}: {err}"[:400]
    return "ok"


def _compare(exp, got) -> str:
    if isinstance(exp, list):
        if not isinstance(got, list) or len(got) != len(exp):
            return f"sequence mismatch {type(got)}"
        for e, g in zip(exp, got):
            r = _compare(e, g)
            if r:
                return r
        return ""
    if exp is None:
        return "" if got is None else "expected None"
    got = np.asarray(got) if not isinstance(got, np.ndarray) else got
    if got.dtype != exp.dtype:
        return f"dtype {got.dtype} != {exp.dtype}"
    if got.shape != exp.shape:
        return f"shape {got.shape} != {exp.shape}"
    if exp.dtype.kind in "OUS":
        return "" if (got == exp).all() else "values differ"
    try:
        np.testing.assert_allclose(got.astype(np.float64) if exp.dtype.kind == "V" or "float8" in str(exp.dtype) or "bfloat" in str(exp.dtype) else got,
                                   exp.astype(np.float64) if exp.dtype.kind == "V" or "float8" in str(exp.dtype) or "bfloat" in str(exp.dtype) else exp,
                                   rtol=1e-3, atol=1e-7)
    except AssertionError as e:
        return str(e).replace("\n", " ")[:300]
    return ""


def main(argv: list[str]) -> None:
    tests = load_model_tests(kind="node")
    if argv:
        tests = [t for t in tests if any(a in t.name for a in argv)]
    n_ok = 0
    for t in tests:
        try:
            r = check(t)
        except Exception:  # noqa: BLE001
            r = "HARNESS " + traceback.format_exc(limit=1).replace("\n", " ")[:200]
        n_ok += r == "ok"
        print(f"{t.name}: {r}")
    print(f"{n_ok}/{len(tests)} ok")


if __name__ == "__main__":
    main(sys.argv[1:])
