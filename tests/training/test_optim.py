"""Fused optimizer updates run by the Session against numpy re-implementations and torch.optim."""
import numpy as np
import pytest

import inference.ops  # noqa: F401
from inference.builder import GraphBuilder
from inference.session import Session
from training import optim as O
from training.autograd import GraphEmitter
from training.errors import TrainingError

SHAPES = {"w": (4, 3), "b": (3,)}


class Stepper:
    """A graph holding only parameters and their fused updates; gradients and lr are fed."""

    def __init__(self, opt, params):
        gb = GraphBuilder("opt", opset=17)
        gb.input("lr", np.float32, ())
        for name, value in params.items():
            gb.input(f"{name}_grad", value.dtype, value.shape)
            gb.const(value.copy(), name)
        self.model = gb.build()
        em = GraphEmitter(self.model)
        outs = opt.emit_updates(em, [(n, f"{n}_grad") for n in params], "lr")
        for o in outs:
            gb.output(o)
        self.session = Session(self.model)
        self.names = list(params)

    def step(self, grads, lr):
        feeds = {f"{n}_grad": g for n, g in grads.items()}
        outs = self.session.run({**feeds, "lr": np.asarray(lr, np.float32)})
        for name, out in zip(self.names, outs):
            assert out is self.model.graph.initializers[name]  # updated in place, returned as is
        return {n: self.model.graph.initializers[n] for n in self.names}


@pytest.fixture
def problem():
    rng = np.random.default_rng(0)
    params = {n: rng.normal(size=s).astype(np.float32) for n, s in SHAPES.items()}
    grads = [{n: rng.normal(size=s).astype(np.float32) for n, s in SHAPES.items()} for _ in range(6)]
    return params, grads


def _run(opt, problem, lr=None):
    params, grads = problem
    st = Stepper(opt, params)
    out = None
    for g in grads:
        out = st.step(g, opt.lr if lr is None else lr)
    return {k: v.copy() for k, v in out.items()}


