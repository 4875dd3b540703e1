"""Private set intersection (ECDH-PSI over Curve25519): each party learns only the shared ids.

Protocol (semi-honest, two parties A and B with secret scalars a and b; run pairwise for more):

1. A sends ``{H(x)^a : x in X}`` in a secret random order; B sends ``{H(y)^b}`` likewise.
2. Each re-blinds what it received with its own key and sends it back in the same order:
   A gets ``{H(x)^ab}`` for its own ids, B gets ``{H(y)^ba}``.
3. The double-blinded values ("tags") of shared ids are equal (scalar multiplication commutes),
   so a party holding its own tags and the peer's tags (or just the list of tags another party
   chose) knows which of its own ids are shared -- and nothing about the peer's other ids, which
   it only ever sees blinded by the peer's key (DDH on Curve25519, H modelled as a random oracle).
   A relay between the parties sees only blinded points and so learns at most the set sizes and
   the size of the intersection.

Hashing to the curve (why not "SHA-512 as a u-coordinate"): a raw hash is a point of Curve25519 or
of its twist and its discrete log could be known; instead every id goes through RFC 9380-style
hashing: ``SHA-512(DST || len || id)`` gives field elements that Elligator 2 (libsodium's
``crypto_core_ed25519_from_uniform``, which also clears the cofactor) maps to points of the
prime-order subgroup, whose discrete logs nobody knows. By default one map (RFC 9380's
``encode_to_curve`` shape: a deterministic, collision-resistant encoding with unknown discrete
logs, which is what ECDH-PSI's DDH argument uses); ``ro=True`` maps two elements and adds the
points (the ``hash_to_curve`` random-oracle construction) at about twice the hashing cost. The point is moved to Curve25519's
Montgomery form (u = (1+y)/(1-y), one batched field inversion) so that blinding is plain X25519
(OpenSSL through ``cryptography``): clamped secret scalars are multiples of 8 and nonzero mod the
group order, so blinding is a bijection of the subgroup and all-zero (small-order) results are
refused by X25519 itself.

Speed: the C calls release the GIL, so the bulk work is split over ``workers`` threads.
"""
from __future__ import annotations

import hashlib
import hmac
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

import numpy as np

from .errors import FederatedError

POINT = 32  # bytes of one blinded value (an X25519 u-coordinate)
DST = b"edgelearn-psi-v1:curve25519_XMD:SHA-512_ELL2_RO_"
_P = 2**255 - 19


class PSIError(FederatedError):
    """A PSI message is malformed (bad length, invalid point) or the ids cannot be aligned."""


def _ed_to_u(points: list[bytes]) -> list[bytes]:
    """Edwards25519 encodings -> Curve25519 u-coordinates, with one batched inversion."""
    ys = [int.from_bytes(p, "little") & ((1 << 255) - 1) for p in points]
    dens = [(1 - y) % _P for y in ys]
    prefix, acc = [], 1
    for d in dens:  # Montgomery's trick: one inversion for the whole batch
        prefix.append(acc)
        acc = acc * d % _P
    inv = pow(acc, -1, _P)
    out = [b""] * len(ys)
    for i in range(len(ys) - 1, -1, -1):
        d_inv = inv * prefix[i] % _P
        inv = inv * dens[i] % _P
        out[i] = ((1 + ys[i]) * d_inv % _P).to_bytes(POINT, "little")
    return out


def _hash_chunk(ids: Sequence[bytes], ro: bool) -> list[bytes]:
    try:
        from nacl.bindings import crypto_core_ed25519_add, crypto_core_ed25519_from_uniform as ell2
    except ImportError:
        raise PSIError("PSI needs PyNaCl (libsodium's Elligator 2): pip install pynacl") from None

    pts = []
    for x in ids:
        h = hashlib.sha512(DST + len(x).to_bytes(4, "little") + x).digest()
        pts.append(crypto_core_ed25519_add(ell2(h[:32]), ell2(h[32:])) if ro else ell2(h[:32]))
    return _ed_to_u(pts)


def hash_to_curve(ids: Sequence[str], workers: int = 2, ro: bool = False) -> list[bytes]:
    """Each id as a point of Curve25519's prime-order subgroup (Montgomery u, 32 bytes)."""
    return _parallel([str(i).encode("utf-8") for i in ids], lambda c: _hash_chunk(c, ro), workers)


