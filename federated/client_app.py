"""The Flower ClientApp: local training of the global model on this node's partition.

Handlers are Flower-native (plain ArrayRecords in and out); compression is the outer
``wire_mod`` and central DP clipping is Flower's ``fixedclipping_mod`` (applied only when the
server's DP wrapper asks for it), see :mod:`federated.wire`. For tests and attack studies, a
scenario can make some clients drop out (``dropout_rate``) or send Byzantine garbage
(``byzantine_clients``: the first partitions send Gaussian noise of ``byzantine_scale`` times
their honest update's norm) or reply late (``stragglers``: the last partitions hold their reply
back ``straggler_delay`` seconds, to exercise the server's round timeout). The ``query`` handler
tells the server which partition this node holds (reproducible sampling, federated.sampling).
"""
from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.mod import fixedclipping_mod
from flwr.clientapp.typing import Mod

from .data import client_data
from .errors import ScenarioError, SimulatedDropout
from .local_training import evaluate_params, train_local
from .robust import update_norm
from .sampling import partition_reply
from .scenario import Scenario, scenario_from_run_config
from .wire import ARRAYS, CONFIG, METRICS, from_record, to_record, wire_mod

CLIPPING_NORM_KEY = "clipping_norm"  # what Flower's DP client-side wrappers put in the config


def dp_clipping_mod(msg: Message, context: Context, call_next) -> Message:
    """Flower's fixedclipping_mod, but only for train messages whose config carries a clipping norm."""
    cfg = msg.content.config_records.get(CONFIG)
    if cfg is not None and CLIPPING_NORM_KEY in cfg and msg.metadata.message_type == "train":
        return fixedclipping_mod(msg, context, call_next)
    return call_next(msg, context)


def partition_id(context: Context) -> int:
    pid = context.node_config.get("partition-id")
    if pid is None:
        raise ScenarioError("this SuperNode has no 'partition-id' in its node config "
                            "(start it with --node-config \"partition-id=0 num-partitions=N\")")
    return int(pid)


def _dropout(sc: Scenario, pid: int, rnd: int) -> bool:
    return sc.dropout_rate > 0 and np.random.default_rng([sc.seed, rnd, pid, 7]).random() < sc.dropout_rate


def _straggler(sc: Scenario, pid: int) -> bool:
    return sc.stragglers > 0 and pid >= sc.num_clients - sc.stragglers


def byzantine_update(global_params: list[np.ndarray], params: list[np.ndarray], scale: float,
                     rng: np.random.Generator) -> list[np.ndarray]:
    """Garbage of bounded size: global + Gaussian noise with `scale` x the honest update's norm."""
    honest = update_norm([p - g for p, g in zip(params, global_params)])
    noise = [rng.standard_normal(g.shape) for g in global_params]
    k = scale * max(honest, 1e-3) / max(update_norm(noise), 1e-12)
    return [(g + k * n).astype(np.float32) for g, n in zip(global_params, noise)]


def make_client_app(scenario: Scenario | None = None, mods: Sequence[Mod] = ()) -> ClientApp:
    """A ClientApp bound to `scenario`, or reading it from the run config (deployment) when None.

    `mods` are extra Flower mods (first = outermost), run inside our wire and DP mods: they see
    the decoded message and the plain reply, e.g. a user's logging/clipping mod or a test's fault.
    """
    app = ClientApp(mods=[wire_mod, dp_clipping_mod, *mods])

    def resolve(context: Context) -> Scenario:
        return scenario if scenario is not None else scenario_from_run_config(context.run_config)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        sc = resolve(context)
        pid = partition_id(context)
        cfg = msg.content[CONFIG]
        rnd = int(cfg.get("server-round", 0))
        if _dropout(sc, pid, rnd):
            raise SimulatedDropout(f"client {pid} dropped out of round {rnd} (dropout_rate={sc.dropout_rate})")
        global_params = [np.asarray(a, np.float32) for a in from_record(msg.content[ARRAYS])]
        mu = float(cfg.get("proximal-mu", sc.proximal_mu))
        local_sc = sc if mu == sc.proximal_mu else sc.replace(proximal_mu=mu)
        t0 = time.perf_counter()
        res = train_local(global_params, client_data(sc, pid), local_sc, seed=sc.seed * 100003 + rnd * 1009 + pid)
        params = res.params
        if pid < sc.byzantine_clients:
            params = byzantine_update(global_params, params, sc.byzantine_scale,
                                      np.random.default_rng([sc.seed, rnd, pid]))
        metrics = MetricRecord({"num-examples": res.num_examples, "train-loss": res.loss,
                                "train-time-s": time.perf_counter() - t0})
        if _straggler(sc, pid):
            time.sleep(sc.straggler_delay)  # a slow device or link: the reply comes late
        return Message(RecordDict({ARRAYS: to_record(params), METRICS: metrics}), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        sc = resolve(context)
        pid = partition_id(context)
        x, y = client_data(sc, pid)
        loss, acc = evaluate_params(from_record(msg.content[ARRAYS]), (x, y), sc)
        metrics = MetricRecord({"num-examples": len(x), "eval-loss": loss, "eval-acc": acc})
        return Message(RecordDict({METRICS: metrics}), reply_to=msg)

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        return partition_reply(msg, partition_id(context))

    return app


# The app `flwr run` loads (federated/app/pyproject.toml): the scenario comes with the run config.
app = make_client_app()
