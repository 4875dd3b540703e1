"""Edge cases and error messages of the reduction, recurrent, attention, signal, training and ml
kernels that onnx's node tests leave out (streaming equivalences, bad attributes, empty sets)."""
from __future__ import annotations

import numpy as np
import pytest

from inference.errors import KernelError
from inference.ops import lookup


def kernel(op: str, opset: int = 22, domain: str = ""):
    entry = lookup(op, domain, opset)
    assert entry is not None, f"no kernel for {domain}::{op} at opset {opset}"
    return entry.fn


rng = np.random.default_rng(0)


# ---------------------------------------------------------------- reductions

def test_reduce_axis_out_of_range_names_the_axis():
    with pytest.raises(KernelError, match="axis 3 is out of range"):
        kernel("ReduceSum", 13)(np.zeros((2, 3)), np.array([3]))


def test_reduce_attribute_form_before_opset_18():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = kernel("ReduceMax", 13)(x, axes=[-1], keepdims=0)
    np.testing.assert_array_equal(out, [2, 5])


def test_reduce_mean_of_ints_keeps_the_dtype():
    out = kernel("ReduceMean", 18)(np.array([[1, 2], [3, 5]], np.int32), np.array([1]))
    assert out.dtype == np.int32 and out.tolist() == [[1], [4]]


def test_reduce_log_sum_exp_does_not_overflow():
    x = np.array([[1000.0, 1000.0]], np.float32)
    out = kernel("ReduceLogSumExp", 18)(x, np.array([1]), keepdims=0)
    np.testing.assert_allclose(out, [1000 + np.log(2)], rtol=1e-6)


def test_reduce_min_of_empty_int_set_is_the_dtype_maximum():
    out = kernel("ReduceMin", 20)(np.zeros((0, 2), np.int32), np.array([0]), keepdims=0)
    assert out.tolist() == [np.iinfo(np.int32).max] * 2


def test_reduce_of_rank_zero_returns_an_array():
    out = kernel("ReduceSum", 13)(np.array(3.0, np.float32))
    assert isinstance(out, np.ndarray) and out.shape == () and out == 3


# ---------------------------------------------------------------- recurrent nets

def _rnn_weights(gates: int, hidden: int = 3, inputs: int = 2, dirs: int = 1):
    w = rng.normal(size=(dirs, gates * hidden, inputs)).astype(np.float32)
    r = rng.normal(size=(dirs, gates * hidden, hidden)).astype(np.float32)
    b = rng.normal(size=(dirs, 2 * gates * hidden)).astype(np.float32)
    return w, r, b


@pytest.mark.parametrize("op,gates", [("RNN", 1), ("GRU", 3), ("LSTM", 4)])
def test_reverse_with_sequence_lens_matches_forward_on_the_reversed_prefix(op, gates):
    w, r, b = _rnn_weights(gates)
    x = rng.normal(size=(4, 2, 2)).astype(np.float32)  # (seq, batch, input)
    lens = np.array([4, 2], np.int32)
    y, y_h = kernel(op)(x, w, r, b, lens, hidden_size=3, direction="reverse")[:2]
    short = x[:2, 1:][::-1]  # batch 1 holds 2 valid steps
    y_ref, y_h_ref = kernel(op)(short, w, r, b, hidden_size=3)[:2]
    np.testing.assert_allclose(y_h[0, 1], y_h_ref[0, 0], rtol=1e-5)
    np.testing.assert_allclose(y[:2, 0, 1], y_ref[::-1, 0, 0], rtol=1e-5)
    assert not y[2:, 0, 1].any()  # past its length the output is zero


def test_rnn_activation_alpha_is_used():
    w, r, b = _rnn_weights(1)
    x = rng.normal(size=(2, 1, 2)).astype(np.float32)
    affine = kernel("RNN")(x, w, r, b, hidden_size=3, activations=["Affine"], activation_alpha=[0.0],
                           activation_beta=[0.5])[1]
    np.testing.assert_allclose(affine, 0.5)


def test_unknown_activation_and_direction_are_named():
    w, r, _ = _rnn_weights(3)
    x = np.zeros((1, 1, 2), np.float32)
    with pytest.raises(KernelError, match="unknown activation 'Swoosh'"):
        kernel("GRU")(x, w, r, hidden_size=3, activations=["Sigmoid", "Swoosh"])
    with pytest.raises(KernelError, match="direction"):
        kernel("GRU")(x, w, r, hidden_size=3, direction="sideways")


