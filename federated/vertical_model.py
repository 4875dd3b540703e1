"""A trained split model on disk, and joint inference for new samples across the parties.

After training (``VerticalConfig.model_dir``, or node config ``model-dir`` on a SuperNode) every
party writes what it alone holds, as plain ONNX that onnx.checker accepts and any runtime runs:

    <party>.bottom.onnx    the party's bottom model: its own feature columns -> its embedding
    <party>.party.json     which feature columns (by name, in order) the bottom model reads
    top.onnx               label party only: concatenated embeddings -> logits
    split_model.json       label party only: party order at the top's input, widths, classes

Joint inference for new rows (``predict_split``): the parties align the rows they *all* have
by id -- with PSI (``federated.psi``, the training protocol: each party learns only the shared ids)
or by a plain id join when the ids are not private -- each runs its own bottom model on its own
columns, and the label party concatenates the embeddings and runs the top model. In a deployment
each file stays on its party's device; ``edgelearn predict-vertical`` is the one-machine form
that reads every party's CSV and files.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from .vertical_data import PartyData
from .vertical_errors import AlignmentError, PartyDataError, VerticalError

if TYPE_CHECKING:
    from .vertical import PartyRuntime

MANIFEST = "split_model.json"
TOP = "top.onnx"


def bottom_path(model_dir: str | Path, party: str) -> Path:
    return Path(model_dir) / f"{party}.bottom.onnx"


def party_path(model_dir: str | Path, party: str) -> Path:
    return Path(model_dir) / f"{party}.party.json"


def save_party(rt: "PartyRuntime", model_dir: str | Path, trained: Mapping[str, object]) -> list[Path]:
    """Write what party `rt` alone holds (ONNX, standard ops); `trained` says which run it comes from."""
    from inference import save_model

    out = Path(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [bottom_path(out, rt.name), party_path(out, rt.name)]
    save_model(rt.bottom.tg.export_model(), paths[0], standard=True)
    paths[1].write_text(json.dumps({"party": rt.name, "features": list(rt.data.features),
                                    "width": rt.bottom.width, "trained": dict(trained)}, indent=1))
    if rt.top is not None:
        save_model(rt.top.tg.export_model(), out / TOP, standard=True)
        manifest = {"label_party": rt.cfg.label_party, "parties": rt.cfg.party_names, "widths": rt.widths,
                    "classes": 2 if rt.top.binary else int(rt.data.y.max()) + 1, "trained": dict(trained)}
        (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
        paths += [out / TOP, out / MANIFEST]
    return paths


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except OSError as e:
        raise VerticalError(f"cannot read {path}: {e} (was the split model saved with model_dir?)") from None
    except json.JSONDecodeError as e:
        raise VerticalError(f"{path} is not valid JSON: {e}") from None


def _predictor(path: Path):
    from inference import Predictor

    if not path.exists():
        raise VerticalError(f"missing model file {path}")
    return Predictor(str(path))


@dataclass
class Alignment:
    """Rows every party has, in the label party's order, and how they were found."""

    ids: list[str]
    method: str                       # "psi" or "id join"
    dropped: dict[str, int]           # rows of each party that not every party has


def align_ids(parties: Mapping[str, PartyData], label_party: str, psi: bool = True) -> Alignment:
    """Ids shared by all parties; PSI pairwise between the label party and each other party."""
    from .psi import intersect

    lab = parties[label_party]
    shared = set(lab.ids)
    for name, p in parties.items():
        if name != label_party:
            shared &= set(intersect(lab.ids, p.ids)[0] if psi else set(lab.ids) & set(p.ids))
    ids = [i for i in lab.ids if i in shared]
    if not ids:
        raise AlignmentError(f"the parties {sorted(parties)} share no ids: nothing to predict")
    return Alignment(ids, "psi" if psi else "id join", {n: len(p.ids) - len(ids) for n, p in parties.items()})


class SplitModel:
    """Every party's saved bottom model and the label party's top model (loaded from model_dir)."""

    def __init__(self, model_dir: str | Path):
        self.dir = Path(model_dir)
        self.manifest = _read_json(self.dir / MANIFEST)
        self.parties: list[str] = list(self.manifest["parties"])
        self.label_party: str = self.manifest["label_party"]
        self.features = {p: list(_read_json(party_path(self.dir, p))["features"]) for p in self.parties}
        self.bottoms = {p: _predictor(bottom_path(self.dir, p)) for p in self.parties}
        self.top = _predictor(self.dir / TOP)

    def columns(self, data: PartyData) -> np.ndarray:
        """`data`'s feature matrix in the column order the party's bottom model was trained on."""
        want = self.features[data.name]
        where = {f: k for k, f in enumerate(data.features)}
        missing = [f for f in want if f not in where]
        if missing:
            raise PartyDataError(f"party {data.name!r}: columns {missing[:5]} of its trained model are missing "
                                 f"({len(missing)} of {len(want)}; file has {data.features[:5]}...)")
        return np.ascontiguousarray(data.x[:, [where[f] for f in want]], dtype=np.float32)

    def embed(self, data: PartyData, ids: Sequence[str]) -> np.ndarray:
        """Party-side: its bottom model on its own rows `ids` (what it would send to the label party)."""
        x = self.columns(data.take(ids))
        return next(iter(self.bottoms[data.name].run({"input": x}).values()))

    def predict(self, parties: Mapping[str, PartyData], psi: bool = True) -> tuple[Alignment, np.ndarray]:
        """(alignment, probabilities) for the rows all parties have: P(class 1), or one row per class."""
        from .vertical import EMBED, proba_from_logits

        missing = sorted(set(self.parties) - set(parties))
        extra = sorted(set(parties) - set(self.parties))
        if missing or extra:
            raise VerticalError(f"the split model in {self.dir} has parties {self.parties}; "
                                f"missing data for {missing}" + (f", unknown parties {extra}" if extra else ""))
        al = align_ids(parties, self.label_party, psi)
        emb = np.concatenate([self.embed(parties[p], al.ids) for p in self.parties], axis=1)
        logits = next(iter(self.top.run({EMBED: emb}).values()))
        return al, proba_from_logits(np.asarray(logits))


def labels(proba: np.ndarray) -> np.ndarray:
    return (proba > 0.5).astype(np.int64) if proba.ndim == 1 else proba.argmax(1)


def write_predictions(path: str | Path, ids: Sequence[str], proba: np.ndarray, id_column: str = "id") -> Path:
    """CSV id,prediction,probability (P(class 1) for binary, P(predicted class) otherwise)."""
    import csv

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pred = labels(proba)
    conf = proba if proba.ndim == 1 else proba[np.arange(len(pred)), pred]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow([id_column, "prediction", "probability"])
        for i, c, p in zip(ids, pred, conf):
            w.writerow([i, int(c), f"{float(p):.6f}"])
    return path
