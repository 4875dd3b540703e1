"""The one .npz reader: clear errors naming the file, no unpickling."""
import numpy as np
import pytest

from inference.errors import InputError
from inference.npz import read_npz


def test_reads_every_array(tmp_path):
    p = tmp_path / "d.npz"
    np.savez(p, x=np.arange(6.0).reshape(2, 3), y=np.array([1, 0]))
    arrays = read_npz(p, ("x", "y"))
    assert sorted(arrays) == ["x", "y"]
    np.testing.assert_array_equal(arrays["x"], np.arange(6.0).reshape(2, 3))


def test_missing_arrays_named_with_holdings_and_hint(tmp_path):
    p = tmp_path / "d.npz"
    np.savez(p, x=np.zeros(2))
    with pytest.raises(InputError, match=r"d\.npz: missing arrays \['y'\], it holds \['x'\]; needs x and y"):
        read_npz(p, ("x", "y"), hint="needs x and y")


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_npz(tmp_path / "nope.npz")


def test_object_arrays_are_refused(tmp_path):
    p = tmp_path / "evil.npz"
    np.savez(p, x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(InputError, match="evil.npz: not a readable .npz"):
        read_npz(p)


def test_single_npy_and_garbage(tmp_path):
    npy = tmp_path / "one.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(InputError, match="not an .npz archive"):
        read_npz(npy)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(InputError, match="bad.npz: not a readable .npz"):
        read_npz(bad)