def _parallel(items: list, fn: Callable[[list], list], workers: int) -> list:
    if workers <= 1 or len(items) < 256:
        return fn(items)
    step = -(-len(items) // workers)
    with ThreadPoolExecutor(workers) as pool:
        parts = pool.map(fn, [items[i:i + step] for i in range(0, len(items), step)])
    return [x for part in parts for x in part]


def split_points(blob: bytes, what: str = "PSI message") -> list[bytes]:
    """A concatenation of 32-byte points, checked for length."""
    if not isinstance(blob, (bytes, bytearray)) or len(blob) % POINT:
        raise PSIError(f"{what}: {len(blob) if isinstance(blob, (bytes, bytearray)) else type(blob).__name__} "
                       f"bytes is not a whole number of {POINT}-byte points")
    return [bytes(blob[i:i + POINT]) for i in range(0, len(blob), POINT)]


class PSIParty:
    """One party's side of ECDH-PSI; all its state is ``key`` (so it fits Flower's context.state)."""

    def __init__(self, ids: Sequence[str], key: bytes | None = None, workers: int = 2, ro: bool = False):
        self.ids = [str(i) for i in ids]
        dup = len(set(self.ids)) != len(self.ids)
        if dup:
            raise PSIError("duplicate ids in one party's set; deduplicate before PSI")
        self.key = key if key is not None else os.urandom(32)
        if len(self.key) != 32:
            raise PSIError("a PSI key is 32 bytes")
        self.workers, self.ro = workers, ro
        seed = int.from_bytes(hmac.new(self.key, b"order", hashlib.sha256).digest()[:8], "little")
        self.order = np.random.default_rng(seed).permutation(len(self.ids))  # secret send order

    def _mul(self, points: list[bytes]) -> list[bytes]:
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

        k = X25519PrivateKey.from_private_bytes(self.key)

        def chunk(pts: list[bytes]) -> list[bytes]:
            try:
                return [k.exchange(X25519PublicKey.from_public_bytes(p)) for p in pts]
            except ValueError as e:  # all-zero result: a small-order point was sent
                raise PSIError(f"invalid point in PSI message: {e}") from None

        return _parallel(points, chunk, self.workers)

    def blinded(self) -> bytes:
        """Step 1: own ids hashed to the curve and blinded, in the secret order."""
        pts = hash_to_curve([self.ids[i] for i in self.order], self.workers, self.ro)
        return b"".join(self._mul(pts))

    def reblind(self, peer_blinded: bytes) -> bytes:
        """Step 2: the peer's blinded points times our key, in the order received."""
        return b"".join(self._mul(split_points(peer_blinded, "peer's blinded set")))

    def tags(self, own_double: bytes) -> dict[str, bytes]:
        """Step 3: {own id: its double-blinded tag} from what the peer sent back in step 2."""
        pts = split_points(own_double, "own double-blinded set")
        if len(pts) != len(self.ids):
            raise PSIError(f"peer returned {len(pts)} double-blinded ids for our {len(self.ids)}")
        return {self.ids[i]: t for i, t in zip(self.order, pts)}

    def intersect(self, own_double: bytes, peer_double: bytes) -> list[str]:
        """The shared ids (in our own order), given both double-blinded sets."""
        theirs = set(split_points(peer_double, "peer's double-blinded set"))
        mine = self.tags(own_double)
        return [i for i in self.ids if mine[i] in theirs]

    def select(self, own_double: bytes, chosen_tags: bytes) -> list[str]:
        """Our ids for tags another party chose, in its order; a tag we do not hold is an error."""
        by_tag = {t: i for i, t in self.tags(own_double).items()}
        out = []
        for t in split_points(chosen_tags, "chosen tags"):
            if t not in by_tag:
                raise PSIError("misaligned ids: a chosen tag matches none of this party's ids")
            out.append(by_tag[t])
        if len(set(out)) != len(out):
            raise PSIError("duplicate tags in the chosen list")
        return out


def intersect(ids_a: Sequence[str], ids_b: Sequence[str], workers: int = 2,
              ro: bool = False) -> tuple[list[str], list[str]]:
    """Run the whole protocol between two in-process parties; each side's view of the intersection."""
    a, b = PSIParty(ids_a, workers=workers, ro=ro), PSIParty(ids_b, workers=workers, ro=ro)
    ma, mb = a.blinded(), b.blinded()
    da, db = b.reblind(ma), a.reblind(mb)
    return a.intersect(da, db), b.intersect(db, da)
