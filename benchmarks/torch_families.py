"""Model families past the CNN and transformer tables, as PyTorch modules exported by torch.onnx
(TorchScript path, dynamic batch): what a user brings for speech, sensors, segmentation and
vision transformers. For ``benchmarks/torch_family_speed.py`` and ``tests/test_torch_families.py``;
PyTorch is a test and benchmark peer, never imported by the library.

- ``lstm``: a two-layer ``nn.LSTM`` (40 features, 64 hidden, 20 steps) and a Dense head on its
  last step: a sensor or keyword classifier.
- ``gru``: a bidirectional ``nn.GRU`` averaged over time.
- ``conv1d``: a raw-waveform keyword spotter (8000 samples): strided ``Conv1d`` + BatchNorm + ReLU,
  ``MaxPool1d``, a depthwise dilated ``Conv1d``, ``AdaptiveAvgPool1d``, Dense.
- ``unet``: a small UNet at 64x64: GroupNorm + SiLU, InstanceNorm, a 2x2/2 ``ConvTranspose2d``, a
  bilinear ``nn.Upsample``, skip Concats, a channel Softmax.
- ``vit``: a ViT on 32x32 (8x8 patches by a strided Conv2d, a class token concatenated before
  them, learned positions, two pre-norm encoder layers).
- ``causal``: timm/nanoGPT-style attention: one q/k/v projection viewed as (B, N, 3, H, D),
  permuted (2, 0, 3, 1, 4) and fed to ``scaled_dot_product_attention(is_causal=True)``.
"""
from __future__ import annotations

import io
import warnings

import numpy as np
import torch

nn = torch.nn


class LstmClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn, self.head = nn.LSTM(40, 64, 2, batch_first=True), nn.Linear(64, 10)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])


class GruClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn, self.head = nn.GRU(40, 64, batch_first=True, bidirectional=True), nn.Linear(128, 10)

    def forward(self, x):
        return self.head(self.rnn(x)[0].mean(1))


def conv1d_spotter() -> nn.Module:
    return nn.Sequential(nn.Conv1d(1, 16, 80, 4), nn.BatchNorm1d(16), nn.ReLU(), nn.MaxPool1d(4),
                         nn.Conv1d(16, 32, 3, padding=1), nn.BatchNorm1d(32), nn.ReLU(), nn.MaxPool1d(4),
                         nn.Conv1d(32, 32, 3, padding=2, dilation=2, groups=32), nn.ReLU(),
                         nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(32, 10))


class UNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.down = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.GroupNorm(4, 16), nn.SiLU())
        self.pool = nn.MaxPool2d(2)
        self.mid = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.InstanceNorm2d(32, affine=True), nn.ReLU())
        self.up = nn.ConvTranspose2d(32, 16, 2, 2)
        self.resample = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.out = nn.Conv2d(16 + 16 + 32, 2, 1)

    def forward(self, x):
        skip = self.down(x)
        mid = self.mid(self.pool(skip))
        return torch.softmax(self.out(torch.cat([skip, self.up(mid), self.resample(mid)], 1)), 1)


class Vit(nn.Module):
    def __init__(self, dim: int = 64, patches: int = 16):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 8, 8)
        self.cls = nn.Parameter(torch.randn(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, patches + 1, dim))
        layer = nn.TransformerEncoderLayer(dim, 4, 2 * dim, 0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(dim, 10)

    def forward(self, x):
        p = self.patch(x).flatten(2).transpose(1, 2)
        p = torch.cat([self.cls.expand(x.shape[0], -1, -1), p], 1) + self.pos
        return self.head(self.encoder(p)[:, 0])


class CausalAttention(nn.Module):
    def __init__(self, dim: int = 32, heads: int = 4):
        super().__init__()
        self.qkv, self.proj, self.heads = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim), heads

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        y = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, n, c))


#: name: (module factory, input shape at batch 2)
FAMILIES = {
    "lstm": (LstmClassifier, (2, 20, 40)),
    "gru": (GruClassifier, (2, 20, 40)),
    "conv1d": (conv1d_spotter, (2, 1, 8000)),
    "unet": (UNet, (2, 3, 64, 64)),
    "vit": (Vit, (2, 3, 32, 32)),
    "causal": (CausalAttention, (2, 9, 32)),
}


def build(name: str, seed: int = 0) -> nn.Module:
    """The family's module in eval mode, weights (and BatchNorm statistics) random from ``seed``."""
    torch.manual_seed(seed)
    module = FAMILIES[name][0]().eval()
    for m in module.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    return module


def sample(name: str, batch: int, seed: int = 0) -> np.ndarray:
    shape = (batch,) + FAMILIES[name][1][1:]
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def export(module: nn.Module, x: np.ndarray, opset: int = 17) -> bytes:
    """The module as torch.onnx writes it, input ``x`` with a dynamic batch axis."""
    buf = io.BytesIO()
    with warnings.catch_warnings():  # not under no_grad: torch would export its fused encoder op, which ONNX lacks
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.from_numpy(x),), buf, opset_version=opset, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "batch"}}, dynamo=False)
    return buf.getvalue()


def run_torch(module: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()
