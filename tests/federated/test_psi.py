"""ECDH-PSI: right intersection on partial overlaps, nothing else visible to either side."""
from __future__ import annotations

import time

import pytest

from federated.psi import POINT, PSIError, PSIParty, hash_to_curve, intersect


def _ids(lo: int, hi: int) -> list[str]:
    return [f"user-{i}" for i in range(lo, hi)]


@pytest.mark.parametrize("a,b", [((0, 100), (50, 170)), ((0, 10), (10, 20)), ((0, 30), (0, 30)),
                                 ((0, 1), (0, 40))])
def test_intersection_is_exact(a, b):
    ids_a, ids_b = _ids(*a), _ids(*b)[::-1]
    got_a, got_b = intersect(ids_a, ids_b)
    want = set(ids_a) & set(ids_b)
    assert set(got_a) == want and set(got_b) == want
    assert got_a == [i for i in ids_a if i in want]      # each side keeps its own order
    assert got_b == [i for i in ids_b if i in want]


def test_ro_hash_variant_agrees():
    got, _ = intersect(_ids(0, 40), _ids(20, 60), ro=True)
    assert set(got) == set(_ids(20, 40))


def test_hash_to_curve_is_deterministic_and_injective_on_samples():
    pts = hash_to_curve(_ids(0, 500))
    assert pts == hash_to_curve(_ids(0, 500)) and len(set(pts)) == 500
    assert all(len(p) == POINT for p in pts)


def test_views_reveal_only_the_intersection():
    ids_a, ids_b = _ids(0, 60), _ids(40, 100)
    a, b = PSIParty(ids_a), PSIParty(ids_b)
    ma, mb = a.blinded(), b.blinded()
    da, db = b.reblind(ma), a.reblind(mb)
    received_by_a = [mb[i:i + POINT] for i in range(0, len(mb), POINT)] + \
                    [da[i:i + POINT] for i in range(0, len(da), POINT)]
    # Nothing A sees equals an unblinded hash of B's private ids, or that hash under A's own key:
    # B's ids are hidden behind b, which A does not know.
    private_b = [i for i in ids_b if i not in set(ids_a)]
    plain = set(hash_to_curve(private_b))
    under_a = set(PSIParty(private_b, key=a.key).blinded()[i:i + POINT]
                  for i in range(0, len(private_b) * POINT, POINT))
    assert not (set(received_by_a) & (plain | under_a))
    # The blinded set travels in a secret order: not the ids' order, so positions say nothing.
    order_b = list(b.order)
    assert order_b != sorted(order_b)
    # Fresh keys make the same ids unlinkable across runs.
    assert set(PSIParty(ids_b).blinded()[i:i + POINT] for i in range(0, len(mb), POINT)).isdisjoint(
        {mb[i:i + POINT] for i in range(0, len(mb), POINT)})
    # What A can compute from its view is exactly the intersection, and only its own ids.
    assert set(a.intersect(da, db)) == set(ids_a) & set(ids_b)


def test_select_aligns_on_chosen_tags_and_flags_strangers():
    a, b = PSIParty(_ids(0, 20)), PSIParty(_ids(10, 30))
    da, db = b.reblind(a.blinded()), a.reblind(b.blinded())
    tags_a = a.tags(da)
    shared = sorted(set(_ids(0, 20)) & set(_ids(10, 30)))
    chosen = b"".join(tags_a[i] for i in shared)
    assert b.select(db, chosen) == shared
    with pytest.raises(PSIError, match="misaligned"):
        b.select(db, chosen + tags_a["user-0"])


def test_malformed_messages_and_duplicates_are_rejected():
    a = PSIParty(_ids(0, 5))
    with pytest.raises(PSIError, match="whole number"):
        a.reblind(b"\x01" * 33)
    with pytest.raises(PSIError, match="invalid point"):
        a.reblind(bytes(POINT))  # u = 0: small order, X25519 refuses it
    with pytest.raises(PSIError, match="returned 1"):
        a.tags(b"\x09" + bytes(POINT - 1))
    with pytest.raises(PSIError, match="duplicate"):
        PSIParty(["x", "y", "x"])


@pytest.mark.slow
def test_psi_10k_speed():
    """10,000 ids a party, half shared; the target (2 s on 2 idle cores) is in benchmarks/vertical.py."""
    t = time.perf_counter()
    got, _ = intersect(_ids(0, 10_000), _ids(5_000, 15_000))
    assert len(got) == 5_000 and time.perf_counter() - t < 20
