"""Transformers as PyTorch's exporter writes them (``torch.onnx.export``, TorchScript path).
``nn.TransformerEncoder``: at opset 14 its LayerNorms are written out in nine primitive ops, its
reshape targets and attention scale are computed from ``Shape`` at run time, its q/k/v split is a
Gather, and it takes a bool key-padding mask. A BERT written as Hugging Face's: int64 token ids
and attention mask, embeddings, the mask as ``(1 - mask.float()) * finfo.min``, batch and sequence
axes left dynamic. All of it must fold, fuse and replay, with torch's outputs."""
from __future__ import annotations

import io
import math
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from inference import Config, Predictor
from inference.kernel_replay import CAPTURE_AFTER
from inference.onnx_export import model_to_proto

torch = pytest.importorskip("torch")

BATCH, SEQ, DIM, HEADS, LAYERS = 2, 16, 32, 2, 2


class _Encoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        layer = torch.nn.TransformerEncoderLayer(DIM, HEADS, 2 * DIM, dropout=0.0, activation="gelu",
                                                 batch_first=True)
        self.encoder = torch.nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)

    def forward(self, x, mask):
        return self.encoder(x, src_key_padding_mask=mask)


@pytest.fixture(scope="module")
def encoder() -> torch.nn.Module:
    torch.manual_seed(0)
    return _Encoder().eval()


def _export(module: torch.nn.Module, opset: int) -> bytes:
    x, mask = torch.zeros(BATCH, SEQ, DIM), torch.zeros(BATCH, SEQ, dtype=torch.bool)
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x, mask), f, opset_version=opset, dynamo=False,
                          input_names=["x", "mask"], output_names=["y"])
    return f.getvalue()


def _feeds(rng: np.random.Generator, padded: bool = True) -> dict[str, np.ndarray]:
    mask = np.zeros((BATCH, SEQ), bool)
    if padded:  # each sequence padded at its end, at least one real token
        for row, length in zip(mask, rng.integers(1, SEQ + 1, BATCH)):
            row[length:] = True
    return {"x": rng.standard_normal((BATCH, SEQ, DIM)).astype(np.float32), "mask": mask}


def _torch(module, feeds) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(feeds["x"]), torch.from_numpy(feeds["mask"])).numpy()


def _count_steps(p: Predictor) -> list[int]:
    count = [0]
    for step in p.session.steps:
        def counted(*args, _call=step.call):
            count[0] += 1
            return _call(*args)

        step.call = counted
    return count


@pytest.mark.parametrize("opset", [14, 17])
def test_export_folds_fuses_and_matches_torch(encoder, opset):
    data = _export(encoder, opset)
    p = Predictor(Config(model_path=data, num_threads=1))
    hist = p.model.graph.op_histogram()
    layer_norm = "edgelearn::LayerNormalization" if opset < 17 else "LayerNormalization"
    assert hist.get(layer_norm) == 2 * LAYERS
    for gone in ("Shape", "ReduceMean", "Pow", "Sqrt", "Slice", "Concat"):
        assert gone not in hist, gone
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(opset)
    for _ in range(3):
        feeds = _feeds(rng)
        got = p.run(feeds)["y"]
        np.testing.assert_allclose(got, _torch(encoder, feeds), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got, session.run(None, feeds)[0], rtol=1e-4, atol=1e-5)
    onnx.checker.check_model(model_to_proto(p.model), full_check=True)


@pytest.mark.parametrize("threads", [1, 2])
def test_export_with_a_mask_replays(encoder, threads):
    """A bool mask no longer keeps the model from replaying: new inputs and new padding every run,
    no step called after the capture, outputs as a step-by-step run's bit for bit."""
    data = _export(encoder, 14)
    p, plain = (Predictor(Config(model_path=data, num_threads=threads)) for _ in range(2))
    plain.session.replays = None
    count = _count_steps(p)
    rng = np.random.default_rng(threads)
    for i in range(CAPTURE_AFTER + 4):
        feeds = _feeds(rng)
        before = count[0]
        got = p.run(feeds)["y"]
        assert np.array_equal(got, plain.run(feeds)["y"])
        if i > CAPTURE_AFTER:
            assert count[0] == before
    np.testing.assert_allclose(got, _torch(encoder, feeds), rtol=1e-4, atol=1e-5)
    assert "replayed" in p.replay_report()


