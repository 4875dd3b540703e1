"""The arena plan never overlaps live tensors and saves memory on real CNNs."""
from __future__ import annotations

import pytest

from inference import Session, load_model
from inference.memory_plan import plan_memory
from inference.passes import optimize
from tests.conftest import LIGHT_MODELS


@pytest.fixture(scope="module", params=["light_resnet50", "light_squeezenet", "light_densenet121"])
def session(request):
    model = load_model(str(LIGHT_MODELS / f"{request.param}.onnx"))
    optimize(model)
    return Session(model)


def test_live_tensors_never_overlap(session):
    plan = plan_memory(session, batch=32)
    roots = {}
    for b in plan.buffers.values():
        root = b
        while root.shares_with is not None:
            root = plan.buffers[root.shares_with]
        roots.setdefault(root.name, []).append(b)
    spans = []
    for members in roots.values():
        spans.append((members[0].offset, max(m.size for m in members),
                      min(m.first for m in members), max(m.last for m in members)))
    for i, (o1, s1, f1, l1) in enumerate(spans):
        assert o1 + s1 <= plan.peak_bytes
        for o2, s2, f2, l2 in spans[i + 1:]:
            if f1 <= l2 and f2 <= l1:  # alive together
                assert o1 + s1 <= o2 or o2 + s2 <= o1


def test_reuse_saves_at_least_40_percent(session):
    plan = plan_memory(session, batch=32)
    assert not plan.unknown
    assert plan.saving >= 0.40, plan.report()


def test_in_place_only_reduces(session):
    with_ip = plan_memory(session, batch=1, in_place=True)
    without = plan_memory(session, batch=1, in_place=False)
    assert with_ip.peak_bytes <= without.peak_bytes
    assert with_ip.no_reuse_bytes == without.no_reuse_bytes
