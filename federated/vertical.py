"""Split learning for vertical FL: bottom models at every party, a top model at the label party.

One training step, for a batch of aligned rows:

    every party:  emb_p = bottom_p(x_p)                        -> codec -> label party
    label party:  logits = top([emb_1, ..., emb_P]); loss(logits, y); backward
                  -> dL/d emb_p for every party                 -> codec -> party p
    every party:  bottom_p.step(x_p, dL/d emb_p)                (the label party's own too)

Both halves run on our engine. A bottom model learns from an upstream gradient ``g`` by
minimising the surrogate ``sum(bottom(x) * g)``, whose gradient w.r.t. the bottom's parameters is
exactly the chain rule's ``g * d emb / d theta``: so a bottom is an ordinary training graph
(``build_training_graph`` with that loss, ``g`` fed as the target) and any optimizer works.
The top model is a training graph too, plus a gradient view (``compute_gradients`` w.r.t. its
input, sharing the live parameters) that yields ``dL/d emb`` before the update.

This module holds the party-side runtime (no Flower); ``federated.vertical_apps`` wires it to
Flower's ClientApp/ServerApp, and ``federated.vertical_data`` reads each party's CSV.
"""
from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .vertical_data import PartyData
from .vertical_errors import MalformedTensor, VerticalError

EMBED = "emb"


# --- configuration --------------------------------------------------------------------------------

@dataclass
class PartySpec:
    """A party: its name and (for user data) its CSV; the label party names its label column."""

    name: str
    csv: str = ""
    label_column: str = ""


@dataclass
class VerticalConfig:
    """A vertical-FL scenario (see simulations/breast_vertical.toml)."""

    name: str = "breast_vertical"
    dataset: str = "breast"            # breast | digits | csv (each party's own file)
    parties: list[PartySpec] = field(default_factory=list)
    label_party: str = ""
    id_column: str = "id"
    missing: float = 0.0               # built-in data: share of rows each party lacks (PSI has work)
    psi: bool = True                   # align by private set intersection (else ids must match)
    embed: int = 4                     # embedding width of every bottom model
    bottom_hidden: list[int] = field(default_factory=list)
    top_hidden: list[int] = field(default_factory=list)
    epochs: int = 30
    batch_size: int = 32
    lr: float = 0.01
    optimizer: str = "adam"            # adam | sgd
    weight_decay: float = 0.0
    codec: str = "fp32"                # what embeddings and gradients travel as
    compare: list[str] = field(default_factory=list)
    folds: int = 5                     # k-fold CV; 1 = one holdout of test_fraction; 0 = train = test
    run_folds: int = 0                 # how many folds to run (0 = all)
    test_fraction: float = 0.2
    seed: int = 0
    fail_at: str = ""                  # tests: "party:epoch:step" drops that party out once
    model_dir: str = ""                # after the run every party saves its models here (vertical_model.py)

    def __post_init__(self) -> None:
        self.parties = [p if isinstance(p, PartySpec) else PartySpec(**p) for p in self.parties]
        if not self.parties:
            self.parties = default_parties(self.dataset)
        if not self.label_party:
            self.label_party = self.parties[0].name
        names = [p.name for p in self.parties]
        if len(set(names)) != len(names) or self.label_party not in names:
            raise VerticalError(f"need distinctly named parties including the label party "
                                f"{self.label_party!r}; got {names}")
        if self.dataset not in ("breast", "digits", "csv"):
            raise VerticalError(f"dataset must be breast, digits or csv, got {self.dataset!r}")

    @property
    def codecs(self) -> list[str]:
        return list(dict.fromkeys(self.compare or [self.codec]))

    @property
    def party_names(self) -> list[str]:
        """Label party first: the order of the embeddings at the top model's input."""
        return [self.label_party] + [p.name for p in self.parties if p.name != self.label_party]

    def replace(self, **changes: Any) -> "VerticalConfig":
        d = asdict(self)
        d.update(changes)
        return VerticalConfig(**d)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "VerticalConfig":
        return cls(**json.loads(text))

    @classmethod
    def from_toml(cls, path: str | Path) -> "VerticalConfig":
        import tomllib

        with open(path, "rb") as f:
            d = tomllib.load(f)
        d = d.get("vertical", d)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise VerticalError(f"{path}: unknown keys {unknown}; known: {sorted(known)}")
        base = Path(path).parent
        for p in d.get("parties", []):
            if p.get("csv") and not Path(p["csv"]).is_absolute() and (base / p["csv"]).exists():
                p["csv"] = str(base / p["csv"])
        return cls(**d)


