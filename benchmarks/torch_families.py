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
- ``yolo``: a YOLOv8-style detector (C2f blocks, whose ``chunk`` exports as Slices on a size
  computed from ``Shape``; SPPF; nearest upsampling; a DFL box head).
- ``deeplab``: a DeepLabV3-style segmenter (dilated ASPP, an expanded image-pooling branch,
  bilinear logits at the input's size).
- ``convnext``: a ConvNeXt (7x7 depthwise convs, each block's MLP channels-last by explicit
  permutes, a patchify stem).
- ``crnn``: a CRNN text recogniser (convs to one row, a bidirectional LSTM, LogSoftmax).
- ``tcn``: a Conv-TasNet-style separator (PReLU, GroupNorm, dilated depthwise Conv1d).
- ``pointnet``: PointNet's classifier (per-point 1x1 Conv1d layers, a max over the points).
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


def conv_bn_silu(cin: int, cout: int, k: int = 1, stride: int = 1, dilation: int = 1) -> nn.Module:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2 * dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.SiLU())


class C2f(nn.Module):
    """YOLOv8's block: a 1x1, its output chunked in two along the channels, two 3x3s with a
    residual on one half, all three concatenated into a 1x1."""

    def __init__(self, c: int):
        super().__init__()
        self.cv1, self.cv2 = conv_bn_silu(c, c), conv_bn_silu(c + c // 2, c)
        self.m = nn.Sequential(conv_bn_silu(c // 2, c // 2, 3), conv_bn_silu(c // 2, c // 2, 3))

    def forward(self, x):
        a, b = self.cv1(x).chunk(2, 1)
        return self.cv2(torch.cat([a, b, self.m(b) + b], 1))


class Yolo(nn.Module):
    """A YOLOv8-style detector at 160x160: C2f backbone, SPPF (three 5x5/1 max pools), a nearest 2x
    upsampling into a neck Concat, and a head whose box logits go through the DFL's softmax over 16
    bins (a 4-D view, transpose and weighted sum) beside sigmoid class scores."""

    def __init__(self, classes: int = 20):
        super().__init__()
        self.backbone = nn.Sequential(conv_bn_silu(3, 16, 3, 2), conv_bn_silu(16, 32, 3, 2), C2f(32),
                                      conv_bn_silu(32, 64, 3, 2), C2f(64))
        self.down = conv_bn_silu(64, 128, 3, 2)
        self.sppf_in, self.sppf_out = conv_bn_silu(128, 64), conv_bn_silu(256, 128)
        self.pool, self.up = nn.MaxPool2d(5, 1, 2), nn.Upsample(scale_factor=2, mode="nearest")
        self.neck, self.head = conv_bn_silu(192, 64), nn.Conv2d(64, 64 + classes, 1)
        self.register_buffer("bins", torch.arange(16, dtype=torch.float32).view(1, 16, 1, 1))

    def forward(self, x):
        f = self.backbone(x)
        a = self.sppf_in(self.down(f))
        b = self.pool(a)
        c = self.pool(b)
        y = self.sppf_out(torch.cat([a, b, c, self.pool(c)], 1))
        h = self.head(self.neck(torch.cat([self.up(y), f], 1)))
        box, cls = h.view(h.shape[0], h.shape[1], -1).split([64, h.shape[1] - 64], 1)
        box = box.view(h.shape[0], 4, 16, -1).transpose(2, 1).softmax(1)
        return torch.cat([(box * self.bins).sum(1), cls.sigmoid()], 1)


class DeepLab(nn.Module):
    """A DeepLabV3-style segmenter at 128x128: a stride-8 backbone, ASPP (1x1, 3x3 dilated 2 and 4,
    an image-pooling branch expanded back over the map), and bilinear logits resized to the input."""

    def __init__(self, classes: int = 5):
        super().__init__()
        self.backbone = nn.Sequential(conv_bn_silu(3, 16, 3, 2), conv_bn_silu(16, 32, 3, 2), conv_bn_silu(32, 64, 3, 2))
        self.branches = nn.ModuleList([conv_bn_silu(64, 32), conv_bn_silu(64, 32, 3, dilation=2),
                                       conv_bn_silu(64, 32, 3, dilation=4)])
        self.image = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(64, 32, 1), nn.ReLU())
        self.project, self.classify = conv_bn_silu(128, 32), nn.Conv2d(32, classes, 1)

    def forward(self, x):
        f = self.backbone(x)
        pooled = self.image(f).expand(-1, -1, f.shape[2], f.shape[3])
        y = self.classify(self.project(torch.cat([b(f) for b in self.branches] + [pooled], 1)))
        return nn.functional.interpolate(y, size=x.shape[2:], mode="bilinear", align_corners=False)


class ChannelsLastNorm(nn.Module):
    """ConvNeXt's LayerNorm over the channels of an NCHW map: permute, LayerNorm, permute back."""

    def __init__(self, c: int):
        super().__init__()
        self.norm = nn.LayerNorm(c, eps=1e-6)

    def forward(self, x):
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """A 7x7 depthwise conv, then channels-last by an explicit permute: LayerNorm, Linear 4x, GELU,
    Linear back, a per-channel layer scale, permuted back for the residual Add."""

    def __init__(self, c: int):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm, self.up, self.down = nn.LayerNorm(c, eps=1e-6), nn.Linear(c, 4 * c), nn.Linear(4 * c, c)
        self.scale = nn.Parameter(torch.full((c,), 0.5))

    def forward(self, x):
        y = self.norm(self.dw(x).permute(0, 2, 3, 1))
        return x + (self.down(nn.functional.gelu(self.up(y))) * self.scale).permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    """A two-stage ConvNeXt at 64x64: a 4x4/4 patch stem, two blocks of 48 channels, a 2x2/2
    downsampling, two blocks of 96, mean-pooled into a Dense head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 48, 4, 4), ChannelsLastNorm(48))
        self.stages = nn.Sequential(ConvNeXtBlock(48), ConvNeXtBlock(48), ChannelsLastNorm(48), nn.Conv2d(48, 96, 2, 2),
                                    ConvNeXtBlock(96), ConvNeXtBlock(96))
        self.head = nn.Linear(96, 10)

    def forward(self, x):
        return self.head(self.stages(self.stem(x)).mean((2, 3)))


class Crnn(nn.Module):
    """A CRNN text recogniser on 32x100 grey crops: convs and pools down to one row, its columns
    as time steps into a bidirectional LSTM, per-step class log-probabilities (a CTC head)."""

    def __init__(self, classes: int = 37):
        super().__init__()
        self.convs = nn.Sequential(nn.Conv2d(1, 32, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, 1, 1),
                                   nn.ReLU(), nn.MaxPool2d((2, 1)), nn.Conv2d(64, 64, 3, 1, 1), nn.BatchNorm2d(64),
                                   nn.ReLU(), nn.MaxPool2d((8, 1)))
        self.rnn, self.head = nn.LSTM(64, 64, bidirectional=True, batch_first=True), nn.Linear(128, classes)

    def forward(self, x):
        return self.head(self.rnn(self.convs(x).squeeze(2).permute(0, 2, 1))[0]).log_softmax(-1)


class Tcn(nn.Module):
    """A Conv-TasNet-style temporal conv net on 40 features x 200 frames: blocks of a pointwise conv,
    PReLU, a one-group GroupNorm, a dilated depthwise conv (1, 2, 4, 8), PReLU, GroupNorm, a
    pointwise conv back, with residuals; a sigmoid mask over the input."""

    def __init__(self):
        super().__init__()
        self.inp, self.out = nn.Conv1d(40, 64, 1), nn.Conv1d(64, 40, 1)
        self.blocks = nn.ModuleList([nn.Sequential(
            nn.Conv1d(64, 128, 1), nn.PReLU(), nn.GroupNorm(1, 128),
            nn.Conv1d(128, 128, 3, padding=2 ** i, dilation=2 ** i, groups=128), nn.PReLU(), nn.GroupNorm(1, 128),
            nn.Conv1d(128, 64, 1)) for i in range(4)])

    def forward(self, x):
        y = self.inp(x)
        for block in self.blocks:
            y = y + block(y)
        return torch.sigmoid(self.out(y)) * x


class PointNet(nn.Module):
    """PointNet's classifier on 1024 points: shared per-point layers (1x1 Conv1d, BatchNorm, ReLU),
    a max over the points, a Dense head."""

    def __init__(self):
        super().__init__()
        self.points = nn.Sequential(nn.Conv1d(3, 64, 1), nn.BatchNorm1d(64), nn.ReLU(), nn.Conv1d(64, 128, 1),
                                    nn.BatchNorm1d(128), nn.ReLU(), nn.Conv1d(128, 256, 1))
        self.head = nn.Sequential(nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x):
        return self.head(self.points(x).amax(2))


#: name: (module factory, input shape at batch 2)
FAMILIES = {
    "lstm": (LstmClassifier, (2, 20, 40)),
    "gru": (GruClassifier, (2, 20, 40)),
    "conv1d": (conv1d_spotter, (2, 1, 8000)),
    "unet": (UNet, (2, 3, 64, 64)),
    "vit": (Vit, (2, 3, 32, 32)),
    "causal": (CausalAttention, (2, 9, 32)),
    "yolo": (Yolo, (2, 3, 160, 160)),
    "deeplab": (DeepLab, (2, 3, 128, 128)),
    "convnext": (ConvNeXt, (2, 3, 64, 64)),
    "crnn": (Crnn, (2, 1, 32, 100)),
    "tcn": (Tcn, (2, 40, 200)),
    "pointnet": (PointNet, (2, 3, 1024)),
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