def test_lstm_layout_1_is_the_transpose_of_layout_0():
    w, r, b = _rnn_weights(4, dirs=2)
    x = rng.normal(size=(3, 2, 2)).astype(np.float32)
    y0, h0, c0 = kernel("LSTM")(x, w, r, b, hidden_size=3, direction="bidirectional")
    y1, h1, c1 = kernel("LSTM")(x.transpose(1, 0, 2), w, r, b, hidden_size=3, direction="bidirectional", layout=1)
    np.testing.assert_allclose(y1, y0.transpose(2, 0, 1, 3))
    np.testing.assert_allclose(h1, h0.transpose(1, 0, 2))
    np.testing.assert_allclose(c1, c0.transpose(1, 0, 2))


# ---------------------------------------------------------------- attention family

def test_attention_fully_masked_row_is_zero_not_nan():
    q = rng.normal(size=(1, 1, 2, 4)).astype(np.float32)
    mask = np.array([[True, True], [False, False]])
    y = kernel("Attention", 23)(q, q, q, mask)[0]
    assert np.isfinite(y).all() and not y[0, 0, 1].any() and y[0, 0, 0].any()


def test_attention_3d_without_head_count_is_an_error():
    q = np.zeros((1, 2, 6), np.float32)
    with pytest.raises(KernelError, match="q_num_heads"):
        kernel("Attention", 23)(q, q, q)


def test_attention_kv_cache_decode_matches_full_causal_prefill():
    q, k, v = (rng.normal(size=(1, 2, 5, 4)).astype(np.float32) for _ in range(3))
    full = kernel("Attention", 23)(q, k, v, is_causal=1)[0]
    last = kernel("Attention", 23)(q[:, :, 4:], k[:, :, 4:], v[:, :, 4:], None, k[:, :, :4], v[:, :, :4],
                                   is_causal=1)
    np.testing.assert_allclose(last[0], full[:, :, 4:], rtol=1e-5)
    assert last[1].shape == (1, 2, 5, 4)


