"""Checkpoint files (atomic, verified) and exact resume of a Trainer, in process and after SIGKILL."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from training import nn
from training.checkpoint import load_checkpoint_file, save_checkpoint_file
from training.data import GaussianNoise
from training.errors import CheckpointError
from training.losses import CrossEntropyLoss
from training.optim import Adam
from training.schedules import CosineLR
from training.trainer import Callback, Trainer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def arrays():
    rng = np.random.default_rng(0)
    return {"fc.weight": rng.normal(size=(3, 4)).astype(np.float32), "x/odd name:0": np.arange(5),
            "scalar": np.float64(2.5) * np.ones(())}


def test_roundtrip(tmp_path, arrays):
    p = tmp_path / "c.el"
    meta = {"step": 7, "rng": {"state": 2 ** 100}, "order": [3, 1, 2], "none": None}
    save_checkpoint_file(p, arrays, meta)
    got, got_meta = load_checkpoint_file(p)
    assert got_meta == meta
    assert list(got) == list(arrays)
    for k in arrays:
        assert got[k].dtype == arrays[k].dtype
        np.testing.assert_array_equal(got[k], arrays[k])
    assert os.listdir(tmp_path) == ["c.el"]  # no temporary left behind


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "empty", "missing"])
def test_damaged_checkpoints_raise(tmp_path, arrays, damage):
    p = tmp_path / "c.el"
    save_checkpoint_file(p, arrays, {"a": 1})
    data = p.read_bytes()
    if damage == "truncate":
        p.write_bytes(data[:len(data) // 2])
    elif damage == "flip":
        p.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    elif damage == "garbage":
        p.write_bytes(b"PK\x03\x04 not ours" * 10)
    elif damage == "empty":
        p.write_bytes(b"")
    else:
        p.unlink()
    with pytest.raises(CheckpointError) as e:
        load_checkpoint_file(p)
    assert "c.el" in str(e.value)


def test_failed_write_keeps_previous(tmp_path, arrays, monkeypatch):
    p = tmp_path / "c.el"
    save_checkpoint_file(p, arrays, {"gen": 1})
    before = p.read_bytes()

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError):
        save_checkpoint_file(p, {"other": np.zeros(1000)}, {"gen": 2})
    monkeypatch.undo()
    assert p.read_bytes() == before
    assert load_checkpoint_file(p)[1] == {"gen": 1}
    assert os.listdir(tmp_path) == ["c.el"]


# -- exact resume -------------------------------------------------------------------------------
def _data():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(90, 12)).astype(np.float32)
    y = (x[:, :3].sum(1) > 0).astype(np.int64) + (x[:, 3] > 1)
    return x, y


def _trainer(seed=0, **kw):
    model = nn.Sequential(nn.Linear(12, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2),
                          nn.Linear(16, 3)).to_model((None, 12), seed=seed)
    return Trainer(model, CrossEntropyLoss(label_smoothing=0.05), Adam(lr=0.01), schedule=CosineLR(40),
                   num_threads=1, seed=3, **kw)


FIT = dict(epochs=3, batch_size=8, transform=GaussianNoise(0.1))


class StopAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, trainer, step, loss):
        if step == self.step:
            trainer.stop_training = True


@pytest.mark.parametrize("stop", [5, 12, 17])  # mid-epoch 1, exactly at the end of epoch 1, mid-epoch 2
def test_resume_equals_straight_run(tmp_path, stop):
    x, y = _data()
    straight = _trainer()
    h_straight = straight.fit(x, y, validation=(x[:20], y[:20]), **FIT)

    first = _trainer()
    first.fit(x, y, validation=(x[:20], y[:20]), callbacks=[StopAt(stop)], **FIT)
    assert first.step == stop
    first.save_checkpoint(tmp_path / "c.el")
    resumed = _trainer(seed=42)  # different init: everything must come from the checkpoint
    resumed.load_checkpoint(tmp_path / "c.el")
    h_resumed = resumed.fit(x, y, validation=(x[:20], y[:20]), **FIT)

    assert resumed.step == straight.step == 36
    for name, value in straight.graph.buffers().items():
        np.testing.assert_allclose(resumed.graph.buffers()[name], value, rtol=0, atol=1e-6, err_msg=name)
    assert h_resumed.keys() == h_straight.keys()
    for k in h_straight:
        np.testing.assert_allclose(h_resumed[k], h_straight[k], rtol=1e-6)


def test_resume_with_frozen_prefix_cache(tmp_path):
    x, y = _data()
    straight = _trainer(trainable=["4.*"])
    assert straight.split is not None
    straight.fit(x, y, epochs=2, batch_size=8)
    first = _trainer(trainable=["4.*"])
    first.fit(x, y, epochs=2, batch_size=8, callbacks=[StopAt(7)])
    first.save_checkpoint(tmp_path / "c.el")
    resumed = _trainer(trainable=["4.*"])  # same model: frozen weights come from it, not the checkpoint
    resumed.load_checkpoint(tmp_path / "c.el")
    resumed.fit(x, y, epochs=2, batch_size=8)
    for name, value in straight.graph.buffers().items():
        np.testing.assert_allclose(resumed.graph.buffers()[name], value, rtol=0, atol=1e-6, err_msg=name)


def test_fp16_adam_state_survives_a_checkpoint(tmp_path):
    x, y = _data()
    model = nn.Sequential(nn.Linear(12, 3)).to_model((None, 12))
    t = Trainer(model, CrossEntropyLoss(), Adam(lr=0.01, fp16_state=True))
    t.fit(x, y, epochs=1, batch_size=30)
    t.save_checkpoint(tmp_path / "c.el")
    arrays, _ = load_checkpoint_file(tmp_path / "c.el")
    assert arrays["0.weight.adam_m"].dtype == np.float16 and arrays["0.weight.adam_v"].dtype == np.float16
    again = Trainer(nn.Sequential(nn.Linear(12, 3)).to_model((None, 12), seed=9), CrossEntropyLoss(),
                    Adam(lr=0.01, fp16_state=True))
    again.load_checkpoint(tmp_path / "c.el")
    for k, v in t.graph.buffers().items():
        np.testing.assert_array_equal(again.graph.buffers()[k], v)


def test_checkpoint_of_other_setup_is_rejected(tmp_path):
    x, y = _data()
    t = _trainer()
    t.fit(x, y, epochs=1, batch_size=30)
    t.save_checkpoint(tmp_path / "c.el")
    model = nn.Sequential(nn.Linear(12, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Dropout(0.2),
                          nn.Linear(5, 3)).to_model((None, 12))
    other = Trainer(model, CrossEntropyLoss(), Adam(lr=0.01))
    with pytest.raises(CheckpointError, match="shape"):
        other.load_checkpoint(tmp_path / "c.el")
    frozen = Trainer(_trainer().model, CrossEntropyLoss(), Adam(lr=0.01), trainable=["4.*"])
    with pytest.raises(CheckpointError, match="unknown"):
        frozen.load_checkpoint(tmp_path / "c.el")


def test_resume_with_different_data_is_rejected(tmp_path):
    x, y = _data()
    t = _trainer()
    t.fit(x, y, callbacks=[StopAt(3)], **FIT)
    t.save_checkpoint(tmp_path / "c.el")
    again = _trainer()
    again.load_checkpoint(tmp_path / "c.el")
    with pytest.raises(CheckpointError, match="same training data"):
        again.fit(x[:50], y[:50], **FIT)


_CHILD = """
import sys, time
sys.path.insert(0, {root!r})
sys.path.insert(0, {here!r})
import numpy as np
from test_checkpoint import _data, _trainer, FIT
from training.trainer import Callback