# -- numpy re-implementations (float64) ---------------------------------------------------------
def np_sgd(p, grads, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
    p, buf = p.astype(np.float64), None
    for g in grads:
        d = g + weight_decay * p
        if momentum:
            buf = d.copy() if buf is None else momentum * buf + (1 - dampening) * d
            d = d + momentum * buf if nesterov else buf
        p = p - lr * d
    return p


def np_adam(p, grads, lr, b1=0.9, b2=0.999, eps=1e-8, wd=0.0, decoupled=False):
    p = p.astype(np.float64)
    m = v = 0.0
    for t, g in enumerate(grads, 1):
        if decoupled:
            p = p * (1 - lr * wd)
        else:
            g = g + wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    return p


def np_rmsprop(p, grads, lr, alpha=0.99, eps=1e-8, momentum=0.0):
    p = p.astype(np.float64)
    sq, buf = 0.0, 0.0
    for g in grads:
        sq = alpha * sq + (1 - alpha) * g * g
        if momentum:
            buf = momentum * buf + g / (np.sqrt(sq) + eps)
            p = p - lr * buf
        else:
            p = p - lr * g / (np.sqrt(sq) + eps)
    return p


def np_adagrad(p, grads, lr, lr_decay=0.0, eps=1e-10, init=0.0):
    p, s = p.astype(np.float64), init
    for t, g in enumerate(grads, 1):
        s = s + g * g
        p = p - lr / (1 + (t - 1) * lr_decay) * g / (np.sqrt(s) + eps)
    return p


NUMPY_CASES = [
    (O.SGD(lr=0.1), lambda p, gs: np_sgd(p, gs, 0.1)),
    (O.SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
     lambda p, gs: np_sgd(p, gs, 0.1, 0.9, 0.0, True, 0.01)),
    (O.SGD(lr=0.05, momentum=0.8, dampening=0.3), lambda p, gs: np_sgd(p, gs, 0.05, 0.8, 0.3)),
    (O.Adam(lr=0.01, weight_decay=0.1), lambda p, gs: np_adam(p, gs, 0.01, wd=0.1)),
    (O.AdamW(lr=0.01, weight_decay=0.1), lambda p, gs: np_adam(p, gs, 0.01, wd=0.1, decoupled=True)),
    (O.RMSprop(lr=0.01, momentum=0.5), lambda p, gs: np_rmsprop(p, gs, 0.01, momentum=0.5)),
    (O.Adagrad(lr=0.1, lr_decay=0.05, initial_accumulator_value=0.2),
     lambda p, gs: np_adagrad(p, gs, 0.1, 0.05, init=0.2)),
]


@pytest.mark.parametrize("opt,ref", NUMPY_CASES, ids=lambda c: repr(c)[:40] if not callable(c) else "")
def test_against_numpy(problem, opt, ref):
    params, grads = problem
    got = _run(opt, problem)
    for name in params:
        expected = ref(params[name], [g[name].astype(np.float64) for g in grads])
        np.testing.assert_allclose(got[name], expected, rtol=1e-5, atol=1e-6)


TORCH_CASES = [
    ("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.01)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.05)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1)),
    ("RMSprop", dict(lr=0.01, alpha=0.9, momentum=0.3, centered=True, weight_decay=0.01)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1)),
]


def _torch_run(torch, name, kwargs, params, grad_batches, clip_norm=None, clip_value=None):
    ts = {n: torch.tensor(v, requires_grad=True) for n, v in params.items()}
    opt = getattr(torch.optim, name)(list(ts.values()), **kwargs)
    for grads in grad_batches:
        for n, t in ts.items():
            t.grad = torch.tensor(grads[n])
        if clip_value:
            torch.nn.utils.clip_grad_value_(list(ts.values()), clip_value)
        if clip_norm:
            torch.nn.utils.clip_grad_norm_(list(ts.values()), clip_norm)
        opt.step()
    return {n: t.detach().numpy() for n, t in ts.items()}


@pytest.mark.parametrize("name,kwargs", TORCH_CASES, ids=[c[0] for c in TORCH_CASES])
def test_against_torch(problem, name, kwargs):
    torch = pytest.importorskip("torch")
    params, grads = problem
    got = _run(getattr(O, name)(**kwargs), problem)
    expected = _torch_run(torch, name, kwargs, params, grads)
    for n in params:
        np.testing.assert_allclose(got[n], expected[n], rtol=1e-5, atol=1e-6)


def test_clip_by_norm_and_value_against_torch(problem):
    torch = pytest.importorskip("torch")
    params, grads = problem
    got = _run(O.SGD(lr=0.1, momentum=0.9, clip_norm=1.5), problem)
    expected = _torch_run(torch, "SGD", dict(lr=0.1, momentum=0.9), params, grads, clip_norm=1.5)
    for n in params:
        np.testing.assert_allclose(got[n], expected[n], rtol=1e-5, atol=1e-6)
    got = _run(O.Adam(lr=0.01, clip_value=0.5), problem)
    expected = _torch_run(torch, "Adam", dict(lr=0.01), params, grads, clip_value=0.5)
    for n in params:
        np.testing.assert_allclose(got[n], expected[n], rtol=1e-5, atol=1e-6)


def test_gradient_accumulation_applies_the_mean(problem):
    params, grads = problem
    got = _run(O.Adam(lr=0.01, accumulate=3), problem)
    for n in params:
        means = [np.mean([g[n] for g in grads[k:k + 3]], axis=0, dtype=np.float64) for k in (0, 3)]
        np.testing.assert_allclose(got[n], np_adam(params[n], means, 0.01), rtol=1e-5, atol=1e-6)


def test_accumulation_leaves_params_between_updates(problem):
    params, grads = problem
    st = Stepper(O.SGD(lr=0.1, accumulate=2), params)
    after1 = {k: v.copy() for k, v in st.step(grads[0], 0.1).items()}
    for n in params:
        np.testing.assert_array_equal(after1[n], params[n])
    after2 = st.step(grads[1], 0.1)
    for n in params:
        np.testing.assert_allclose(after2[n], params[n] - 0.1 * (grads[0][n] + grads[1][n]) / 2, rtol=1e-6)


def test_adam_fp16_state_halves_memory_and_tracks_fp32(problem):
    params, _ = problem
    full = _run(O.Adam(lr=0.01), problem)
    half = _run(O.Adam(lr=0.01, fp16_state=True), problem)
    for n in params:
        np.testing.assert_allclose(half[n], full[n], rtol=0, atol=2e-4)
        assert not np.allclose(half[n], params[n])
    st = Stepper(O.Adam(fp16_state=True), params)
    states = {k: v for k, v in st.model.graph.initializers.items() if "adam_" in k}
    assert len(states) == 4 and all(v.dtype == np.float16 for v in states.values())


def test_adam_fp16_state_small_gradients_do_not_vanish():
    p = {"w": np.ones(1000, np.float32)}
    st = Stepper(O.Adam(lr=0.01, fp16_state=True), p)
    out = st.step({"w": np.full(1000, 1e-5, np.float32)}, 0.01)["w"]
    np.testing.assert_allclose(out, 1 - 0.01, rtol=1e-3)  # g^2 = 1e-10 underflows fp16; sqrt(v) does not


def test_float64_params(problem):
    params, grads = problem
    p64 = {k: v.astype(np.float64) for k, v in params.items()}
    got = _run(O.SGD(lr=0.125, momentum=0.9), (p64, [{k: v.astype(np.float64) for k, v in g.items()} for g in grads]))
    for n in params:
        np.testing.assert_allclose(got[n], np_sgd(params[n], [g[n].astype(np.float64) for g in grads], 0.125, 0.9),
                                   rtol=1e-12)


def test_bad_options_raise():
    with pytest.raises(TrainingError):
        O.SGD(lr=0.1, nesterov=True)
    with pytest.raises(TrainingError):
        O.Adam(lr=-1)
    with pytest.raises(TrainingError):
        O.SGD(lr=0.1, clip_norm=1.0).emit_update(None, "w", "g", "lr")


# -- schedules ----------------------------------------------------------------------------------
from training import schedules as S  # noqa: E402


def _torch_lrs(torch, make, n):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5)
    sched = make(opt)
    lrs = []
    for _ in range(n):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


