"""The Trainer's public hooks for code that drives the step itself: ``train_on_batch`` and
``register_checkpoint_state`` (the continual learner is built on both; see test_continual.py)."""
import numpy as np
import pytest

import training as T
from inference.errors import InputError
from training.checkpoint import load_checkpoint_file
from training.errors import CheckpointError, TrainingError


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 10)) * 3
    y = rng.integers(0, 3, 120)
    return (centers[y] + rng.normal(size=(120, 10))).astype(np.float32), y


def _trainer(**kw):
    model = T.nn.Sequential(T.nn.Linear(10, 16), T.nn.ReLU(), T.nn.Linear(16, 3)).to_model((None, 10), seed=0)
    return T.Trainer(model, T.CrossEntropyLoss(), T.Adam(0.01), num_threads=1, **kw)


@pytest.mark.parametrize("trainable", [None, ["2.*"]], ids=["all", "frozen-prefix"])
def test_train_on_batch_takes_the_steps_fit_takes(blobs, trainable):
    x, y = blobs
    fitted, manual = _trainer(trainable=trainable), _trainer(trainable=trainable)
    fitted.fit(x, y, epochs=2, batch_size=40, shuffle=False)
    losses = [manual.train_on_batch(x[s:s + 40], y[s:s + 40]) for _ in range(2) for s in range(0, 120, 40)]
    assert manual.step == fitted.step == 6
    assert losses[-1] < losses[0]
    for name, a in fitted.graph.parameters().items():  # fit's frozen prefix runs over all of x at once
        np.testing.assert_allclose(manual.graph.parameters()[name], a, rtol=1e-5, atol=1e-6, err_msg=name)


def test_train_on_batch_lr_override_callbacks_and_bad_input(blobs):
    x, y = blobs
    t = _trainer()
    before = {k: v.copy() for k, v in t.graph.parameters().items()}
    seen = []

    class Record(T.Callback):
        def on_step_end(self, trainer, step, loss):
            seen.append((step, loss))

    loss = t.train_on_batch(x[:16], y[:16], lr=0.0, callbacks=[Record()])
    assert seen == [(1, loss)] and t.step == 1
    for k, v in t.graph.parameters().items():
        np.testing.assert_array_equal(v, before[k])  # rate 0: nothing moves
    pred = t.graph.last_outputs[t.graph.prediction]
    np.testing.assert_allclose(pred, t.predict(x[:16]), rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match="12 inputs but 11 labels"):
        t.train_on_batch(x[:12], y[:11])


class Counter:
    """A component with state outside the step graph: a count and an array."""

    def __init__(self):
        self.count, self.seen = 0, np.zeros(3, np.int64)

    def get(self):
        return {"seen": self.seen}, {"count": self.count}

    def set(self, arrays, meta):
        self.count, self.seen = meta["count"], arrays["seen"].copy()

    def check(self, arrays, meta):
        if arrays["seen"].shape != self.seen.shape:
            raise CheckpointError(f"counter: saved shape {arrays['seen'].shape}, this one {self.seen.shape}")


def test_registered_state_lives_in_the_same_checkpoint(blobs, tmp_path):
    x, y = blobs
    path = tmp_path / "ck"
    t, c = _trainer(), Counter()
    t.register_checkpoint_state("counter", c.get, c.set, c.check)
    for s in range(0, 48, 16):
        t.train_on_batch(x[s:s + 16], y[s:s + 16])
        c.count += 1
        c.seen += np.bincount(y[s:s + 16], minlength=3)
    t.save_checkpoint(path)
    arrays, meta = load_checkpoint_file(path)
    assert "state::counter::seen" in arrays and meta["states"] == {"counter": {"count": 3}}

    t2, c2 = _trainer(), Counter()
    t2.register_checkpoint_state("counter", c2.get, c2.set, c2.check)
    t2.load_checkpoint(path)
    assert c2.count == 3 and np.array_equal(c2.seen, c.seen) and t2.step == 3
    t.train_on_batch(x[48:64], y[48:64])
    t2.train_on_batch(x[48:64], y[48:64])
    for name, a in t.graph.buffers().items():
        np.testing.assert_array_equal(t2.graph.buffers()[name], a, err_msg=name)


def test_mismatched_state_is_rejected_before_anything_changes(blobs, tmp_path):
    x, y = blobs
    path = tmp_path / "ck"
    t, c = _trainer(), Counter()
    t.register_checkpoint_state("counter", c.get, c.set, c.check)
    t.train_on_batch(x[:16], y[:16])
    t.save_checkpoint(path)

    plain = _trainer()
    with pytest.raises(CheckpointError, match=r"holds the states \['counter'\] but this trainer registered \[\]"):
        plain.load_checkpoint(path)

    t3, c3 = _trainer(), Counter()
    c3.seen = np.zeros(4, np.int64)
    t3.register_checkpoint_state("counter", c3.get, c3.set, c3.check)
    before = {k: v.copy() for k, v in t3.graph.buffers().items()}
    with pytest.raises(CheckpointError, match="counter: saved shape"):
        t3.load_checkpoint(path)
    assert t3.step == 0 and c3.count == 0
    for k, v in t3.graph.buffers().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)


def test_state_names_are_checked():
    t, c = _trainer(), Counter()
    t.register_checkpoint_state("counter", c.get, c.set)
    with pytest.raises(TrainingError, match="already registered"):
        t.register_checkpoint_state("counter", c.get, c.set)
    with pytest.raises(TrainingError, match="'::'"):
        t.register_checkpoint_state("a::b", c.get, c.set)