def default_parties(dataset: str) -> list[PartySpec]:
    if dataset == "breast":
        return [PartySpec("guest", label_column="y"), PartySpec("host")]
    if dataset == "digits":
        return [PartySpec("left", label_column="y"), PartySpec("right")]
    raise VerticalError("dataset 'csv' needs [[parties]] with a csv each")


def load_party(cfg: VerticalConfig, name: str) -> PartyData:
    """What party `name` reads on its own device (its CSV, or its slice of a built-in set)."""
    from . import vertical_data as vd

    spec = next(p for p in cfg.parties if p.name == name)
    if spec.csv:
        label = (spec.label_column or "y") if name == cfg.label_party else None
        return vd.read_party_csv(spec.csv, name, cfg.id_column, label)
    built = vd.breast_parties(cfg.missing) if cfg.dataset == "breast" else vd.digits_parties(cfg.missing)
    by_name = {p.name: p for p in built}
    if name not in by_name:
        raise VerticalError(f"built-in {cfg.dataset!r} has parties {sorted(by_name)}, not {name!r}")
    return by_name[name]


# --- which rows a step uses (every party computes the same indices from shared numbers) ----------

def fold_rows(n: int, cfg: VerticalConfig, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, test rows) of `fold` over the n aligned samples."""
    perm = np.random.default_rng([cfg.seed, 11]).permutation(n)
    if cfg.folds == 0:  # FATE's protocol: train = test
        return np.arange(n), np.arange(n)
    if cfg.folds == 1:
        k = int(round(n * cfg.test_fraction))
        return np.sort(perm[k:]), np.sort(perm[:k])
    test = np.zeros(n, dtype=bool)
    test[perm[fold::cfg.folds]] = True
    return np.flatnonzero(~test), np.flatnonzero(test)


def batch_rows(train: np.ndarray, cfg: VerticalConfig, epoch: int, step: int) -> np.ndarray:
    order = np.random.default_rng([cfg.seed, 13, epoch]).permutation(len(train))
    return train[order[step * cfg.batch_size:(step + 1) * cfg.batch_size]]


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    return -(-n_train // batch_size)


# --- tensors on the wire ----------------------------------------------------------------------

def encode_tensor(x: np.ndarray, codec: str, seed: Sequence[int]) -> bytes:
    from compress.codecs import make_codec

    s = int(np.random.default_rng(list(seed)).integers(2**62))
    return make_codec(codec, seed=s).encode([np.ascontiguousarray(x, dtype=np.float32)])


def decode_tensor(payload: Any, shape: tuple[int, int], what: str) -> np.ndarray:
    """Decode and check one embedding/gradient payload; anything off raises MalformedTensor."""
    from compress.codecs import CodecError, decode_payload

    if not isinstance(payload, (bytes, bytearray)) or not payload:
        raise MalformedTensor(f"{what}: expected a codec payload, got {type(payload).__name__}")
    try:
        (x,) = decode_payload(bytes(payload), expected_shapes=[shape])
    except (CodecError, ValueError) as e:
        raise MalformedTensor(f"{what}: {e}") from None
    x = np.asarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise MalformedTensor(f"{what}: NaN or Inf values")
    return x


# --- models ------------------------------------------------------------------------------------

def _optimizer(cfg: VerticalConfig):
    from training.optim import SGD, Adam

    if cfg.optimizer == "adam":
        return Adam(lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return SGD(lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    raise VerticalError(f"optimizer must be adam or sgd, got {cfg.optimizer!r}")


def mlp(n_in: int, hidden: Sequence[int], n_out: int, seed: int, input_name: str = "input"):
    """An IR model: Linear/ReLU stack built with training.nn."""
    from training import nn

    layers, width = [], n_in
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, n_out))
    return nn.build_model(nn.Sequential(*layers), (None, n_in), seed=seed, input_name=input_name)


def _upstream_loss():
    """sum(prediction * target): its parameter gradient is the chain rule with target = dL/d emb."""
    from training.losses import CustomLoss

    return CustomLoss(lambda b, pred, g: b.op("ReduceSum", b.op("Mul", pred, g), keepdims=0))


class Bottom:
    """A party's bottom model: forward to embeddings, learn from the embeddings' gradient."""

    def __init__(self, n_features: int, cfg: VerticalConfig, seed: int):
        from training.graph import build_training_graph

        model = mlp(n_features, cfg.bottom_hidden, cfg.embed, seed)
        self.tg = build_training_graph(model, _upstream_loss(), optimizer=_optimizer(cfg))
        self.width = cfg.embed

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.tg.predict({"input": x})[0]

    def backward(self, x: np.ndarray, grad: np.ndarray) -> None:
        self.tg.step({"input": x, self.tg.target: grad})


class Top:
    """The label party's top model and loss; gives the gradient of each party's embeddings."""

    def __init__(self, width: int, n_classes: int, cfg: VerticalConfig, seed: int):
        from inference.ir import Value
        from inference.session import Session
        from training.autograd import GraphEmitter, compute_gradients
        from training.graph import build_training_graph
        from training.losses import BCEWithLogitsLoss, CrossEntropyLoss

        self.binary = n_classes <= 2
        model = mlp(width, cfg.top_hidden, 1 if self.binary else n_classes, seed, input_name=EMBED)
        loss = BCEWithLogitsLoss() if self.binary else CrossEntropyLoss()
        self.tg = build_training_graph(model, loss, optimizer=_optimizer(cfg))
        view = copy.deepcopy(self.tg.forward, {id(a): a for a in self.tg.forward.graph.initializers.values()})
        b = GraphEmitter(view, tag="vg")
        t = self.tg.model.graph.type_of(self.tg.target)
        target = b.input(self.tg.target, t.dtype, t.shape)
        out = view.graph.output_names[0]
        loss_name = loss.build(b, out, target)
        grad = compute_gradients(view, loss_name, [EMBED])[EMBED]
        view.graph.outputs = [Value(n, view.graph.type_of(n)) for n in (loss_name, out, grad)]
        self._grad = Session(view)

    def target(self, y: np.ndarray) -> np.ndarray:
        return y.astype(np.float32).reshape(-1, 1) if self.binary else y.astype(np.int64)

    def step(self, emb: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        """(loss, dL/d emb) at the current parameters, then one update of the top model."""
        feeds = {EMBED: emb, self.tg.target: self.target(y)}
        loss, _, grad = self._grad.run(feeds)
        self.tg.step(feeds)
        return float(loss), grad

    def predict_proba(self, emb: np.ndarray) -> np.ndarray:
        return proba_from_logits(self.tg.predict({EMBED: emb})[0])


def proba_from_logits(logits: np.ndarray) -> np.ndarray:
    """P(class 1) per row for one logit column (binary), else softmax rows."""
    if logits.shape[1] == 1:
        return 1.0 / (1.0 + np.exp(-logits[:, 0]))
    z = np.exp(logits - logits.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def metrics(proba: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Accuracy, and AUC for binary tasks (sklearn's roc_auc_score)."""
    if proba.ndim == 1:
        from sklearn.metrics import roc_auc_score

        auc = float(roc_auc_score(y, proba)) if len(np.unique(y)) == 2 else float("nan")
        return {"accuracy": float(((proba > 0.5) == y).mean()), "auc": auc}
    return {"accuracy": float((proba.argmax(1) == y).mean())}