class Slow(Callback):
    def on_step_end(self, trainer, step, loss):
        time.sleep(0.02)

x, y = _data()
t = _trainer()
if {resume}:
    t.load_checkpoint({ckpt!r})
t.fit(x, y, callbacks=[Slow()], checkpoint={ckpt!r}, checkpoint_every=2, **FIT)
np.savez({out!r}, **t.graph.buffers())
"""


def _child(tmp_path, resume):
    code = _CHILD.format(root=str(ROOT), here=str(Path(__file__).parent), resume=resume,
                         ckpt=str(tmp_path / "c.el"), out=str(tmp_path / "final.npz"))
    return subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume(tmp_path):
    proc = _child(tmp_path, resume=False)
    ckpt = tmp_path / "c.el"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:  # wait until a mid-epoch checkpoint exists
        if ckpt.exists():
            try:
                meta = load_checkpoint_file(ckpt)[1]
            except CheckpointError:
                meta = None  # being replaced right now
            if meta and meta["step"] >= 14 and meta["step"] % 12:
                break
        time.sleep(0.01)
    assert proc.poll() is None, "the child finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "final.npz").exists()
    killed_at = load_checkpoint_file(ckpt)[1]["step"]
    assert 0 < killed_at < 36

    resumed = _child(tmp_path, resume=True)
    assert resumed.wait(timeout=300) == 0
    final = np.load(tmp_path / "final.npz")
    x, y = _data()
    straight = _trainer()
    straight.fit(x, y, **FIT)
    for name, value in straight.graph.buffers().items():
        np.testing.assert_allclose(final[name], value, rtol=0, atol=1e-6, err_msg=name)