def test_a_mask_without_padding_pins_the_replay(encoder):
    """Captured on masks with no padding (one value throughout, which no shuffle can vary), the
    replay holds for that mask alone: a padded one runs step by step, with torch's outputs."""
    p = Predictor(Config(model_path=_export(encoder, 14), num_threads=1))
    count = _count_steps(p)
    rng = np.random.default_rng(3)
    for _ in range(CAPTURE_AFTER + 2):
        p.run(_feeds(rng, padded=False))
    assert "replayed" in p.replay_report()
    before = count[0]
    p.run(_feeds(rng, padded=False))
    assert count[0] == before
    feeds = _feeds(rng)
    np.testing.assert_allclose(p.run(feeds)["y"], _torch(encoder, feeds), rtol=1e-4, atol=1e-5)
    assert count[0] > before


class _Bert(torch.nn.Module):
    """Hugging Face's BERT in small: word, position and token-type embeddings, post-norm layers."""

    def __init__(self, vocab: int = 100):
        super().__init__()
        self.word, self.position, self.token_type = (torch.nn.Embedding(n, DIM) for n in (vocab, 64, 2))
        self.norm = torch.nn.LayerNorm(DIM, eps=1e-12)
        self.layers = torch.nn.ModuleList(_BertLayer() for _ in range(LAYERS))
        self.register_buffer("position_ids", torch.arange(64).unsqueeze(0))

    def forward(self, input_ids, attention_mask):
        x = self.word(input_ids) + self.position(self.position_ids[:, :input_ids.shape[1]])
        x = self.norm(x + self.token_type(torch.zeros_like(input_ids)))
        extended = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * torch.finfo(torch.float32).min
        for layer in self.layers:
            x = layer(x, extended)
        return x


class _BertLayer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.q, self.k, self.v, self.out = (torch.nn.Linear(DIM, DIM) for _ in range(4))
        self.norm1, self.norm2 = torch.nn.LayerNorm(DIM, eps=1e-12), torch.nn.LayerNorm(DIM, eps=1e-12)
        self.up, self.down = torch.nn.Linear(DIM, 2 * DIM), torch.nn.Linear(2 * DIM, DIM)

    def _heads(self, t):
        return t.view(t.shape[0], t.shape[1], HEADS, DIM // HEADS).permute(0, 2, 1, 3)

    def forward(self, x, extended):
        q, k, v = self._heads(self.q(x)), self._heads(self.k(x)), self._heads(self.v(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(DIM // HEADS) + extended
        context = torch.matmul(scores.softmax(-1), v).permute(0, 2, 1, 3).contiguous()
        x = self.norm1(x + self.out(context.view(context.shape[0], context.shape[1], DIM)))
        return self.norm2(x + self.down(torch.nn.functional.gelu(self.up(x))))


def _bert_feeds(rng: np.random.Generator, seq: int) -> dict[str, np.ndarray]:
    mask = np.ones((BATCH, seq), np.int64)
    for row, length in zip(mask, rng.integers(1, seq + 1, BATCH)):
        row[length:] = 0
    return {"input_ids": rng.integers(0, 100, (BATCH, seq)).astype(np.int64), "attention_mask": mask}


def test_hugging_face_style_bert_with_dynamic_axes():
    """Token ids and an int64 mask, two sequence lengths in turn: every LayerNorm fused, both
    shapes replayed, torch's outputs (new ids and padding every run)."""
    torch.manual_seed(1)
    bert = _Bert().eval()
    f = io.BytesIO()
    feeds = _bert_feeds(np.random.default_rng(0), SEQ)
    axes = {0: "batch", 1: "sequence"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(bert, tuple(torch.from_numpy(v) for v in feeds.values()), f, opset_version=14,
                          dynamo=False, input_names=list(feeds), output_names=["y"],
                          dynamic_axes={"input_ids": axes, "attention_mask": axes})
    p = Predictor(Config(model_path=f.getvalue(), num_threads=1))
    hist = p.model.graph.op_histogram()
    assert hist.get("edgelearn::LayerNormalization") == 1 + 2 * LAYERS and "ReduceMean" not in hist
    rng = np.random.default_rng(1)
    for _ in range(CAPTURE_AFTER + 2):
        for seq in (SEQ, SEQ // 2):
            feeds = _bert_feeds(rng, seq)
            with torch.no_grad():
                want = bert(*(torch.from_numpy(v) for v in feeds.values())).numpy()
            np.testing.assert_allclose(p.run(feeds)["y"], want, rtol=1e-4, atol=1e-5)
    assert p.replay_report().count("replayed") == 2, p.replay_report()
