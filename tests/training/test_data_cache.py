"""The shipped data sets' cache: built once in a child, read after, rebuilt when damaged."""
import os

import numpy as np
import pytest

from inference.errors import InputError
from training.data import load_digits
from training.data_cache import cached_arrays


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGELEARN_CACHE", str(tmp_path))
    return tmp_path


def test_digits_built_once_then_read(cache):
    x, y = load_digits()
    path = cache / "digits.npz"
    stamp = os.stat(path).st_mtime_ns
    x2, y2 = load_digits(images=True)
    assert os.stat(path).st_mtime_ns == stamp  # read, not rebuilt
    assert x.shape == (1797, 64) and x.dtype == np.float32 and 0.0 <= x.min() and x.max() == 1.0
    np.testing.assert_array_equal(x2.reshape(1797, 64), x)
    np.testing.assert_array_equal(np.bincount(y2), np.bincount(y))


def test_damaged_file_is_rebuilt(cache):
    (cache / "digits.npz").write_bytes(b"not a zip")
    x, y = load_digits()
    assert x.shape == (1797, 64) and len(y) == 1797


def test_file_of_an_older_version_lacking_arrays_is_rebuilt(cache):
    np.savez(cache / "breast_cancer.npz", x=np.zeros((2, 30)), y=np.zeros(2, np.int64))  # no feature_names
    names = cached_arrays("breast_cancer", "build_breast_cancer", ("feature_names",))["feature_names"]
    assert len(names) == 30 and "mean radius" in names


def test_unknown_builder_is_a_clear_error(cache):
    with pytest.raises(InputError, match="building the nope data set failed.*no_such_builder"):
        cached_arrays("nope", "no_such_builder", ("x",))
    assert not any(p.name.startswith("nope") for p in cache.iterdir())
