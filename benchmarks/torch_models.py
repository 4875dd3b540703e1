"""Transformers as users bring them: PyTorch modules exported by ``torch.onnx.export`` (its
TorchScript path, the one most shipped ONNX files came from), for ``benchmarks/torch_exports.py``
and ``tests/test_torch_transformer.py``. PyTorch is a test and benchmark peer, never imported by
the library.

- :class:`Encoder`: ``nn.TransformerEncoder`` (post-norm, erf GELU) taking a bool key-padding mask.
- :class:`Bert`: BERT written as Hugging Face's: word, position and token-type embeddings, int64
  ``input_ids`` and ``attention_mask``, the mask added as ``(1 - mask.float()) * finfo.min``,
  separate q/k/v projections.
- :class:`Gpt`: a GPT-2-style decoder as nanoGPT writes it: pre-norm, one fused q/k/v projection
  split along its last axis, a causal mask sliced from a registered lower-triangular buffer and
  applied with ``masked_fill(-inf)``, GELU's tanh approximation.
"""
from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Size:
    dim: int = 256
    heads: int = 4
    ffn: int = 1024
    layers: int = 2
    vocab: int = 1000
    max_positions: int = 512


class Encoder(torch.nn.Module):
    def __init__(self, size: Size = Size()):
        super().__init__()
        layer = torch.nn.TransformerEncoderLayer(size.dim, size.heads, size.ffn, dropout=0.0, activation="gelu",
                                                 batch_first=True)
        self.encoder = torch.nn.TransformerEncoder(layer, size.layers, enable_nested_tensor=False)

    def forward(self, x, mask):
        return self.encoder(x, src_key_padding_mask=mask)


class Bert(torch.nn.Module):
    def __init__(self, size: Size = Size()):
        super().__init__()
        self.word = torch.nn.Embedding(size.vocab, size.dim)
        self.position = torch.nn.Embedding(size.max_positions, size.dim)
        self.token_type = torch.nn.Embedding(2, size.dim)
        self.norm = torch.nn.LayerNorm(size.dim, eps=1e-12)
        self.layers = torch.nn.ModuleList(_BertLayer(size) for _ in range(size.layers))
        self.register_buffer("position_ids", torch.arange(size.max_positions).unsqueeze(0))

    def forward(self, input_ids, attention_mask):
        x = self.word(input_ids) + self.position(self.position_ids[:, :input_ids.shape[1]])
        x = self.norm(x + self.token_type(torch.zeros_like(input_ids)))
        extended = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * torch.finfo(torch.float32).min
        for layer in self.layers:
            x = layer(x, extended)
        return x


class _BertLayer(torch.nn.Module):
    def __init__(self, size: Size):
        super().__init__()
        self.heads, self.dim = size.heads, size.dim
        self.q, self.k, self.v, self.out = (torch.nn.Linear(size.dim, size.dim) for _ in range(4))
        self.norm1 = torch.nn.LayerNorm(size.dim, eps=1e-12)
        self.norm2 = torch.nn.LayerNorm(size.dim, eps=1e-12)
        self.up, self.down = torch.nn.Linear(size.dim, size.ffn), torch.nn.Linear(size.ffn, size.dim)

    def _heads(self, t):
        return t.view(t.shape[0], t.shape[1], self.heads, self.dim // self.heads).permute(0, 2, 1, 3)

    def forward(self, x, extended):
        q, k, v = self._heads(self.q(x)), self._heads(self.k(x)), self._heads(self.v(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.dim // self.heads) + extended
        context = torch.matmul(scores.softmax(-1), v).permute(0, 2, 1, 3).contiguous()
        x = self.norm1(x + self.out(context.view(context.shape[0], context.shape[1], self.dim)))
        return self.norm2(x + self.down(torch.nn.functional.gelu(self.up(x))))


class Gpt(torch.nn.Module):
    def __init__(self, size: Size = Size()):
        super().__init__()
        self.token = torch.nn.Embedding(size.vocab, size.dim)
        self.position = torch.nn.Embedding(size.max_positions, size.dim)
        self.blocks = torch.nn.ModuleList(_GptBlock(size) for _ in range(size.layers))
        self.norm = torch.nn.LayerNorm(size.dim)

    def forward(self, input_ids):
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        x = self.token(input_ids) + self.position(positions)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class _GptBlock(torch.nn.Module):
    def __init__(self, size: Size):
        super().__init__()
        self.heads, self.dim = size.heads, size.dim
        self.norm1, self.norm2 = torch.nn.LayerNorm(size.dim), torch.nn.LayerNorm(size.dim)
        self.qkv, self.proj = torch.nn.Linear(size.dim, 3 * size.dim), torch.nn.Linear(size.dim, size.dim)
        self.up, self.down = torch.nn.Linear(size.dim, size.ffn), torch.nn.Linear(size.ffn, size.dim)
        causal = torch.tril(torch.ones(size.max_positions, size.max_positions))
        self.register_buffer("causal", causal.view(1, 1, size.max_positions, size.max_positions))

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(self.norm1(x)).split(self.dim, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(c // self.heads))
        scores = scores.masked_fill(self.causal[:, :, :t, :t] == 0, float("-inf"))
        x = x + self.proj((scores.softmax(-1) @ v).transpose(1, 2).contiguous().view(b, t, c))
        return x + self.down(torch.nn.functional.gelu(self.up(self.norm2(x)), approximate="tanh"))


def encoder_feeds(rng: np.random.Generator, batch: int, seq: int, size: Size = Size(),
                  padded: bool = True) -> dict[str, np.ndarray]:
    """Random activations and a key-padding mask (True: padding) leaving each row a real token."""
    mask = np.zeros((batch, seq), bool)
    if padded:
        for row, length in zip(mask, rng.integers(1, seq + 1, batch)):
            row[length:] = True
    return {"x": rng.standard_normal((batch, seq, size.dim)).astype(np.float32), "mask": mask}


def bert_feeds(rng: np.random.Generator, batch: int, seq: int, size: Size = Size()) -> dict[str, np.ndarray]:
    """Random token ids and an attention mask (1: a token) padding each row after a random length."""
    mask = np.ones((batch, seq), np.int64)
    for row, length in zip(mask, rng.integers(1, seq + 1, batch)):
        row[length:] = 0
    return {"input_ids": rng.integers(0, size.vocab, (batch, seq)).astype(np.int64), "attention_mask": mask}


def gpt_feeds(rng: np.random.Generator, batch: int, seq: int, size: Size = Size()) -> dict[str, np.ndarray]:
    return {"input_ids": rng.integers(0, size.vocab, (batch, seq)).astype(np.int64)}


def export(module: torch.nn.Module, feeds: dict[str, np.ndarray], opset: int, dynamic: bool = False) -> bytes:
    """``module`` exported by torch.onnx's TorchScript path (output ``y``); ``dynamic``: batch and
    sequence axes of every input left symbolic, as Hugging Face's exports have them."""
    axes = {name: {0: "batch", 1: "sequence"} for name in feeds} if dynamic else None
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(module, tuple(torch.from_numpy(v) for v in feeds.values()), f, opset_version=opset,
                          dynamo=False, input_names=list(feeds), output_names=["y"], dynamic_axes=axes)
    return f.getvalue()


def run_torch(module: torch.nn.Module, feeds: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return module(*(torch.from_numpy(v) for v in feeds.values())).numpy()
