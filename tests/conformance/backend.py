"""Our runtime behind onnx's Backend interface, so onnx.backend.test.BackendTest can drive it.

With ``roundtrip=True`` every run also exports the imported model, checks it
with ``onnx.checker`` (full check) and, where onnxruntime can run the original model, requires
onnxruntime to give the same outputs on our export as on the original.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep

from inference import Session, load_model, model_to_proto
from inference.arena import arenas_for
from inference.passes import optimize
import training.gradient_op  # noqa: F401 - registers the pass expanding ONNX Gradient ops


class RoundTripMismatch(AssertionError):
    pass


class EdgelearnRep(BackendRep):
    def __init__(self, proto: onnx.ModelProto, roundtrip: bool):
        self.proto = proto
        self.model = load_model(proto)
        # the round trip is of import + export; the optimized graph may hold our own fused ops
        self.exported = model_to_proto(self.model) if roundtrip else None
        optimize(self.model)  # as the Predictor does by default: every pass on
        self.session = Session(self.model)
        self.session.arenas = arenas_for(self.session)  # as the Predictor runs it

    def run(self, inputs: Any, **kwargs: Any) -> tuple:
        names = [v.name for v in self.model.graph.feed_inputs()]
        if isinstance(inputs, dict):
            feeds = dict(inputs)
        else:
            feeds = dict(zip(names, inputs if isinstance(inputs, (list, tuple)) else [inputs]))
        outputs = self.session.run(feeds)
        _check_rerun(self.session, feeds, outputs)
        if self.exported is not None:
            check_roundtrip(self.proto, self.exported, feeds)
        return tuple(outputs)


def _check_rerun(session: Session, feeds: dict, outputs: list) -> None:
    """A second run must leave the first one's outputs as they were: none of them may live in
    memory the run writes again (the session's arena)."""
    kept = [np.copy(o) if isinstance(o, np.ndarray) else o for o in outputs]
    session.run(feeds)
    for i, (before, now) in enumerate(zip(kept, outputs)):
        if isinstance(now, np.ndarray):
            assert _same_values(now, before), f"output {i} changed when the model ran again"


def _same_values(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal bit for bit (NaNs and onnx's float8 types included; objects by value)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return np.array_equal(a, b) if a.dtype.kind == "O" else a.tobytes() == b.tobytes()


def check_roundtrip(original: onnx.ModelProto, exported: onnx.ModelProto, feeds: dict) -> None:
    """Our export must be as valid as the original and mean the same to onnxruntime."""
    try:
        onnx.checker.check_model(original, full_check=True)
        full = True
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError):
        full = False  # the suite's own model fails the full check: hold the export to the basic one
    onnx.checker.check_model(exported, full_check=full)
    reference = _run_onnxruntime(original, feeds)
    if reference is None:
        return  # onnxruntime itself cannot run this model: nothing to compare against
    again = _run_onnxruntime(exported, feeds)
    if again is None:
        raise RoundTripMismatch("onnxruntime runs the original model but not our export of it")
    for i, (a, b) in enumerate(zip(again, reference)):
        if isinstance(b, np.ndarray) and b.dtype.kind in "fc":
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=f"round-trip output {i}")
        elif isinstance(b, np.ndarray):
            np.testing.assert_array_equal(a, b, err_msg=f"round-trip output {i}")


def _run_onnxruntime(proto: onnx.ModelProto, feeds: dict):
    import onnxruntime as ort

    if any(not isinstance(v, np.ndarray) for v in feeds.values()):
        return None
    try:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        return sess.run(None, feeds)
    except Exception:  # noqa: BLE001 - onnxruntime lacks this op, type or opset
        return None


class EdgelearnBackend(Backend):
    roundtrip = True

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> EdgelearnRep:
        super().prepare(model, device, **kwargs)
        return EdgelearnRep(model, cls.roundtrip)

    @classmethod
    def run_model(cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU", **kwargs: Any):
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device == "CPU"
