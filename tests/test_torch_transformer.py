"""Transformers as PyTorch's exporter writes them (``benchmarks/torch_models.py``).
``nn.TransformerEncoder``: at opset 14 its LayerNorms are written out in nine primitive ops, its
reshape targets and attention scale are computed from ``Shape`` at run time, its q/k/v split is a
Gather, and it takes a bool key-padding mask. A BERT written as Hugging Face's: int64 token ids
and attention mask, embeddings, the mask as ``(1 - mask.float()) * finfo.min``, batch and sequence
axes left dynamic. A GPT-2-style decoder: a fused q/k/v projection split along its last axis, a
causal mask, GELU's tanh approximation. All of it must fold, fuse and replay, with torch's
outputs."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from inference import Config, Predictor
from inference.kernel_replay import CAPTURE_AFTER
from inference.onnx_export import model_to_proto
from tests.conftest import count_step_calls

torch = pytest.importorskip("torch")
from benchmarks.torch_models import (Bert, Encoder, Gpt, Size, bert_feeds, encoder_feeds, export,  # noqa: E402
                                     gpt_feeds, run_torch)

SIZE = Size(dim=32, heads=2, ffn=64, layers=2, vocab=100, max_positions=64)
BATCH, SEQ = 2, 16


@pytest.fixture(scope="module")
def encoder() -> torch.nn.Module:
    torch.manual_seed(0)
    return Encoder(SIZE).eval()


def _export(module, opset: int) -> bytes:
    return export(module, encoder_feeds(np.random.default_rng(0), BATCH, SEQ, SIZE), opset)


def _feeds(rng: np.random.Generator, padded: bool = True) -> dict[str, np.ndarray]:
    return encoder_feeds(rng, BATCH, SEQ, SIZE, padded)


@pytest.mark.parametrize("opset", [14, 17])
def test_export_folds_fuses_and_matches_torch(encoder, opset):
    data = _export(encoder, opset)
    p = Predictor(Config(model_path=data, num_threads=1))
    hist = p.model.graph.op_histogram()
    layer_norm = "edgelearn::LayerNormalization" if opset < 17 else "LayerNormalization"
    assert hist.get(layer_norm) == 2 * SIZE.layers
    for gone in ("Shape", "ReduceMean", "Pow", "Sqrt", "Slice", "Concat"):
        assert gone not in hist, gone
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(opset)
    for _ in range(3):
        feeds = _feeds(rng)
        got = p.run(feeds)["y"]
        np.testing.assert_allclose(got, run_torch(encoder, feeds), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got, session.run(None, feeds)[0], rtol=1e-4, atol=1e-5)
    onnx.checker.check_model(model_to_proto(p.model), full_check=True)


@pytest.mark.parametrize("threads", [1, 2])
def test_export_with_a_mask_replays(encoder, threads):
    """A bool mask no longer keeps the model from replaying: new inputs and new padding every run,
    no step called after the capture, outputs as a step-by-step run's bit for bit."""
    data = _export(encoder, 14)
    p, plain = (Predictor(Config(model_path=data, num_threads=threads)) for _ in range(2))
    plain.session.replays = None
    count = count_step_calls(p)
    rng = np.random.default_rng(threads)
    for i in range(CAPTURE_AFTER + 4):
        feeds = _feeds(rng)
        before = count[0]
        got = p.run(feeds)["y"]
        assert np.array_equal(got, plain.run(feeds)["y"])
        if i > CAPTURE_AFTER:
            assert count[0] == before
    np.testing.assert_allclose(got, run_torch(encoder, feeds), rtol=1e-4, atol=1e-5)
    assert "replayed" in p.replay_report()


def test_a_mask_without_padding_pins_the_replay_until_one_pads(encoder):
    """Captured on masks with no padding (one value throughout, which no shuffle can vary), the
    replay holds for that mask alone; the first padded mask is captured anew, and padded masks
    replay from then on, with torch's outputs."""
    p = Predictor(Config(model_path=_export(encoder, 14), num_threads=1))
    count = count_step_calls(p)
    rng = np.random.default_rng(3)
    for _ in range(CAPTURE_AFTER + 2):
        p.run(_feeds(rng, padded=False))
    assert "only for the recorded mask" in p.replay_report()
    for i in range(3):
        feeds, before = _feeds(rng), count[0]
        np.testing.assert_allclose(p.run(feeds)["y"], run_torch(encoder, feeds), rtol=1e-4, atol=1e-5)
        assert (count[0] > before) == (i == 0)
    assert "replayed" in p.replay_report() and "only for" not in p.replay_report()


def test_hugging_face_style_bert_with_dynamic_axes():
    """Token ids and an int64 mask, two sequence lengths in turn: every LayerNorm fused, both
    shapes replayed, torch's outputs (new ids and padding every run). The short one has fewer
    than 8 tokens: its mask Add over rows of 5 scores had run in numpy, never replayed."""
    torch.manual_seed(1)
    bert = Bert(SIZE).eval()
    data = export(bert, bert_feeds(np.random.default_rng(0), BATCH, SEQ, SIZE), 14, dynamic=True)
    p = Predictor(Config(model_path=data, num_threads=1))
    hist = p.model.graph.op_histogram()
    assert hist.get("edgelearn::LayerNormalization") == 1 + 2 * SIZE.layers and "ReduceMean" not in hist
    rng = np.random.default_rng(1)
    for _ in range(CAPTURE_AFTER + 2):
        for seq in (SEQ, 5):
            feeds = bert_feeds(rng, BATCH, seq, SIZE)
            np.testing.assert_allclose(p.run(feeds)["y"], run_torch(bert, feeds), rtol=1e-4, atol=1e-5)
    assert p.replay_report().count("replayed") == 2, p.replay_report()


def test_gpt2_style_decoder():
    """The tanh GELU fuses into its dense layer, the causal mask and the q/k/v Split replay, and the
    outputs are torch's (new ids every run)."""
    torch.manual_seed(2)
    gpt = Gpt(SIZE).eval()
    p = Predictor(Config(model_path=export(gpt, gpt_feeds(np.random.default_rng(0), BATCH, SEQ, SIZE), 14), num_threads=1))
    hist = p.model.graph.op_histogram()
    assert "Tanh" not in hist and "Pow" not in hist and hist.get("edgelearn::LayerNormalization") == 1 + 2 * SIZE.layers
    assert [n.attrs.get("activation") for n in p.model.graph.nodes if n.op_type == "FusedMatMul"].count("GeluTanh") == SIZE.layers
    count = count_step_calls(p)
    rng = np.random.default_rng(1)
    for i in range(CAPTURE_AFTER + 3):
        feeds, before = gpt_feeds(rng, BATCH, SEQ, SIZE), count[0]
        np.testing.assert_allclose(p.run(feeds)["y"], run_torch(gpt, feeds), rtol=1e-4, atol=1e-5)
        if i > CAPTURE_AFTER:
            assert count[0] == before
