"""ClientApp handlers and mods called directly: training, codecs on the wire, state, DP, dropout."""
from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord, RecordDict

from compress import decode_payload
from federated.bytes import message_bytes, message_parts
from federated.client_app import make_client_app
from federated.data import client_data, scenario_dataset
from federated.local_training import evaluate_params, init_params
from federated.robust import update_norm
from federated.wire import (
    ARRAYS, CONFIG, METRICS, PAYLOAD, STATE_KEY, UPLINK_CODEC, WIRE, encode_full, from_record, reply_metrics,
    wire_record,
)

from .helpers import context, small_scenario, train_message


@pytest.fixture(scope="module")
def setup():
    sc = small_scenario()
    ds = scenario_dataset(sc)
    return sc, ds, init_params(sc, ds.input_shape, ds.num_classes)


def test_train_reply_is_a_compressed_delta_that_helps(setup):
    sc, ds, g = setup
    app, ctx = make_client_app(sc), context(0, sc)
    rep = app(train_message(g, **{UPLINK_CODEC: "fp32"}), ctx)
    assert not rep.has_error()
    assert list(rep.content.keys()) == [WIRE]  # one compact record: payload + the metrics the server reads
    payload = rep.content.config_records[WIRE][PAYLOAD]
    delta = decode_payload(payload, expected_shapes=[a.shape for a in g])
    m = reply_metrics(rep.content.config_records[WIRE])
    assert m["num-examples"] == len(client_data(sc, 0)[0]) and m["train-time-s"] > 0
    assert "train-loss" not in m  # nothing on the server reads it, so it is not sent
    new = [a + d for a, d in zip(g, delta)]
    local = client_data(sc, 0)
    assert evaluate_params(new, local, sc)[1] > evaluate_params(g, local, sc)[1] + 0.2


def test_error_feedback_state_persists_in_context(setup):
    sc, _, g = setup
    app, ctx = make_client_app(sc), context(1, sc)
    for rnd in (1, 2):
        rep = app(train_message(g, rnd=rnd, **{UPLINK_CODEC: "topk:0.01+q8"}), ctx)
        assert not rep.has_error()
        state = {k: v.numpy() for k, v in ctx.state.array_records[STATE_KEY].items()}
        assert int(state["step"][0]) == rnd
        assert len([k for k in state if k.startswith("residual.")]) == len(g)
    # a different codec starts from a fresh state
    app(train_message(g, rnd=3, **{UPLINK_CODEC: "q8:ef=1"}), ctx)
    assert int(ctx.state.array_records[STATE_KEY]["step"].numpy()[0]) == 1


def test_uplink_none_replies_plain_arrays(setup):
    sc, _, g = setup
    rep = make_client_app(sc)(train_message(g, **{UPLINK_CODEC: "none"}), context(0, sc))
    assert [a.shape for a in from_record(rep.content[ARRAYS])] == [a.shape for a in g]


def test_compressed_downlink_is_decoded_before_the_handler(setup):
    sc, _, g = setup
    msg = train_message(g, **{UPLINK_CODEC: "none"})
    msg.content = RecordDict({WIRE: wire_record(encode_full(g, "fp16")), CONFIG: msg.content[CONFIG]})
    rep = make_client_app(sc)(msg, context(0, sc))
    assert not rep.has_error() and ARRAYS in rep.content.array_records


def test_evaluate_handler_reports_local_accuracy(setup):
    sc, _, g = setup
    rep = make_client_app(sc)(train_message(g, mtype="evaluate"), context(2, sc))
    m = rep.content.metric_records[METRICS]
    assert 0.0 <= m["eval-acc"] <= 1.0 and m["num-examples"] > 0


def test_dp_client_side_clipping_bounds_the_update(setup):
    sc, _, g = setup
    rep = make_client_app(sc)(train_message(g, **{UPLINK_CODEC: "fp32", "clipping_norm": 0.05}), context(0, sc))
    delta = decode_payload(rep.content.config_records[WIRE][PAYLOAD])
    assert update_norm(delta) <= 0.05 * 1.0001


def test_dropout_raises_inside_the_client(setup):
    from federated import SimulatedDropout
    sc = small_scenario(dropout_rate=0.99)
    g = setup[2]
    with pytest.raises(SimulatedDropout):
        make_client_app(sc)(train_message(g), context(0, sc))


def test_byzantine_client_sends_bounded_noise(setup):
    sc = small_scenario(byzantine_clients=1, byzantine_scale=5.0)
    g = setup[2]
    bad = make_client_app(sc)(train_message(g, **{UPLINK_CODEC: "fp32"}), context(0, sc))
    good = make_client_app(sc)(train_message(g, **{UPLINK_CODEC: "fp32"}), context(1, sc))
    nb = update_norm(decode_payload(bad.content.config_records[WIRE][PAYLOAD]))
    ng = update_norm(decode_payload(good.content.config_records[WIRE][PAYLOAD]))
    assert np.isfinite(nb) and nb > 2 * ng


def test_compact_reply_anatomy_sums_to_the_message_bytes(setup):
    sc, _, g = setup
    rep = make_client_app(sc)(train_message(g, **{UPLINK_CODEC: "topk:0.05+q8"}), context(0, sc))
    parts = message_parts(rep)
    assert sum(p["header"] + p["body"] for p in parts) == message_bytes(rep)
    assert sorted(p["object"] for p in parts) == ["ConfigRecord 'w'", "Message", "RecordDict"]
    payload = len(rep.content.config_records[WIRE][PAYLOAD])
    record = next(p for p in parts if p["object"].startswith("ConfigRecord"))
    assert payload < record["body"] < payload + 48  # keys and value framing of p, n, t only
