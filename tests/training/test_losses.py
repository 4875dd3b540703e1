"""Each loss's emitted graph, run by the inference Session, against numpy formulas (and torch)."""
import numpy as np
import pytest
from onnx import helper

import inference.ops  # noqa: F401  (registers the kernels)
from inference.builder import GraphBuilder
from inference.ir import TensorType
from inference.session import Session
from training import losses as L


class _Builder:
    """The StepBuilder protocol over GraphBuilder, enough to run a loss on its own."""

    def __init__(self):
        self.gb = GraphBuilder("loss", opset=17)

    def op(self, op_type, *inputs, domain="", outputs=1, **attrs):
        return self.gb.op(op_type, *inputs, domain=domain, outputs=outputs, **attrs)

    def const(self, value, dtype=None):
        return self.gb.const(np.asarray(value, dtype=dtype))

    def type_of(self, name):
        return self.gb.graph.type_of(name)

    def input(self, name, dtype, shape):
        return self.gb.input(name, dtype, shape)

    def state(self, name, init):
        return self.gb.const(init, name)


@pytest.fixture
def run():
    def _run(loss, pred, target, extra=None, params=None):
        b = _Builder()
        b.input("pred", pred.dtype, pred.shape)
        b.input("target", target.dtype, target.shape)
        for name, value in (params or {}).items():
            b.gb.const(value, name)
        out = loss.build(b, "pred", "target")
        b.gb.output(out)
        model = b.gb.build()
        feeds = {"pred": pred, "target": target, **(extra or {})}
        (value,) = Session(model).run(feeds)
        assert value.shape == ()
        return float(value)
    return _run


@pytest.fixture
def logits():
    rng = np.random.default_rng(0)
    return rng.normal(size=(8, 5)).astype(np.float32), rng.integers(0, 5, 8).astype(np.int64)


def _log_softmax(z):
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def test_cross_entropy_plain(run, logits):
    x, y = logits
    expected = -_log_softmax(x.astype(np.float64))[np.arange(8), y].mean()
    assert run(L.CrossEntropyLoss(), x, y) == pytest.approx(expected, rel=1e-5)
    assert run(L.CrossEntropyLoss(reduction="sum"), x, y) == pytest.approx(expected * 8, rel=1e-5)


def test_cross_entropy_weights_smoothing_ignore(run, logits):
    x, y = logits
    y = y.copy()
    y[[1, 4]] = -100
    w = np.array([1.0, 2.0, 0.5, 1.5, 3.0])
    eps = 0.1
    logp = _log_softmax(x.astype(np.float64))
    keep = y != -100
    onehot = np.eye(5)[np.where(keep, y, 0)]
    q = (1 - eps) * onehot + eps / 5
    num = -(keep[:, None] * w * q * logp).sum()
    den = (keep[:, None] * w * onehot).sum()
    got = run(L.CrossEntropyLoss(weight=w, label_smoothing=eps, ignore_index=-100), x, y)
    assert got == pytest.approx(num / den, rel=1e-5)


def test_cross_entropy_matches_torch(run, logits):
    torch = pytest.importorskip("torch")
    x, y = logits
    y = y.copy()
    y[2] = 3
    y[0] = -1
    w = [0.3, 1.0, 2.0, 1.0, 0.7]
    ref = torch.nn.functional.cross_entropy(torch.tensor(x), torch.tensor(y), weight=torch.tensor(w),
                                            label_smoothing=0.2, ignore_index=-1)
    got = run(L.CrossEntropyLoss(weight=w, label_smoothing=0.2, ignore_index=-1), x, y)
    assert got == pytest.approx(float(ref), rel=1e-5)


def test_bce_with_logits(run):
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(6, 3)) * 30).astype(np.float32)  # large logits: must not overflow
    y = rng.integers(0, 2, (6, 3)).astype(np.float32)
    xd = x.astype(np.float64)
    sp = np.logaddexp(0, -xd)
    assert run(L.BCEWithLogitsLoss(), x, y) == pytest.approx(((1 - y) * xd + sp).mean(), rel=1e-5)
    pw = np.array([1.0, 2.0, 3.0])
    expected = ((1 - y) * xd + (1 + (pw - 1) * y) * sp).mean()
    assert run(L.BCEWithLogitsLoss(pos_weight=pw), x, y) == pytest.approx(expected, rel=1e-5)


