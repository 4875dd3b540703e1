"""Seeded partitioners that split one labelled data set across federated clients.

Each returns a list of index arrays (one per client, sorted), never the data itself, so the same
split can index features, labels and any extra arrays. Every client gets at least `min_size`
samples: an empty client would make FedAvg weights and local training meaningless.

- ``iid``: uniform random split (equal sizes up to one sample).
- ``dirichlet``: label skew; each class is spread over clients with proportions ~ Dir(alpha)
  (Hsu et al. 2019). Small alpha = few classes per client.
- ``shards``: pathological non-IID of McMahan et al. (2017): sort by label, cut into
  ``num_clients * shards_per_client`` shards, deal each client that many shards.
- ``quantity``: IID labels but client sizes ~ Dir(alpha) (quantity skew).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .errors import PartitionError

Partition = list[np.ndarray]


def _check(n: int, num_clients: int, min_size: int) -> None:
    if num_clients < 1:
        raise PartitionError(f"num_clients must be >= 1, got {num_clients}")
    if n < num_clients * min_size:
        raise PartitionError(f"{n} samples cannot give {num_clients} clients {min_size} each")


def iid(labels: np.ndarray, num_clients: int, seed: int = 0, min_size: int = 1) -> Partition:
    """Uniformly random, equal-size split."""
    _check(len(labels), num_clients, min_size)
    perm = np.random.default_rng(seed).permutation(len(labels))
    return [np.sort(p) for p in np.array_split(perm, num_clients)]


def dirichlet(labels: np.ndarray, num_clients: int, alpha: float = 0.5, seed: int = 0,
              min_size: int = 10, max_tries: int = 200) -> Partition:
    """Label skew: class c goes to the clients in proportions p_c ~ Dir(alpha * 1).

    Redraws (seeded) until every client holds at least `min_size` samples, the common practice;
    raises PartitionError if `max_tries` draws all fail (alpha too small for this many clients).
    """
    if alpha <= 0:
        raise PartitionError(f"Dirichlet alpha must be > 0, got {alpha}")
    labels = np.asarray(labels)
    _check(len(labels), num_clients, min_size)
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    for _ in range(max_tries):
        # draw all cut points first and check the sizes before building any index array
        cuts = [(np.cumsum(rng.dirichlet(np.full(num_clients, alpha)))[:-1] * len(idx)).astype(int)
                for idx in by_class]
        sizes = sum(np.diff(np.concatenate(([0], c, [len(idx)]))) for c, idx in zip(cuts, by_class))
        if sizes.min() < min_size:
            continue
        parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for c, idx in zip(cuts, by_class):
            for k, chunk in enumerate(np.split(rng.permutation(idx), c)):
                parts[k].append(chunk)
        return [np.sort(np.concatenate(p)) for p in parts]
    raise PartitionError(f"Dirichlet(alpha={alpha}) left a client with < {min_size} samples "
                         f"in {max_tries} draws; raise alpha or lower min_size/num_clients")


def shards(labels: np.ndarray, num_clients: int, shards_per_client: int = 2, seed: int = 0,
           min_size: int = 1) -> Partition:
    """McMahan et al.'s pathological split: each client gets `shards_per_client` label-sorted shards."""
    labels = np.asarray(labels)
    num_shards = num_clients * shards_per_client
    if shards_per_client < 1 or len(labels) < num_shards:
        raise PartitionError(f"{len(labels)} samples cannot make {num_shards} shards")
    _check(len(labels), num_clients, min_size)
    rng = np.random.default_rng(seed)
    # stable sort by label, ties broken randomly so shards are not tied to the file order
    order = rng.permutation(len(labels))
    order = order[np.argsort(labels[order], kind="stable")]
    pieces = np.array_split(order, num_shards)
    deal = rng.permutation(num_shards).reshape(num_clients, shards_per_client)
    return [np.sort(np.concatenate([pieces[s] for s in row])) for row in deal]


def quantity(labels: np.ndarray, num_clients: int, alpha: float = 0.5, seed: int = 0,
             min_size: int = 10) -> Partition:
    """Quantity skew: IID samples, client sizes proportional to q ~ Dir(alpha), floor `min_size`."""
    if alpha <= 0:
        raise PartitionError(f"Dirichlet alpha must be > 0, got {alpha}")
    n = len(labels)
    _check(n, num_clients, min_size)
    rng = np.random.default_rng(seed)
    q = rng.dirichlet(np.full(num_clients, alpha))
    sizes = min_size + np.floor(q * (n - num_clients * min_size)).astype(int)
    sizes[np.argmax(q)] += n - sizes.sum()  # hand the rounding remainder to the largest client
    perm = rng.permutation(n)
    return [np.sort(p) for p in np.split(perm, np.cumsum(sizes)[:-1])]


PARTITIONERS: dict[str, Callable[..., Partition]] = {
    "iid": iid, "dirichlet": dirichlet, "shards": shards, "quantity": quantity,
}


def partition(labels: np.ndarray, num_clients: int, scheme: str = "dirichlet", *, seed: int = 0,
              alpha: float = 0.5, shards_per_client: int = 2, min_size: int | None = None) -> Partition:
    """Dispatch by name ("iid", "dirichlet", "shards", "quantity") with the relevant options."""
    if scheme not in PARTITIONERS:
        raise PartitionError(f"unknown partition scheme {scheme!r}; choose from {sorted(PARTITIONERS)}")
    kw: dict = {"seed": seed}
    if min_size is not None:
        kw["min_size"] = min_size
    if scheme in ("dirichlet", "quantity"):
        kw["alpha"] = alpha
    if scheme == "shards":
        kw["shards_per_client"] = shards_per_client
    return PARTITIONERS[scheme](np.asarray(labels), num_clients, **kw)


def label_histogram(labels: np.ndarray, parts: Partition, num_classes: int | None = None) -> np.ndarray:
    """(clients, classes) counts: what a scenario report prints to show the skew."""
    k = int(num_classes if num_classes is not None else np.max(labels) + 1)
    return np.stack([np.bincount(np.asarray(labels)[p], minlength=k) for p in parts])
