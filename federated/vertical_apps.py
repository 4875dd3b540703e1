"""Vertical FL on Flower: one ClientApp per party, a ServerApp that only relays and schedules.

The ServerApp never sees features, labels or ids: it relays PSI points, codec payloads of
embeddings and gradients, and the label party's metrics. Messages (``ConfigRecord`` "vfl", op
in ``op``): hello, psi_blind, psi_reblind, psi_align (or align_plain), setup, init, step (train:
passive parties apply the previous step's gradient then embed the next batch; the label party
runs the top model), flush, embed, score, restore, save (each party writes its own ONNX models).
Party state lives in ``context.state`` ("vfl" ConfigRecord; "vfl.params" and "vfl.snapshot"
ArrayRecords); built models are cached per process and re-loaded from that state on every
message, so any worker may serve any party (on the deployment engine every message is even a
fresh ClientApp process, which is why the state must round-trip).

Alignment with more than two parties runs PSI between the label party and each other party; the
label party keeps the ids shared by all, and tells each party which of its tags survive (tags are
double-blinded, so the relay learns nothing). The label party thus sees each pairwise
intersection, the others only the final one.

    results = run_inprocess(cfg)          # the same apps with an in-process Grid (fast, tests)
    results = simulate_vertical(cfg)      # Flower's simulation engine (Ray)
    results = deploy_vertical(cfg, csvs)  # Flower's deployment engine (federated.vertical_deploy)
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any, Callable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from .errors import SimulatedDropout
from .psi import PSIParty
from .scenario import RESULTS_KEY
from .vertical import (PartyRuntime, VerticalConfig, batch_rows, decode_tensor, encode_tensor, fold_rows,
                       load_party)
from .vertical_data import PartyData
from .vertical_errors import VerticalError

CFG, PARAMS, SNAPSHOT = "vfl", "vfl.params", "vfl.snapshot"
RUN_CONFIG_KEY = "vfl-config"
_CACHE: dict[tuple, Any] = {}  # per process: raw party data and built runtimes


# --- party side -------------------------------------------------------------------------------

def party_name(cfg: VerticalConfig, context: Context) -> str:
    """From node config "party=NAME" (deployment) or "partition-id" (simulation, config order).

    A deployed SuperNode may also name its own file (node config ``csv=PATH``) and where it saves
    its models (``model-dir=DIR``), so the run config that travels carries no party's paths.
    """
    if "party" in context.node_config:
        return str(context.node_config["party"])
    pid = int(context.node_config.get("partition-id", -1))
    if not 0 <= pid < len(cfg.parties):
        raise VerticalError(f"node has no party: set node config party=NAME or partition-id < {len(cfg.parties)}")
    return cfg.parties[pid].name


def _raw(cfg: VerticalConfig, name: str, key: str, csv: str = "") -> PartyData:
    """The party's own table, read once per process; `csv` (node config) overrides the config's file."""
    if ("raw", key, name, csv) not in _CACHE:
        if csv:
            cfg = cfg.replace(parties=[{**asdict(q), "csv": csv} if q.name == name else asdict(q) for q in cfg.parties])
        _CACHE[("raw", key, name, csv)] = load_party(cfg, name)
    return _CACHE[("raw", key, name, csv)]


class _Party:
    """A ClientApp call's view of one party: cached runtime + this node's context.state."""

    def __init__(self, cfg: VerticalConfig, cfg_json: str, context: Context):
        self.cfg, self.key, self.ctx = cfg, cfg_json, context
        self.name = party_name(cfg, context)
        if CFG not in context.state.config_records:
            context.state.config_records[CFG] = ConfigRecord({})
        self.meta = context.state.config_records[CFG]
        self.data = _raw(cfg, self.name, cfg_json, str(context.node_config.get("csv", "") or ""))

    def psi(self) -> PSIParty:
        if "psi_key" not in self.meta:
            self.meta["psi_key"] = PSIParty(self.data.ids).key
        return PSIParty(self.data.ids, key=self.meta["psi_key"])

    def runtime(self) -> PartyRuntime:
        aligned = list(self.meta["aligned"])
        widths = dict(zip(self.cfg.party_names, self.meta.get("widths", [])))
        ck = ("rt", self.key, self.name, hash(tuple(aligned)))
        if ck not in _CACHE:
            _CACHE[ck] = PartyRuntime(self.data.take(aligned), self.cfg, widths or None)
        rt = _CACHE[ck]
        if PARAMS in self.ctx.state.array_records:
            rt.load_state({k: v.numpy() for k, v in self.ctx.state.array_records[PARAMS].items()})
        return rt

    def save(self, rt: PartyRuntime, where: str = PARAMS) -> None:
        self.ctx.state.array_records[where] = ArrayRecord({k: Array(v) for k, v in rt.state().items()})


def _rows(cfg: VerticalConfig, n: int, c: ConfigRecord) -> np.ndarray:
    train, test = fold_rows(n, cfg, int(c["fold"]))
    if c.get("split") == "test":
        return test
    if c.get("split") == "train":
        return train
    return batch_rows(train, cfg, int(c["epoch"]), int(c["step"]))


def _maybe_fail(cfg: VerticalConfig, p: _Party, c: ConfigRecord) -> None:
    if not cfg.fail_at or p.meta.get("failed"):
        return
    who, epoch, step = cfg.fail_at.split(":")
    if who == p.name and int(c.get("epoch", -1)) == int(epoch) and int(c.get("step", -1)) == int(step):
        p.meta["failed"] = True
        raise SimulatedDropout(f"party {p.name!r} dropped out (simulated) at epoch {epoch}, step {step}")


def handle(cfg: VerticalConfig, cfg_json: str, msg: Message, context: Context) -> Message:
    """Every op of the protocol, for whichever party this node is."""
    c = msg.content.config_records[CFG]
    p = _Party(cfg, cfg_json, context)
    op, out = c["op"], ConfigRecord({})
    label = p.name == cfg.label_party
    if op == "hello":
        out.update({"party": p.name, "rows": len(p.data.ids), "features": p.data.x.shape[1], "label": label,
                    "width": cfg.embed})
    elif op == "psi_blind":
        out["blinded"] = p.psi().blinded()
    elif op == "psi_reblind":
        psi = p.psi()
        for k in [k for k in c if k.startswith("peer:")]:
            out[k] = psi.reblind(c[k])
    elif op == "psi_align":
        psi = p.psi()
        if label:
            peers = [k[len("double:"):] for k in c if k.startswith("double:")]
            shared = [set(psi.intersect(c[f"double:{q}"], c[f"theirs:{q}"])) for q in peers]
            aligned = [i for i in p.data.ids if all(i in s for s in shared)]
            for q in peers:
                tags = psi.tags(c[f"double:{q}"])
                out[f"tags:{q}"] = b"".join(tags[i] for i in aligned)
        else:
            aligned = psi.select(c["double"], c["tags"])
        p.meta["aligned"] = aligned
        out["n"] = len(aligned)
    elif op == "align_plain":
        import hashlib

        p.meta["aligned"] = sorted(p.data.ids)
        out.update({"n": len(p.data.ids), "digest": hashlib.sha256("\n".join(sorted(p.data.ids)).encode()).hexdigest()})
    elif op == "setup":
        p.meta["widths"] = list(c.get("widths", []))
        p.save(p.runtime())
    elif op == "init":
        rt = p.runtime()
        rt.load_state(rt.initial)
        p.meta["pending"] = ""
        p.save(rt)
    elif op == "restore":
        if SNAPSHOT not in context.state.array_records:
            raise VerticalError(f"party {p.name!r} has no snapshot to restore")
        context.state.array_records[PARAMS] = context.state.array_records[SNAPSHOT]
        p.meta["pending"] = ""
    else:
        rt = p.runtime()
        out.update(_train_ops(cfg, p, rt, op, c, label))
    return Message(RecordDict({CFG: out}), reply_to=msg)


def _train_ops(cfg: VerticalConfig, p: _Party, rt: PartyRuntime, op: str, c: ConfigRecord,
               label: bool) -> dict[str, Any]:
    n, codec = len(rt.data.ids), str(c.get("codec", cfg.codec))
    seed = [cfg.seed, int(c.get("fold", 0)), int(c.get("epoch", 0)), int(c.get("step", 0)),
            cfg.party_names.index(p.name)]
    out: dict[str, Any] = {}
    if op in ("step", "flush"):
        _maybe_fail(cfg, p, c)
        if c.get("snapshot"):
            p.save(rt, SNAPSHOT)
        if "grad" in c:  # the gradient of the previous batch this party embedded
            pend = p.meta.get("pending", "")
            if not pend:
                raise VerticalError(f"party {p.name!r} got a gradient but has no pending batch")
            e, s = (int(v) for v in pend.split(":"))
            rows = _rows(cfg, n, ConfigRecord({"fold": c["fold"], "epoch": e, "step": s}))
            rt.backward(rows, decode_tensor(c["grad"], (len(rows), rt.bottom.width), f"gradient for {p.name!r}"))
            p.meta["pending"] = ""
        if op == "step":
            rows = _rows(cfg, n, c)
            if label:
                others = {q: decode_tensor(c[f"emb:{q}"], (len(rows), w), f"embedding from {q!r}")
                          for q, w in zip(cfg.party_names[1:], rt.widths[1:])}
                loss, grads = rt.train_step(rows, others)
                out["loss"] = loss
                out.update({f"grad:{q}": encode_tensor(g, codec, seed + [1]) for q, g in grads.items()})
            else:
                out["emb"] = encode_tensor(rt.forward(rows), codec, seed)
                p.meta["pending"] = f"{int(c['epoch'])}:{int(c['step'])}"
        p.save(rt)
    elif op == "embed":
        out["emb"] = encode_tensor(rt.forward(_rows(cfg, n, c)), codec, seed + [2])
    elif op == "save":  # this party's own models, to its own disk (federated.vertical_model)
        from .vertical_model import save_party

        where = str(p.ctx.node_config.get("model-dir", "") or cfg.model_dir)
        if not where:
            raise VerticalError(f"party {p.name!r}: nowhere to save (set model_dir or node config model-dir)")
        out["files"] = [str(f) for f in save_party(rt, where, {"codec": codec, "fold": int(c.get("fold", 0))})]
    elif op == "score":
        rows = _rows(cfg, n, c)
        others = {q: decode_tensor(c[f"emb:{q}"], (len(rows), w), f"embedding from {q!r}")
                  for q, w in zip(cfg.party_names[1:], rt.widths[1:])}
        out.update(rt.score(rows, others))
    else:
        raise VerticalError(f"unknown vertical-FL op {op!r}")
    return out


def config_from_run_config(run_config: Any) -> VerticalConfig:
    """The scenario a deployed run carries as JSON (run config ``vfl-config``); empty = the default."""
    text = str(run_config.get(RUN_CONFIG_KEY, "") or "")
    return VerticalConfig.from_json(text) if text else VerticalConfig()


def make_vertical_client_app(cfg: VerticalConfig | None = None) -> ClientApp:
    """The party ClientApp, bound to `cfg` or reading it from the run config (deployment)."""
    app = ClientApp()

    def _h(msg: Message, context: Context) -> Message:
        conf = cfg or config_from_run_config(context.run_config)
        return handle(conf, conf.to_json(), msg, context)

    app.train("vfl")(_h)
    app.query("vfl")(_h)
    return app


# --- running ------------------------------------------------------------------------------------

def run_inprocess(cfg: VerticalConfig, on_epoch: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """The same ClientApps and server loop over federated.inprocess's Grid (no Ray): tests, benchmarks."""
    from .inprocess import InProcessGrid
    from .vertical_server import VerticalServer

    grid = InProcessGrid(make_vertical_client_app(cfg), len(cfg.parties))
    return VerticalServer(grid, cfg, on_epoch).run()