@pytest.mark.parametrize("ours,theirs", [
    (S.StepLR(3, 0.5), lambda T, o: T.optim.lr_scheduler.StepLR(o, 3, 0.5)),
    (S.MultiStepLR([2, 5, 7], 0.3), lambda T, o: T.optim.lr_scheduler.MultiStepLR(o, [2, 5, 7], 0.3)),
    (S.ExponentialLR(0.9), lambda T, o: T.optim.lr_scheduler.ExponentialLR(o, 0.9)),
    (S.CosineLR(8, 0.01), lambda T, o: T.optim.lr_scheduler.CosineAnnealingLR(o, 8, 0.01)),
], ids=["step", "multistep", "exp", "cosine"])
def test_schedules_match_torch(ours, theirs):
    torch = pytest.importorskip("torch")
    expected = _torch_lrs(torch, lambda o: theirs(torch, o), 9)
    np.testing.assert_allclose([ours(0.5, t) for t in range(9)], expected, rtol=1e-9)


def test_schedule_formulas():
    assert S.StepLR(2, 0.1)(1.0, 5) == pytest.approx(1e-2)
    assert S.CosineLR(10)(2.0, 5) == pytest.approx(1.0)
    assert S.CosineLR(10, 0.1)(2.0, 50) == pytest.approx(0.1)
    warm = S.LinearWarmup(4, S.ExponentialLR(0.5))
    assert [warm(1.0, t) for t in range(7)] == pytest.approx([0, 0.25, 0.5, 0.75, 1.0, 0.5, 0.25])


def test_reduce_on_plateau_matches_torch():
    torch = pytest.importorskip("torch")
    metrics = [1.0, 0.9, 0.95, 0.92, 0.91, 0.93, 0.94, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=2, cooldown=1, min_lr=0.1)
    ours = S.ReduceOnPlateau(factor=0.5, patience=2, cooldown=1, min_lr=0.1)
    for m in metrics:
        ref.step(m)
        ours.observe(m)
        assert ours(0.5, 0) == pytest.approx(opt.param_groups[0]["lr"])
    assert ours(0.5, 0) < 0.5
    copy = S.ReduceOnPlateau(factor=0.5, patience=2, cooldown=1, min_lr=0.1)
    copy.load_state_dict(ours.state_dict())
    for m in (2.0, 2.0, 2.0, 2.0):
        copy.observe(m)
        ours.observe(m)
    assert copy(0.5, 0) == ours(0.5, 0)