def test_linear_attention_decode_continues_prefill_state():
    q, k, v = (rng.normal(size=(1, 4, 8)).astype(np.float32) for _ in range(3))
    decay = -np.abs(rng.normal(size=(1, 4, 2))).astype(np.float32)
    beta = rng.uniform(size=(1, 4, 2)).astype(np.float32)
    la = kernel("LinearAttention", 27)
    full, state = la(q, k, v, None, decay, beta, q_num_heads=2, kv_num_heads=2)
    head, mid = la(q[:, :3], k[:, :3], v[:, :3], None, decay[:, :3], beta[:, :3], q_num_heads=2, kv_num_heads=2)
    tail, end = la(q[:, 3:], k[:, 3:], v[:, 3:], mid, decay[:, 3:], beta[:, 3:], q_num_heads=2, kv_num_heads=2)
    np.testing.assert_allclose(np.concatenate([head, tail], axis=1), full, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(end, state, rtol=1e-5, atol=1e-6)


def test_linear_attention_rule_needing_beta_says_so():
    x = np.zeros((1, 1, 4), np.float32)
    with pytest.raises(KernelError, match="needs beta"):
        kernel("LinearAttention", 27)(x, x, x, q_num_heads=1, kv_num_heads=1, update_rule="delta")


def test_causal_conv_streams_in_chunks():
    x = rng.normal(size=(2, 3, 7)).astype(np.float32)
    w = rng.normal(size=(3, 1, 4)).astype(np.float32)
    conv = kernel("CausalConvWithState", 27)
    full, state = conv(x, w)
    first, carry = conv(x[..., :2], w)  # shorter than k - 1: the state keeps padding
    second, end = conv(x[..., 2:], w, None, carry)
    np.testing.assert_allclose(np.concatenate([first, second], axis=-1), full, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(end, state)


def test_rotary_3d_needs_num_heads():
    x = np.zeros((1, 2, 8), np.float32)
    cache = np.zeros((1, 2, 4), np.float32)
    with pytest.raises(KernelError, match="num_heads"):
        kernel("RotaryEmbedding", 23)(x, cache, cache)


# ---------------------------------------------------------------- signal

def test_dft_round_trip_and_bad_axis():
    x = rng.normal(size=(2, 8, 1)).astype(np.float32)
    spec = kernel("DFT", 20)(x, None, np.array(1))
    back = kernel("DFT", 20)(spec, None, np.array(1), inverse=1)
    np.testing.assert_allclose(back[..., 0], x[..., 0], atol=1e-5)
    with pytest.raises(KernelError, match="axis 2"):
        kernel("DFT", 20)(x, None, np.array(2))


def test_window_output_datatype():
    w = kernel("HannWindow", 17)(np.array(4), output_datatype=11)
    assert w.dtype == np.float64
    np.testing.assert_allclose(w, [0, 0.5, 1, 0.5], atol=1e-12)


# ---------------------------------------------------------------- training, text, ml

def test_momentum_rejects_unknown_mode():
    one = np.array(1.0, np.float32)
    with pytest.raises(KernelError, match="mode"):
        kernel("Momentum", 1, "ai.onnx.preview.training")(one, np.array(0), one, one, one, alpha=0.9,
                                                         beta=0.1, mode="heavy", norm_coefficient=0.0)


def test_adam_first_step_uses_the_raw_learning_rate():
    r, x, g = np.array(0.1, np.float32), np.array([1.0], np.float32), np.array([2.0], np.float32)
    zero = np.zeros(1, np.float32)
    x_new, v, h = kernel("Adam", 1, "ai.onnx.preview.training")(r, np.array(0), x, g, zero, zero, alpha=0.5,
                                                                 beta=0.5, epsilon=0.0)
    np.testing.assert_allclose([v[0], h[0]], [1.0, 2.0])
    np.testing.assert_allclose(x_new, 1 - 0.1 * 1 / np.sqrt(2), rtol=1e-6)


def test_tfidf_idf_mode_clips_counts_and_weights():
    x = np.array([1, 1, 2, 1], np.int64)
    out = kernel("TfIdfVectorizer", 9)(x, mode="IDF", min_gram_length=1, max_gram_length=1, max_skip_count=0,
                                       ngram_counts=[0], ngram_indexes=[1, 0], pool_int64s=[1, 2],
                                       weights=[3.0, 5.0])
    np.testing.assert_array_equal(out, [5.0, 3.0])
    with pytest.raises(KernelError, match="mode"):
        kernel("TfIdfVectorizer", 9)(x, mode="BM25", min_gram_length=1, max_gram_length=1, max_skip_count=0,
                                     ngram_counts=[0], ngram_indexes=[0], pool_int64s=[1])


def test_label_encoder_last_duplicate_key_wins_and_nan_matches():
    enc = kernel("LabelEncoder", 4, "ai.onnx.ml")
    out = enc(np.array([1.0, np.nan, 7.0], np.float32), keys_floats=[1.0, np.nan, 1.0], values_int64s=[10, 20, 30])
    assert out.tolist() == [30, 20, -1]


def test_tree_ensemble_average_and_logistic():
    common = dict(nodes_featureids=[0], nodes_truenodeids=[0], nodes_falsenodeids=[1], nodes_trueleafs=[1],
                  nodes_falseleafs=[1], nodes_splits=np.array([0.5]), nodes_modes=np.array([0], np.uint8),
                  leaf_targetids=[0, 0], leaf_weights=np.array([1.0, 3.0]), n_targets=1)
    tree = kernel("TreeEnsemble", 5, "ai.onnx.ml")
    x = np.array([[0.0], [1.0]], np.float32)
    avg = tree(x, tree_roots=[0, 0], aggregate_function=0, **common)  # two copies of the same tree
    np.testing.assert_allclose(avg[:, 0], [1.0, 3.0])
    prob = tree(x, tree_roots=[0], post_transform=2, **common)
    np.testing.assert_allclose(prob[:, 0], 1 / (1 + np.exp([-1.0, -3.0])), rtol=1e-6)


def test_tree_ensemble_walks_of_different_depths_with_high_leaf_ids():
    # node 0: x <= 0.5 -> leaf 3, else node 1: x <= 1.5 -> leaf 0, else leaf 1 (leaf 3 > last node id)
    out = kernel("TreeEnsemble", 5, "ai.onnx.ml")(
        np.array([[0.0], [1.0], [2.0]]), nodes_featureids=[0, 0], nodes_truenodeids=[3, 0],
        nodes_falsenodeids=[1, 1], nodes_trueleafs=[1, 1], nodes_falseleafs=[0, 1],
        nodes_splits=np.array([0.5, 1.5]), leaf_targetids=[0, 0, 0, 0],
        leaf_weights=np.array([10.0, 20.0, 30.0, 40.0]), tree_roots=[0], n_targets=1)
    assert out.dtype == np.float64 and out[:, 0].tolist() == [40.0, 10.0, 20.0]