def make_vertical_server_app(cfg: VerticalConfig | None = None, sink: Callable[[dict], None] | None = None,
                             on_epoch: Callable[[dict], None] | None = None) -> ServerApp:
    """A ServerApp running `cfg` (or the run config's) and handing the results to `sink` and/or
    writing them as JSON to the run config's ``results-file`` (deployment: the caller's only view)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        import json
        from pathlib import Path

        from .vertical_server import VerticalServer

        conf = cfg or config_from_run_config(context.run_config)
        results = VerticalServer(grid, conf, on_epoch).run()
        if sink is not None:
            sink(results)
        out = str(context.run_config.get(RESULTS_KEY, "") or "")
        if out:  # write then rename: a watcher never reads half a file
            tmp = Path(out).with_suffix(".tmp")
            tmp.write_text(json.dumps(results, indent=1, default=float))
            tmp.replace(out)

    return app


def simulate_vertical(cfg: VerticalConfig, on_epoch: Callable[[dict], None] | None = None,
                      verbose: bool = False) -> dict[str, Any]:
    """Run `cfg` on Flower's simulation engine, one virtual SuperNode per party (1 CPU each)."""
    import logging
    import os

    from flwr.simulation import run_simulation

    from .simulation import quiet_flower

    if not verbose:
        quiet_flower()
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # no GPUs: silence Ray's tip
    out: list[dict] = []
    run_simulation(server_app=make_vertical_server_app(cfg, out.append, on_epoch),
                   client_app=make_vertical_client_app(cfg), num_supernodes=len(cfg.parties),
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": os.cpu_count() or 1, "log_to_driver": False,
                                                 "logging_level": logging.ERROR}},
                   verbose_logging=verbose)
    if not out:
        raise VerticalError("the vertical simulation ended without results (see Flower's log above)")
    return out[0]
