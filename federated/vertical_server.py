"""The vertical-FL ServerApp loop: align by PSI, then schedule split-training steps and evaluations.

The server is a relay and a clock: it decides which fold, epoch and step comes next (parties
derive the same row indices from those numbers and the shared seed, so no index lists travel),
forwards codec payloads between parties, counts bytes, and turns a party's error reply into a
typed error -- a dropout becomes :class:`PartyDropped` carrying what ``fit(resume=...)`` needs.
"""
from __future__ import annotations

import json
import time
from typing import Any, Callable

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from .bytes import message_bytes
from .vertical import VerticalConfig, fold_rows, steps_per_epoch
from .vertical_errors import AlignmentError, MalformedTensor, PartyDataError, PartyDropped, VerticalError

CFG = "vfl"
_TYPED = {"MalformedTensor": MalformedTensor, "AlignmentError": AlignmentError, "PSIError": AlignmentError,
          "PartyDataError": PartyDataError, "VerticalError": VerticalError}


class VerticalServer:
    """Runs `cfg` over a Flower Grid whose nodes are the parties."""

    def __init__(self, grid: Grid, cfg: VerticalConfig, on_epoch: Callable[[dict], None] | None = None,
                 connect_timeout: float = 120.0):
        self.grid, self.cfg, self.on_epoch = grid, cfg, on_epoch or (lambda rec: None)
        self.nodes: dict[str, int] = {}
        self.widths: dict[str, int] = {}
        self.n = 0
        self.wire = 0          # serialized message bytes, both directions, current epoch
        self.where = (0, 0)    # (epoch, step) being run, for error messages
        self._connect(connect_timeout)

    # -- messaging ------------------------------------------------------------------------------
    def _connect(self, timeout: float) -> None:
        """Wait until every party's node is up (Flower can under-sample the first round)."""
        want, t0 = len(self.cfg.parties), time.monotonic()
        while len(ids := list(self.grid.get_node_ids())) < want:
            if time.monotonic() - t0 > timeout:
                raise VerticalError(f"only {len(ids)} of {want} party nodes connected after {timeout:.0f} s")
            time.sleep(0.2)
        for nid, rep in zip(ids, self._send({nid: {"op": "hello"} for nid in ids}, "query")):
            self.nodes[str(rep["party"])] = nid
            self.widths[str(rep["party"])] = int(rep["width"])
        missing = sorted(set(self.cfg.party_names) - set(self.nodes))
        if missing:
            raise VerticalError(f"no node serves parties {missing}")

    def _send(self, per_node: dict[int, dict[str, Any]], kind: str = "train") -> list[ConfigRecord]:
        msgs = [Message(RecordDict({CFG: ConfigRecord(body)}), dst_node_id=nid, message_type=f"{kind}.vfl")
                for nid, body in per_node.items()]
        self.wire += sum(message_bytes(m) for m in msgs)
        replies = {r.metadata.reply_to_message_id: r for r in self.grid.send_and_receive(msgs)}
        out = []
        for m in msgs:
            r = replies.get(m.metadata.message_id)
            who = next((p for p, nid in self.nodes.items() if nid == m.metadata.dst_node_id), str(m.metadata.dst_node_id))
            if r is None or r.has_error():
                reason = "no reply" if r is None else r.error.reason
                raise self._error(who, reason)
            self.wire += message_bytes(r)
            out.append(r.content.config_records[CFG])
        return out

    def _error(self, who: str, reason: str) -> Exception:
        kind = reason.split(":", 1)[0].strip()
        if kind in _TYPED:
            return _TYPED[kind](f"party {who!r}: {reason}")
        epoch, step = self.where
        return PartyDropped(who, epoch, step, reason, {"epoch": epoch})

    def to(self, party: str, body: dict[str, Any], kind: str = "train") -> ConfigRecord:
        return self._send({self.nodes[party]: body}, kind)[0]

    def to_all(self, bodies: dict[str, dict[str, Any]], kind: str = "train") -> dict[str, ConfigRecord]:
        reps = self._send({self.nodes[p]: b for p, b in bodies.items()}, kind)
        return dict(zip(bodies, reps))

    # -- alignment ------------------------------------------------------------------------------
    def align(self) -> dict[str, Any]:
        """PSI between the label party and each other party; every party ends with the same rows."""
        t0, lab, others = time.perf_counter(), self.cfg.label_party, self.cfg.party_names[1:]
        if not self.cfg.psi:
            reps = self.to_all({p: {"op": "align_plain"} for p in self.cfg.party_names}, "query")
            if len({r["digest"] for r in reps.values()}) != 1:
                raise AlignmentError("the parties' id sets differ (misaligned or missing ids); enable psi = true")
            self.n = int(reps[lab]["n"])
            return {"aligned": self.n, "psi": False}
        blinded = {p: r["blinded"] for p, r in self.to_all(
            {p: {"op": "psi_blind"} for p in self.cfg.party_names}, "query").items()}
        bodies = {lab: {"op": "psi_reblind", **{f"peer:{q}": blinded[q] for q in others}}}
        bodies.update({q: {"op": "psi_reblind", f"peer:{lab}": blinded[lab]} for q in others})
        re = self.to_all(bodies, "query")
        # re[lab]["peer:q"] = q's points double-blinded; re[q]["peer:lab"] = the label party's
        body = {"op": "psi_align"}
        for q in others:
            body[f"double:{q}"], body[f"theirs:{q}"] = re[q][f"peer:{lab}"], re[lab][f"peer:{q}"]
        rep = self.to(lab, body, "query")
        self.n = int(rep["n"])
        if self.n == 0:
            raise AlignmentError("the parties share no ids")
        counts = self.to_all({q: {"op": "psi_align", "double": re[lab][f"peer:{q}"], "tags": rep[f"tags:{q}"]}
                              for q in others}, "query")
        bad = {q: int(r["n"]) for q, r in counts.items() if int(r["n"]) != self.n}
        if bad:
            raise AlignmentError(f"aligned row counts differ: label party {self.n}, others {bad}")
        return {"aligned": self.n, "psi": True, "seconds": time.perf_counter() - t0}

    def setup(self) -> None:
        widths = [self.widths[p] for p in self.cfg.party_names]
        self.to_all({p: {"op": "setup", "widths": widths} for p in self.cfg.party_names}, "query")

    # -- training -------------------------------------------------------------------------------
    def fit(self, codec: str, fold: int, resume: dict[str, Any] | None = None) -> list[dict]:
        """Train one fold with one codec; returns the per-epoch history (test metrics, bytes)."""
        cfg, lab, others = self.cfg, self.cfg.label_party, self.cfg.party_names[1:]
        n_train = len(fold_rows(self.n, cfg, fold)[0])
        history: list[dict] = list((resume or {}).get("history", []))
        if resume:
            self.to_all({p: {"op": "restore"} for p in cfg.party_names}, "query")
        else:
            self.to_all({p: {"op": "init"} for p in cfg.party_names}, "query")
        common = {"codec": codec, "fold": fold}
        for epoch in range(int((resume or {}).get("epoch", 0)), cfg.epochs):
            self.wire, payload, losses = 0, {"emb": 0, "grad": 0}, []
            grads: dict[str, bytes] = {}
            try:
                for step in range(steps_per_epoch(n_train, cfg.batch_size)):
                    self.where = (epoch, step)
                    at = {**common, "epoch": epoch, "step": step, "snapshot": step == 0}
                    embs = self.to_all({q: {"op": "step", **at, **({"grad": grads[q]} if q in grads else {})}
                                        for q in others})
                    body = {"op": "step", **at, **{f"emb:{q}": r["emb"] for q, r in embs.items()}}
                    rep = self.to(lab, body)
                    grads = {q: rep[f"grad:{q}"] for q in others}
                    losses.append(float(rep["loss"]))
                    payload["emb"] += sum(len(r["emb"]) for r in embs.values())
                    payload["grad"] += sum(len(g) for g in grads.values())
                self.to_all({q: {"op": "flush", **common, "epoch": epoch, "grad": grads[q]} for q in others})
            except PartyDropped as e:
                e.resume.update({"codec": codec, "fold": fold, "history": history})
                raise
            rec = {"codec": codec, "fold": fold, "epoch": epoch + 1, "loss": sum(losses) / len(losses),
                   "emb_bytes": payload["emb"], "grad_bytes": payload["grad"], "wire_bytes": self.wire,
                   **self.evaluate(codec, fold, "test")}
            rec["cum_bytes"] = rec["emb_bytes"] + rec["grad_bytes"] + (history[-1]["cum_bytes"] if history else 0)
            history.append(rec)
            self.on_epoch(rec)
        return history

    def evaluate(self, codec: str, fold: int, split: str = "test") -> dict[str, float]:
        """Joint inference on a split: every party embeds its rows, the label party scores them."""
        others = self.cfg.party_names[1:]
        at = {"codec": codec, "fold": fold, "split": split}
        embs = self.to_all({q: {"op": "embed", **at} for q in others}, "query")
        rep = self.to(self.cfg.label_party, {"op": "score", **at, **{f"emb:{q}": r["emb"] for q, r in embs.items()}},
                      "query")
        return {k: float(v) for k, v in rep.items()}

    def run(self) -> dict[str, Any]:
        """Align, then every codec x fold; the results dict written to results.json."""
        cfg = self.cfg
        results: dict[str, Any] = {"name": cfg.name, "config": json.loads(cfg.to_json()),
                                   "alignment": self.align(), "runs": {}}
        self.setup()
        folds = range(cfg.run_folds or max(cfg.folds, 1))
        for codec in cfg.codecs:
            hist = [self.fit(codec, f) for f in folds]
            results["runs"][codec] = summarize(hist)
        if cfg.model_dir:  # a node's config "model-dir" overrides where that party writes
            results["saved"] = self.save(cfg.codecs[-1], folds[-1])
        return results

    def save(self, codec: str, fold: int) -> dict[str, list[str]]:
        """Every party saves the models it holds now (the last run's) on its own disk."""
        reps = self.to_all({p: {"op": "save", "codec": codec, "fold": fold} for p in self.cfg.party_names}, "query")
        return {p: list(r["files"]) for p, r in reps.items()}


def summarize(folds: list[list[dict]]) -> dict[str, Any]:
    """Mean final metrics over folds, and mean bytes per epoch."""
    finals = [h[-1] for h in folds]
    keys = [k for k in ("auc", "accuracy", "loss") if k in finals[0]]
    mean = {k: sum(f[k] for f in finals) / len(finals) for k in keys}
    per_epoch = {k: sum(r[k] for h in folds for r in h) / sum(len(h) for h in folds)
                 for k in ("emb_bytes", "grad_bytes", "wire_bytes")}
    return {"mean": mean, "bytes_per_epoch": per_epoch, "folds": folds}
