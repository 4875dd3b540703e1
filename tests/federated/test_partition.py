"""Partitioners: seeded, complete, disjoint, and skewed the way each scheme promises."""
from __future__ import annotations

import numpy as np
import pytest

from federated import PartitionError, label_histogram, partition

LABELS = np.repeat(np.arange(10), 100)


def _check_cover(parts, n):
    allidx = np.concatenate(parts)
    assert len(allidx) == n and len(np.unique(allidx)) == n


@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "shards", "quantity"])
def test_partition_is_seeded_complete_and_disjoint(scheme):
    a = partition(LABELS, 20, scheme, seed=3)
    b = partition(LABELS, 20, scheme, seed=3)
    c = partition(LABELS, 20, scheme, seed=4)
    assert len(a) == 20
    _check_cover(a, len(LABELS))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert any(not np.array_equal(x, y) for x, y in zip(a, c))


def test_iid_sizes_equal_and_labels_mixed():
    parts = partition(LABELS, 10, "iid")
    assert {len(p) for p in parts} == {100}
    assert (label_histogram(LABELS, parts) > 0).sum(1).min() >= 8


def test_dirichlet_skew_grows_as_alpha_shrinks():
    def classes_per_client(alpha):
        h = label_histogram(LABELS, partition(LABELS, 20, "dirichlet", alpha=alpha, min_size=5))
        return ((h / h.sum(1, keepdims=True)) > 0.05).sum(1).mean()
    assert classes_per_client(0.1) < classes_per_client(0.5) < classes_per_client(100.0)
    parts = partition(LABELS, 20, "dirichlet", alpha=0.5, min_size=10)
    assert min(len(p) for p in parts) >= 10


def test_shards_give_at_most_two_labels_each():
    parts = partition(LABELS, 50, "shards", shards_per_client=2)
    h = label_histogram(LABELS, parts)
    assert (h > 0).sum(1).max() <= 2
    assert {len(p) for p in parts} == {20}


def test_quantity_skew_varies_sizes_not_labels():
    parts = partition(LABELS, 10, "quantity", alpha=0.5, min_size=10)
    sizes = np.array([len(p) for p in parts])
    assert sizes.min() >= 10 and sizes.max() > 3 * sizes.min()
    _check_cover(parts, len(LABELS))


def test_bad_requests_raise_partition_error():
    with pytest.raises(PartitionError, match="unknown partition"):
        partition(LABELS, 4, "zipf")
    with pytest.raises(PartitionError, match="alpha"):
        partition(LABELS, 4, "dirichlet", alpha=0)
    with pytest.raises(PartitionError, match="cannot give"):
        partition(LABELS[:10], 20, "iid")
    with pytest.raises(PartitionError, match="Dirichlet"):
        partition(LABELS, 200, "dirichlet", alpha=0.01, min_size=5)
