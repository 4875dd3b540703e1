"""Drop-outs and stragglers on Flower's real simulation engine (Ray), injected as ClientApp mods.

What the engine does (Flower 1.42, flwr/server/superlink/fleet/vce): one worker thread per Ray
actor (2 actors at num_cpus=1 on 2 cores), and nothing cancels a running ClientApp. A client slower
than the round timeout keeps its actor busy for its whole delay: the server closes the round
without it and the next round runs on the other actor; the late reply lands in the LinkState but
is never pulled (the grid pulls only the current round's message ids). The run ends only when the
sleeping actor is done. With as many stragglers as actors, later rounds get no replies until the
sleeps end. A message still queued when its round closes runs later anyway and reads the *current*
round's config (the in-memory LinkState keeps the Message object, whose ConfigRecord FedAvg mutates
each round). Each actor's first train call also pays a cold start (importing sklearn for digits,
4-6 s on 2 shared cores), so round 1 is a warm-up here and the straggler is slow in round 2.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")

from flwr.app import Context, Message, MessageType  # noqa: E402
from flwr.clientapp.typing import Mod  # noqa: E402

from federated.client_app import partition_id  # noqa: E402
from federated.errors import SimulatedDropout  # noqa: E402
from federated.simulation import simulate  # noqa: E402
from federated.wire import CONFIG  # noqa: E402

from .helpers import small_scenario  # noqa: E402

ROUND_TIMEOUT = 10.0  # s; > an actor's cold start in round 1 (4-6 s); warm local training takes ~0.05 s
STRAGGLER_DELAY = 13.0  # s, in round 2 only: its actor is still asleep when round 3 is over
SLOW_ROUND = 2
DROPOUT, STRAGGLER = 0, 3  # partition ids


def fault_mod(log_file: str, dropout: int, straggler: int, delay: float, slow_rounds: frozenset[int]) -> Mod:
    """A mod that makes partition `dropout` raise in every round, `straggler` reply `delay` s late
    in `slow_rounds` (train messages only).

    Every train call appends {partition, round, start, end, actor pid} to `log_file` (wall clock,
    shared by the Ray actor processes), so the test sees which actor ran what, and when.
    """
    def mod(msg: Message, context: Context, call_next) -> Message:
        if msg.metadata.message_type != MessageType.TRAIN:
            return call_next(msg, context)
        pid, rnd, start = partition_id(context), int(msg.content[CONFIG]["server-round"]), time.time()
        try:
            if pid == dropout:
                raise SimulatedDropout(f"client {pid} dropped out of round {rnd}")
            reply = call_next(msg, context)
            if pid == straggler and rnd in slow_rounds:
                time.sleep(delay)
            return reply
        finally:
            line = json.dumps({"pid": pid, "round": rnd, "start": start, "end": time.time(), "actor": os.getpid()})
            with open(log_file, "a") as f:
                f.write(line + "\n")

    return mod


@pytest.mark.slow  # Ray start-up (~30 s) + cold round 1 + ROUND_TIMEOUT + the rest of the sleep: ~50 s
def test_engine_rounds_survive_a_dropout_and_a_straggler(tmp_path: Path):
    log_file = tmp_path / "calls.jsonl"
    sc = small_scenario(num_clients=4, clients_per_round=4, num_rounds=3, compare=["fp32"],
                        round_timeout=ROUND_TIMEOUT, wait_timeout=60.0)
    mod = fault_mod(str(log_file), DROPOUT, STRAGGLER, STRAGGLER_DELAY, frozenset({SLOW_ROUND}))
    t0 = time.monotonic()
    res = simulate(sc, client_mods=[mod])
    elapsed = time.monotonic() - t0
    hist = res["runs"][0]["history"]
    calls = {(c["pid"], c["round"]): c for c in map(json.loads, log_file.read_text().splitlines())}

    # every round completed: the drop-out fails each round, the straggler times out in round 2 only
    # (its stale round-2 reply, stored while round 3 ran, is not counted in round 3)
    assert [h["round"] for h in hist] == [0, 1, 2, 3]
    assert [(h["accepted"], h["failed"], h["timed_out"]) for h in hist[1:]] == [(3, 1, 0), (2, 1, 1), (3, 1, 0)]
    # the aggregated model stays finite and learns
    assert all(math.isfinite(h["loss"]) for h in hist)
    assert hist[-1]["accuracy"] > hist[0]["accuracy"] + 0.3

    # round 2 closed at the timeout, not after the straggler's delay
    slow_round = hist[SLOW_ROUND]["time_s"] - hist[SLOW_ROUND - 1]["time_s"]
    assert ROUND_TIMEOUT <= slow_round < STRAGGLER_DELAY, slow_round
    # round 3 did not wait for the straggler's busy actor: all of its training, the straggler's own
    # round-3 call included, ran on the other actor while the round-2 call was still asleep
    late = calls[(STRAGGLER, SLOW_ROUND)]
    for pid in (1, 2, STRAGGLER):
        c = calls[(pid, SLOW_ROUND + 1)]
        assert c["end"] < late["end"] and c["actor"] != late["actor"], (late, c)
    # the run waited for the sleeping actor (its log line exists) but stayed bounded
    assert late["end"] - late["start"] >= STRAGGLER_DELAY
    assert elapsed < 120.0, elapsed
