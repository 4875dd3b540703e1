"""Flower's strategies, fed with decoded updates: the server half of compressed federated learning.

:class:`CompressedStrategy` wraps any ``flwr.serverapp.strategy.Strategy`` (FedAvg, FedAdam, Krum,
a DP wrapper...). It asks clients for compressed updates, decodes and validates each reply
(:mod:`federated.robust`) back into a plain "arrays" ArrayRecord of full parameters
(global + delta), and hands only the valid replies to the inner strategy, so Flower's own
aggregation code runs unchanged. It also compresses the downlink when asked, counts the
serialized bytes of every message in both directions (:mod:`federated.bytes`), makes the choice
of clients reproducible (:mod:`federated.sampling`) and logs the nodes that sent no reply within
the round timeout (the round goes on with the replies received).
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp import strategy as fs

from .bytes import ByteCounter
from .errors import ScenarioError, UpdateRejected
from .robust import decode_update, validate_delta
from .sampling import NodeSampler
from .scenario import Scenario
from .wire import (
    ARRAYS, METRICS, PAYLOAD, UPLINK_CODEC, WIRE, encode_full, from_record, reply_metrics, to_record, wire_record,
)

log = logging.getLogger("edgelearn.federated")


@dataclass
class RoundLog:
    """What happened to the replies of one round."""

    accepted: int = 0
    rejected: int = 0
    failed: int = 0
    timed_out: int = 0  # sampled nodes with no reply (error or update) within the round timeout
    train_time_s: float = 0.0  # sum of the clients' reported local training time
    reasons: list[str] = field(default_factory=list)


class CompressedStrategy(fs.Strategy):
    """Decode + validate compressed replies, then delegate to a Flower strategy."""

    def __init__(self, inner: fs.Strategy, uplink: str = "fp32", downlink: str = "none",
                 max_update_norm: float = 0.0, counter: ByteCounter | None = None,
                 sampler: NodeSampler | None = None, round_timeout: float | None = None):
        self.inner, self.uplink, self.downlink = inner, uplink, downlink
        self.max_update_norm = max_update_norm
        self.counter = counter or ByteCounter()
        self.sampler = sampler or NodeSampler(0)
        self.round_timeout = round_timeout  # for the log line only; Strategy.start enforces it
        self.rounds: dict[int, RoundLog] = {}
        self._global: list[np.ndarray] | None = None
        self._sent: dict[int, list[int]] = {}  # round -> nodes asked to train

    def summary(self) -> None:
        log.info("CompressedStrategy(uplink=%s, downlink=%s, max_update_norm=%s) around %s",
                 self.uplink, self.downlink, self.max_update_norm, type(self.inner).__name__)
        self.inner.summary()

    # -- downlink
    def _compress_down(self, rnd: int, messages: Iterable[Message], grid: Grid) -> list[Message]:
        out = self.sampler.readdress(rnd, list(messages), grid)
        payload_len = 0
        if self.downlink != "none" and out:
            arrays = from_record(out[0].content.array_records[ARRAYS])
            payload = encode_full(arrays, self.downlink)
            payload_len = len(payload)
            for m in out:
                rest = {k: v for k, v in m.content.items() if k != ARRAYS}
                rest[WIRE] = wire_record(payload)
                m.content = RecordDict(rest)
        for m in out:
            self.counter.add_down(rnd, m, payload_len)
        return out

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self._global = from_record(arrays)
        config[UPLINK_CODEC] = self.uplink
        out = self._compress_down(server_round, self.inner.configure_train(server_round, arrays, config, grid), grid)
        self._sent[server_round] = [m.metadata.dst_node_id for m in out]
        return out

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        return self._compress_down(server_round, self.inner.configure_evaluate(server_round, arrays, config, grid),
                                   grid)

    # -- uplink
    def decode_reply(self, msg: Message) -> list[np.ndarray]:
        """Full parameters a reply proposes (global + decoded delta); raises UpdateRejected."""
        assert self._global is not None, "configure_train must run before replies are decoded"
        shapes = [g.shape for g in self._global]
        node = msg.metadata.src_node_id
        content = msg.content
        if WIRE in content.config_records:
            delta = decode_update(content.config_records[WIRE].get(PAYLOAD), shapes,
                                  self.max_update_norm, node)
            return [g + d for g, d in zip(self._global, delta)]
        if ARRAYS in content.array_records:  # uncompressed ("none") replies are validated too
            try:
                params = [np.asarray(p) for p in from_record(content.array_records[ARRAYS])]
            except Exception as e:  # noqa: BLE001 - any corrupt record is a rejection, not a crash
                raise UpdateRejected(f"unreadable ArrayRecord: {e}", node) from None
            if any(p.dtype.kind != "f" for p in params):
                raise UpdateRejected("non-float arrays in the update", node)
            if [p.shape for p in params] != shapes:
                raise UpdateRejected(f"shapes {[p.shape for p in params]} differ from the model's", node)
            validate_delta([p.astype(np.float32) - g for p, g in zip(params, self._global)],
                           shapes, self.max_update_norm, node)
            return [p.astype(np.float32) for p in params]
        raise UpdateRejected("reply carries neither a payload nor arrays", node)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        stats = self.rounds.setdefault(server_round, RoundLog())
        replies = self.sampler.sort_replies(replies)
        self._log_missing(server_round, replies, stats)
        kept: list[Message] = []
        for msg in replies:
            if msg.has_error():
                stats.failed += 1
                kept.append(msg)  # the inner strategy logs and skips it
                continue
            wire = msg.content.config_records.get(WIRE)
            payload = wire.get(PAYLOAD, b"") if wire is not None else b""
            self.counter.add_up(server_round, msg, len(payload) if isinstance(payload, bytes) else 0)
            try:
                params = self.decode_reply(msg)
                metrics = reply_metrics(wire, msg.metadata.src_node_id) if wire is not None else \
                    msg.content.metric_records.get(METRICS, MetricRecord({"num-examples": 1}))
            except UpdateRejected as e:
                stats.rejected += 1
                stats.reasons.append(str(e))
                log.warning("round %d: rejected update: %s", server_round, e)
                continue
            stats.accepted += 1
            stats.train_time_s += float(metrics.get("train-time-s", 0.0))
            msg.content = RecordDict({ARRAYS: to_record(params), METRICS: metrics})
            kept.append(msg)
        if stats.accepted == 0:
            log.warning("round %d: no valid update (%d rejected, %d failed, %d timed out); global model unchanged",
                        server_round, stats.rejected, stats.failed, stats.timed_out)
            return None, None
        return self.inner.aggregate_train(server_round, kept)

    def _log_missing(self, server_round: int, replies: list[Message], stats: RoundLog) -> None:
        sent = self._sent.pop(server_round, [])
        got = {m.metadata.src_node_id for m in replies}
        missing = [n for n in sent if n not in got]
        stats.timed_out += len(missing)
        if missing:
            within = f" within the round timeout of {self.round_timeout:g} s" if self.round_timeout else ""
            log.warning("round %d: %d of %d sampled nodes sent no reply%s (nodes %s); aggregating the %d "
                        "replies received", server_round, len(missing), len(sent), within,
                        ", ".join(str(n) for n in missing), len(replies))

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        replies = list(replies)
        for msg in replies:
            if not msg.has_error():
                self.counter.add_up(server_round, msg, 0)
        return self.inner.aggregate_evaluate(server_round, replies)


def build_strategy(sc: Scenario, uplink: str | None = None, counter: ByteCounter | None = None,
                   fraction_evaluate: float = 0.0, partitions: dict[int, int] | None = None) -> CompressedStrategy:
    """The scenario's Flower strategy (+ DP wrapper) inside a CompressedStrategy."""
    frac = sc.clients_per_round / sc.num_clients
    common = dict(fraction_train=frac, fraction_evaluate=fraction_evaluate,
                  min_train_nodes=sc.clients_per_round,
                  min_evaluate_nodes=max(1, int(fraction_evaluate * sc.num_clients)),
                  min_available_nodes=sc.clients_per_round)
    opts = dict(sc.strategy_options)
    classes = {"fedavg": fs.FedAvg, "fedavgm": fs.FedAvgM, "fedprox": fs.FedProx, "fedadam": fs.FedAdam,
               "fedyogi": fs.FedYogi, "fedadagrad": fs.FedAdagrad, "fedmedian": fs.FedMedian,
               "fedtrimmedavg": fs.FedTrimmedAvg, "krum": fs.Krum, "multikrum": fs.MultiKrum,
               "bulyan": fs.Bulyan}
    if sc.strategy == "fedprox":
        opts.setdefault("proximal_mu", sc.proximal_mu)
    if sc.strategy in ("krum", "multikrum", "bulyan"):
        opts.setdefault("num_malicious_nodes", sc.byzantine_clients)
    try:
        inner: fs.Strategy = classes[sc.strategy](**common, **opts)
    except (TypeError, ValueError) as e:
        raise ScenarioError(f"strategy {sc.strategy!r} rejects options {opts}: {e}") from None
    if sc.dp_mode == "server-fixed":
        inner = fs.DifferentialPrivacyServerSideFixedClipping(
            inner, sc.noise_multiplier, sc.clipping_norm, sc.clients_per_round)
    elif sc.dp_mode == "client-fixed":
        inner = fs.DifferentialPrivacyClientSideFixedClipping(
            inner, sc.noise_multiplier, sc.clipping_norm, sc.clients_per_round)
    return CompressedStrategy(inner, uplink or sc.codec, sc.downlink, sc.max_update_norm, counter,
                              NodeSampler(sc.seed, partitions), sc.round_timeout)
