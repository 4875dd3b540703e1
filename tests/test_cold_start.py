"""The cold start's "core install" variant hides exactly what the core dependencies do not bring."""
from __future__ import annotations

import importlib.util

from edgelearn.commands.bench import non_core_modules


def test_core_dependencies_stay_importable_and_the_rest_is_hidden():
    hidden = set(non_core_modules())
    assert not hidden & {"numpy", "numba", "llvmlite", "onnx", "google", "threadpoolctl", "inference", "edgelearn"}
    assert not hidden & {"os", "sys", "json"}
    for optional in ("scipy", "sklearn", "flwr", "onnxruntime"):  # installed here by the test extras
        assert (optional in hidden) == (importlib.util.find_spec(optional) is not None)