def test_bce_accepts_int_labels_of_rank_one(run):
    x = np.array([[0.5], [-1.0], [2.0]], np.float32)
    y = np.array([1, 0, 1], np.int64)
    yf = y[:, None].astype(np.float64)
    expected = ((1 - yf) * x + np.logaddexp(0, -x.astype(np.float64))).mean()
    assert run(L.BCEWithLogitsLoss(), x, y) == pytest.approx(expected, rel=1e-5)


@pytest.fixture
def regression():
    rng = np.random.default_rng(2)
    return rng.normal(size=(7, 4)).astype(np.float32) * 2, rng.normal(size=(7, 4)).astype(np.float32)


def test_mse_l1(run, regression):
    p, t = regression
    d = p.astype(np.float64) - t
    assert run(L.MSELoss(), p, t) == pytest.approx((d ** 2).mean(), rel=1e-5)
    assert run(L.L1Loss(), p, t) == pytest.approx(np.abs(d).mean(), rel=1e-5)
    assert run(L.L1Loss(reduction="sum"), p, t) == pytest.approx(np.abs(d).sum(), rel=1e-5)
    assert run(L.MSELoss(), p.astype(np.float64), t.astype(np.float64)) == pytest.approx((d ** 2).mean(), rel=1e-12)


@pytest.mark.parametrize("delta", [0.5, 1.0, 2.5])
def test_huber(run, regression, delta):
    p, t = regression
    a = np.abs(p.astype(np.float64) - t)
    expected = np.where(a < delta, 0.5 * a ** 2, delta * (a - 0.5 * delta)).mean()
    assert run(L.HuberLoss(delta), p, t) == pytest.approx(expected, rel=1e-5)


def test_kl_divergence_with_temperature(run, logits):
    x, _ = logits
    teacher = np.random.default_rng(3).normal(size=x.shape).astype(np.float32)
    T = 3.0
    ls, lt = _log_softmax(x / T), _log_softmax(teacher / T)
    expected = T ** 2 * (np.exp(lt) * (lt - ls)).sum() / len(x)
    assert run(L.KLDivLoss(T), x, teacher) == pytest.approx(expected, rel=1e-5)
    assert run(L.KLDivLoss(T), x, x) == pytest.approx(0.0, abs=1e-6)


def test_distillation_sum_with_teacher_as_second_input(run, logits):
    x, y = logits
    teacher = np.random.default_rng(4).normal(size=x.shape).astype(np.float32)
    loss = L.WeightedSum([(0.3, L.CrossEntropyLoss()), (0.7, L.KLDivLoss(2.0, teacher_input="teacher"))])
    ce = -_log_softmax(x.astype(np.float64))[np.arange(8), y].mean()
    ls, lt = _log_softmax(x / 2.0), _log_softmax(teacher / 2.0)
    kd = 4.0 * (np.exp(lt) * (lt - ls)).sum() / len(x)
    got = run(loss, x, y, extra={"teacher": teacher})
    assert got == pytest.approx(0.3 * ce + 0.7 * kd, rel=1e-5)
    assert loss.target_type(TensorType(1, (8, 5))).shape == (8,)


def test_regularizers_over_bound_parameters(run, regression):
    p, t = regression
    w1 = np.array([[1.0, -2.0]], np.float32)
    w2 = np.array([-3.0], np.float32)
    loss = L.WeightedSum([(1.0, L.MSELoss()), (1.0, L.L2Regularizer(0.1, ["fc.*"])),
                          (1.0, L.L1Regularizer(0.01))])
    L.bind_parameters(loss, ["fc.weight", "fc.bias"])
    mse = ((p.astype(np.float64) - t) ** 2).mean()
    expected = mse + 0.1 * (1 + 4 + 9) + 0.01 * (1 + 2 + 3)
    got = run(loss, p, t, params={"fc.weight": w1, "fc.bias": w2})
    assert got == pytest.approx(expected, rel=1e-5)


def test_unbound_regularizer_raises(run, regression):
    from inference.errors import InvalidModelError
    with pytest.raises(InvalidModelError):
        run(L.L2Regularizer(0.1), *regression)


def test_custom_loss_from_ir_ops(run, regression):
    p, t = regression

    def cubic(b, pred, target):  # mean |d|^3
        d = b.op("Sub", pred, target)
        a = b.op("Add", b.op("Relu", d), b.op("Relu", b.op("Neg", d)))
        return b.op("ReduceMean", b.op("Mul", a, b.op("Mul", a, a)), keepdims=0)

    expected = (np.abs(p.astype(np.float64) - t) ** 3).mean()
    assert run(L.CustomLoss(cubic), p, t) == pytest.approx(expected, rel=1e-5)
