import numpy as np
import pytest

from inference.errors import InputError
from training import data as D


@pytest.fixture
def dataset():
    x = np.arange(23 * 2, dtype=np.float32).reshape(23, 2)
    return D.ArrayDataset(x, np.arange(23, dtype=np.int64))


def _epoch(loader):
    return [b[1].tolist() for b in loader]


def test_loader_batches_cover_dataset_once(dataset):
    loader = D.DataLoader(dataset, batch_size=5, shuffle=True, seed=1)
    batches = _epoch(loader)
    assert [len(b) for b in batches] == [5, 5, 5, 5, 3]
    assert sorted(sum(batches, [])) == list(range(23))
    assert _epoch(loader) != batches  # reshuffled


def test_drop_last_and_no_shuffle(dataset):
    loader = D.DataLoader(dataset, batch_size=5, shuffle=False, drop_last=True)
    assert len(loader) == 4
    assert _epoch(loader) == [list(range(i, i + 5)) for i in range(0, 20, 5)]


def test_same_seed_same_order(dataset):
    a = D.DataLoader(dataset, batch_size=4, seed=7)
    b = D.DataLoader(dataset, batch_size=4, seed=7)
    assert _epoch(a) == _epoch(b)


def test_state_resumes_mid_epoch_exactly(dataset):
    aug = D.GaussianNoise(0.5)
    ref = D.DataLoader(dataset, batch_size=4, seed=3, transform=aug)
    straight = [b[0] for _ in range(3) for b in ref]
    run = D.DataLoader(dataset, batch_size=4, seed=3, transform=aug)
    got = [b[0] for b in run]  # one full epoch (6 batches)
    it = iter(run)
    got += [next(it)[0], next(it)[0]]  # and 2 batches of the next
    state = run.state_dict()
    resumed = D.DataLoader(dataset, batch_size=4, seed=99, transform=aug)
    resumed.load_state_dict(state)
    got += [b[0] for b in resumed]          # rest of epoch 2
    got += [b[0] for b in resumed]          # epoch 3
    assert len(got) == len(straight)
    for x, y in zip(got, straight):
        np.testing.assert_array_equal(x, y)


def test_mismatched_lengths_raise():
    with pytest.raises(InputError):
        D.ArrayDataset(np.zeros(3), np.zeros(4))


def test_normalize_per_channel():
    x = np.ones((2, 3, 2, 2), np.float32) * np.array([1, 2, 3], np.float32)[None, :, None, None]
    out = D.Normalize([1, 2, 3], [1, 2, 4])(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, 0.0)


def test_random_crop_keeps_shape_and_shifts():
    x = np.arange(4 * 1 * 5 * 5, dtype=np.float32).reshape(4, 1, 5, 5)
    rng = np.random.default_rng(0)
    out = D.RandomCrop(5, padding=2)(x, rng)
    assert out.shape == x.shape
    for i in range(4):  # every crop is a shifted window of the zero-padded sample
        padded = np.pad(x[i, 0], 2)
        assert any(np.array_equal(out[i, 0], padded[dy:dy + 5, dx:dx + 5]) for dy in range(5) for dx in range(5))
    assert not np.array_equal(out, x)


def test_flip_probability_one_and_zero():
    x = np.random.default_rng(0).random((3, 1, 2, 4)).astype(np.float32)
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(D.RandomHorizontalFlip(1.0)(x, rng), x[..., ::-1])
    np.testing.assert_array_equal(D.RandomHorizontalFlip(0.0)(x, rng), x)


def test_gaussian_noise_std():
    x = np.zeros((200, 50), np.float32)
    out = D.GaussianNoise(0.3)(x, np.random.default_rng(0))
    assert out.dtype == np.float32
    assert abs(out.std() - 0.3) < 0.01


def test_offline_loaders_types():
    x, y = D.load_digits()
    assert x.shape == (1797, 64) and x.dtype == np.float32 and y.dtype == np.int64 and x.max() <= 1
    x, y = D.load_breast_cancer()
    assert x.shape == (569, 30) and x.dtype == np.float32 and set(y.tolist()) == {0, 1}
    assert np.allclose(x.mean(0), 0, atol=1e-4)


def test_offline_mnist_5000():
    x, y = D.load_mnist()
    assert x.shape == (5000, 1, 28, 28) and x.dtype == np.float32 and np.bincount(y).tolist() == [500] * 10


def test_stratified_split():
    x, y = D.load_digits()
    xtr, xte, ytr, yte = D.train_test_split(x, y, 0.2, seed=0)
    assert len(xtr) + len(xte) == len(x)
    frac = np.bincount(yte) / np.bincount(y)
    assert np.all(np.abs(frac - 0.2) < 0.01)


def test_load_npz(tmp_path):
    p = tmp_path / "d.npz"
    np.savez(p, x=np.zeros((2, 3), np.float32), y=np.array([0, 1]))
    x, y = D.load_npz(str(p))
    assert x.shape == (2, 3)
    np.savez(p, a=np.zeros(2))
    with pytest.raises(InputError):
        D.load_npz(str(p))
