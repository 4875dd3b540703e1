"""The fused EWC penalty op: value and gradient against numpy and central finite differences."""
from __future__ import annotations

import numpy as np
import pytest

from inference.errors import KernelError
from tests.training.gradcheck import check_rule
from training.kernels.penalties import ewc_penalty, ewc_penalty_grad
from training.protocols import TRAIN_DOMAIN


@pytest.mark.parametrize("shape", [(3, 4), (5,), ()])
def test_ewc_penalty_gradient(shape):
    rng = np.random.default_rng(3)
    feeds = {"w": rng.normal(size=shape), "f": rng.random(shape), "a": rng.normal(size=shape)}
    check_rule(lambda b, w, f, a: b.op("EWCPenalty", w, f, a, domain=TRAIN_DOMAIN), feeds, ["w"])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ewc_penalty_kernels_match_numpy(dtype):
    rng = np.random.default_rng(4)
    w, f, a = (rng.normal(size=(40, 30)).astype(dtype) for _ in range(3))
    f = np.abs(f)
    value = ewc_penalty(w, f, a)
    assert value.dtype == dtype and value.shape == ()
    np.testing.assert_allclose(value, np.sum(f.astype(np.float64) * (w.astype(np.float64) - a) ** 2), rtol=1e-6)
    grad = ewc_penalty_grad(np.asarray(0.5, dtype), w, f, a)
    assert grad.dtype == dtype
    np.testing.assert_allclose(grad, 2 * 0.5 * f * (w - a), rtol=1e-6, atol=1e-7)


def test_ewc_penalty_shape_mismatch_names_the_shapes():
    with pytest.raises(KernelError, match=r"Fisher \[2\] and anchor \[3\] must have the parameter's shape \[3\]"):
        ewc_penalty(np.zeros(3), np.zeros(2), np.zeros(3))