# --- one party's runtime ----------------------------------------------------------------------

class PartyRuntime:
    """What one party holds: its aligned rows, its bottom model (and the top at the label party).

    Built once per process and cached by the ClientApp; all mutable training state round-trips
    through :meth:`state`/:meth:`load_state`, which is what Flower keeps in ``context.state``.
    """

    def __init__(self, data: PartyData, cfg: VerticalConfig, widths: Mapping[str, int] | None = None):
        self.data, self.cfg, self.name = data, cfg, data.name
        k = cfg.party_names.index(self.name)
        self.bottom = Bottom(data.x.shape[1], cfg, seed=cfg.seed * 100 + k)
        self.top: Top | None = None
        if self.name == cfg.label_party:
            if data.y is None:
                raise VerticalError(f"label party {self.name!r} has no label column")
            widths = dict(widths or {p: cfg.embed for p in cfg.party_names})
            self.widths = [widths[p] for p in cfg.party_names]
            self.top = Top(sum(self.widths), int(data.y.max()) + 1, cfg, seed=cfg.seed * 100 + 99)
        self.initial = self.state()

    # state ------------------------------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        s = {f"bottom/{k}": v.copy() for k, v in self.bottom.tg.buffers().items()}
        if self.top is not None:
            s.update({f"top/{k}": v.copy() for k, v in self.top.tg.buffers().items()})
        return s

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        for prefix, part in (("bottom/", self.bottom), ("top/", self.top)):
            if part is not None:
                part.tg.load_buffers({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})

    # steps ------------------------------------------------------------------------------------
    def forward(self, rows: np.ndarray) -> np.ndarray:
        return self.bottom.forward(self.data.x[rows])

    def backward(self, rows: np.ndarray, grad: np.ndarray) -> None:
        self.bottom.backward(self.data.x[rows], grad)

    def _joint(self, rows: np.ndarray, others: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        own = self.forward(rows)
        parts = [own] + [others[p] for p in self.cfg.party_names[1:]]
        return own, np.concatenate(parts, axis=1)

    def train_step(self, rows: np.ndarray, others: Mapping[str, np.ndarray]) -> tuple[float, dict[str, np.ndarray]]:
        """Label party: top forward/backward/update, own bottom update; gradients for the others."""
        assert self.top is not None
        _, emb = self._joint(rows, others)
        loss, grad = self.top.step(emb, self.data.y[rows])
        cuts = np.cumsum(self.widths)[:-1]
        pieces = dict(zip(self.cfg.party_names, np.split(grad, cuts, axis=1)))
        self.backward(rows, np.ascontiguousarray(pieces.pop(self.name)))
        return loss, {p: np.ascontiguousarray(g) for p, g in pieces.items()}

    def predict(self, rows: np.ndarray, others: Mapping[str, np.ndarray]) -> np.ndarray:
        """Label party: joint prediction (probabilities) for rows, given the others' embeddings."""
        assert self.top is not None
        return self.top.predict_proba(self._joint(rows, others)[1])

    def score(self, rows: np.ndarray, others: Mapping[str, np.ndarray]) -> dict[str, float]:
        return metrics(self.predict(rows, others), self.data.y[rows])


def train_local(cfg: VerticalConfig, parties: Sequence[PartyData], fold: int = 0) -> list[dict[str, float]]:
    """The same split model trained in one process (no wire, no codec): the centralized baseline.

    ``parties[0]`` holds the labels; with a single party holding every feature this is "the same
    model trained centrally", with one party's own columns it is "that party alone". Returns the
    test metrics after each epoch.
    """
    names = [p.name for p in parties]
    local = cfg.replace(parties=[{"name": n, "label_column": "y" if k == 0 else ""} for k, n in enumerate(names)],
                        label_party=names[0])
    runtimes = [PartyRuntime(p, local) for p in parties]
    head, rest = runtimes[0], runtimes[1:]
    train, test = fold_rows(len(parties[0].ids), local, fold)
    history = []
    for epoch in range(local.epochs):
        for step in range(steps_per_epoch(len(train), local.batch_size)):
            rows = batch_rows(train, local, epoch, step)
            _, grads = head.train_step(rows, {r.name: r.forward(rows) for r in rest})
            for r in rest:
                r.backward(rows, grads[r.name])
        history.append(head.score(test, {r.name: r.forward(test) for r in rest}))
    return history
