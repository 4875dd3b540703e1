"""Each party's own table (as in FATE's examples): an id column, feature columns, maybe a label.

    party = read_party_csv("breast_hetero_guest.csv", label_column="y")
    paths = fate_breast("data/")        # {"guest": ..., "host": ...}, the FATE breast_hetero split
    paths = digits_halves("data/")      # {"left": ..., "right": ...}, 8x8 digits cut in two

A party's rows are put in the agreed (PSI) order by :meth:`PartyData.take`, which is where
misaligned or missing ids are reported.
"""
from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .vertical_errors import AlignmentError, PartyDataError

# FATE's breast_hetero: guest (label party) holds the 10 "worst *" features, host the other 20.
BREAST_GUEST = "guest"
BREAST_HOST = "host"


@dataclass
class PartyData:
    """One party's table: ids (unique strings), float32 features, optional int64 labels."""

    name: str
    ids: list[str]
    x: np.ndarray
    features: list[str]
    y: np.ndarray | None = None

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.x) or (self.y is not None and len(self.y) != len(self.x)):
            raise PartyDataError(f"party {self.name!r}: {len(self.ids)} ids, {len(self.x)} rows"
                                 + ("" if self.y is None else f", {len(self.y)} labels"))
        dups = sorted(i for i, c in Counter(self.ids).items() if c > 1)
        if dups:
            raise PartyDataError(f"party {self.name!r}: duplicate ids {dups[:5]} ({len(dups)} ids "
                                 f"repeated); each id must name one sample")

    def take(self, ids: Sequence[str]) -> "PartyData":
        """The rows of `ids`, in that order (the aligned order agreed by PSI)."""
        where = {i: k for k, i in enumerate(self.ids)}
        missing = [i for i in ids if i not in where]
        if missing:
            raise AlignmentError(f"party {self.name!r} has no rows for {len(missing)} aligned ids "
                                 f"(first: {missing[:3]})")
        rows = np.array([where[i] for i in ids], dtype=np.int64)
        return PartyData(self.name, list(ids), self.x[rows], self.features,
                         None if self.y is None else self.y[rows])


def read_party_csv(path: str | Path, name: str | None = None, id_column: str = "id",
                   label_column: str | None = None) -> PartyData:
    """Read one party's CSV; ``label_column`` only for the label party."""
    path = Path(path)
    try:
        with path.open(newline="") as f:
            rows = list(csv.reader(f))
    except OSError as e:
        raise PartyDataError(f"cannot read party file {path}: {e}") from None
    if len(rows) < 2:
        raise PartyDataError(f"{path}: needs a header row and at least one data row")
    header = [h.strip() for h in rows[0]]
    for col, what in ((id_column, "id"), (label_column, "label")):
        if col is not None and col not in header:
            raise PartyDataError(f"{path}: no {what} column {col!r} (columns: {header[:8]}...)")
    id_at = header.index(id_column)
    y_at = header.index(label_column) if label_column else -1
    feat_at = [k for k in range(len(header)) if k not in (id_at, y_at)]
    if not feat_at:
        raise PartyDataError(f"{path}: no feature columns")
    body = [r for r in rows[1:] if r]
    bad = [n for n, r in enumerate(body, 2) if len(r) != len(header)]
    if bad:
        raise PartyDataError(f"{path}: line {bad[0]} has the wrong number of fields")
    try:
        x = np.array([[float(r[k]) for k in feat_at] for r in body], dtype=np.float32)
        y = np.array([int(float(r[y_at])) for r in body], dtype=np.int64) if label_column else None
    except ValueError as e:
        raise PartyDataError(f"{path}: non-numeric value ({e})") from None
    if not np.isfinite(x).all():
        raise PartyDataError(f"{path}: NaN or Inf among the features")
    return PartyData(name or path.stem, [r[id_at].strip() for r in body], x, [header[k] for k in feat_at], y)


def write_party_csv(path: str | Path, data: PartyData, id_column: str = "id", label_column: str = "y") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow([id_column] + ([label_column] if data.y is not None else []) + data.features)
        for k, i in enumerate(data.ids):
            w.writerow([i] + ([int(data.y[k])] if data.y is not None else []) + [f"{v:.6g}" for v in data.x[k]])
    return path


def _drop(n: int, frac: float, seed: int) -> np.ndarray:
    """Row mask keeping all but a random `frac` (each party misses some people: PSI has work)."""
    keep = np.ones(n, dtype=bool)
    keep[np.random.default_rng(seed).permutation(n)[:int(round(n * frac))]] = False
    return keep


def _split_parties(names: tuple[str, str], ids: list[str], x: np.ndarray, y: np.ndarray,
                   cols: tuple[np.ndarray, np.ndarray], features: list[str], missing: float) -> list[PartyData]:
    out = []
    for k, (name, c) in enumerate(zip(names, cols)):
        keep = _drop(len(ids), missing, seed=100 + k)
        out.append(PartyData(name, [i for i, m in zip(ids, keep) if m], x[keep][:, c],
                             [features[j] for j in c], y[keep] if k == 0 else None))
    return out


def breast_parties(missing: float = 0.0) -> list[PartyData]:
    """FATE's breast_hetero split of z-scored breast_cancer: [guest (label party), host]."""
    from training.data import load_breast_cancer as load
    from training.data_cache import cached_arrays

    x, y = load(standardize=True)
    names = [str(n).replace(" ", "_") for n in cached_arrays("breast_cancer", "build_breast_cancer", ("feature_names",))["feature_names"]]
    worst = np.array([k for k, n in enumerate(names) if n.startswith("worst")])
    rest = np.array([k for k in range(len(names)) if k not in set(worst)])
    return _split_parties((BREAST_GUEST, BREAST_HOST), [str(i) for i in range(len(x))], x, y,
                          (worst, rest), names, missing)


def digits_parties(missing: float = 0.0) -> list[PartyData]:
    """8x8 digits cut into left and right halves (4 columns each): [left (label party), right]."""
    from training.data import load_digits

    x, y = load_digits()
    cols = np.arange(64).reshape(8, 8)
    names = [f"px{r}_{c}" for r in range(8) for c in range(8)]
    return _split_parties(("left", "right"), [f"d{i}" for i in range(len(x))], x, y,
                          (cols[:, :4].ravel(), cols[:, 4:].ravel()), names, missing)


def write_parties(parties: list[PartyData], out_dir: str | Path, prefix: str) -> dict[str, Path]:
    """One CSV a party (`<prefix>_<name>.csv`); returns {party name: path}."""
    return {p.name: write_party_csv(Path(out_dir) / f"{prefix}_{p.name}.csv", p) for p in parties}


def fate_breast(out_dir: str | Path, missing: float = 0.0) -> dict[str, Path]:
    """Write breast_hetero_guest.csv / breast_hetero_host.csv (FATE's file layout)."""
    return write_parties(breast_parties(missing), out_dir, "breast_hetero")


def digits_halves(out_dir: str | Path, missing: float = 0.0) -> dict[str, Path]:
    return write_parties(digits_parties(missing), out_dir, "digits_vertical")
