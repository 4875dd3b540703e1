"""Build models in Python, PyTorch-style, straight into the IR (a plain inference ONNX graph).

A module knows how to make its parameters (seeded, initialized like PyTorch's defaults:
Kaiming-uniform weights with ``a = sqrt(5)``, i.e. ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``) and
how to emit its ops. Parameters are named by their path: ``"0.weight"`` in a Sequential,
``"fc.weight"`` with named children. The result is an ordinary :class:`inference.ir.Model`, so a
model built here and one imported from ONNX train, export and run the same way.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Iterator, Sequence

import numpy as np

from inference.builder import GraphBuilder
from inference.errors import InvalidModelError
from inference.ir import Dim, Model
from inference.shape_inference import infer_shapes

__all__ = ["Module", "Linear", "Conv2d", "BatchNorm1d", "BatchNorm2d", "ReLU", "LeakyReLU", "Sigmoid", "Tanh",
           "Dropout", "MaxPool2d", "AvgPool2d", "GlobalAvgPool2d", "Flatten", "Identity", "Sequential",
           "build_model"]


class Module:
    """A layer: ``emit`` appends its ops to the builder, naming its parameters under ``prefix``."""

    def emit(self, gb: GraphBuilder, x: str, prefix: str, rng: np.random.Generator) -> str:
        raise NotImplementedError

    @staticmethod
    def _name(prefix: str, leaf: str) -> str:
        return f"{prefix}.{leaf}" if prefix else leaf


def _uniform(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return rng.uniform(-bound, bound, shape).astype(np.float32)


def _pair(v: int | Sequence[int]) -> list[int]:
    return [v, v] if isinstance(v, int) else list(v)


class Linear(Module):
    """``y = x W^T + b`` as one Gemm; W has PyTorch's (out, in) layout."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        self.in_features, self.out_features, self.bias = in_features, out_features, bias

    def emit(self, gb: GraphBuilder, x: str, prefix: str, rng: np.random.Generator) -> str:
        w = gb.const(_uniform(rng, (self.out_features, self.in_features), self.in_features), self._name(prefix, "weight"))
        b = gb.const(_uniform(rng, (self.out_features,), self.in_features), self._name(prefix, "bias")) if self.bias else None
        return gb.op("Gemm", x, w, b, transB=1)


class Conv2d(Module):
    """2-D convolution (groups, stride, padding, dilation), weights (out, in / groups, kh, kw)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int], stride: int | Sequence[int] = 1,
                 padding: int | Sequence[int] = 0, dilation: int | Sequence[int] = 1, groups: int = 1, bias: bool = True):
        if in_channels % groups or out_channels % groups:
            raise InvalidModelError(f"Conv2d: channels {in_channels}->{out_channels} not divisible by groups={groups}")
        self.in_channels, self.out_channels, self.groups, self.bias = in_channels, out_channels, groups, bias
        self.kernel, self.stride, self.padding, self.dilation = _pair(kernel_size), _pair(stride), _pair(padding), _pair(dilation)

    def emit(self, gb: GraphBuilder, x: str, prefix: str, rng: np.random.Generator) -> str:
        cin = self.in_channels // self.groups
        fan_in = cin * self.kernel[0] * self.kernel[1]
        w = gb.const(_uniform(rng, (self.out_channels, cin, *self.kernel), fan_in), self._name(prefix, "weight"))
        b = gb.const(_uniform(rng, (self.out_channels,), fan_in), self._name(prefix, "bias")) if self.bias else None
        return gb.op("Conv", x, w, b, kernel_shape=self.kernel, strides=self.stride, dilations=self.dilation,
                     pads=self.padding * 2, group=self.groups)


class BatchNorm2d(Module):
    """BatchNormalization over channels; ``momentum`` is PyTorch's (weight of the new batch statistic)."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1):
        self.num_features, self.eps, self.momentum = num_features, eps, momentum

    def emit(self, gb: GraphBuilder, x: str, prefix: str, rng: np.random.Generator) -> str:
        c = self.num_features
        names = [gb.const(v, self._name(prefix, leaf)) for leaf, v in (
            ("weight", np.ones(c, np.float32)), ("bias", np.zeros(c, np.float32)),
            ("running_mean", np.zeros(c, np.float32)), ("running_var", np.ones(c, np.float32)))]
        return gb.op("BatchNormalization", x, *names, epsilon=float(self.eps), momentum=float(1.0 - self.momentum))


BatchNorm1d = BatchNorm2d  # ONNX's BatchNormalization normalizes axis 1 of (N, C) and (N, C, H, W) alike


class _Elementwise(Module):
    op_type = ""

    def emit(self, gb: GraphBuilder, x: str, prefix: str, rng: np.random.Generator) -> str:
        return gb.op(self.op_type, x)


class ReLU(_Elementwise):
    op_type = "Relu"


class Sigmoid(_Elementwise):
    op_type = "Sigmoid"


class Tanh(_Elementwise):
    op_type = "Tanh"


class Identity(_Elementwise):
    op_type = "Identity"


class LeakyReLU(Module):
    def __init__(self, negative_slope: float = 0.01):
        self.negative_slope = negative_slope

    def emit(self, gb: GraphBuilder, x: str, prefix: str, rng: np.random.Generator) -> str:
        return gb.op("LeakyRelu", x, alpha=float(self.negative_slope))


class Dropout(Module):
    """Dropout (an identity at inference; the training graph switches it to training mode)."""

    def __init__(self, p: float = 0.5):
        if not 0.0 <= p < 1.0:
            raise InvalidModelError(f"Dropout: p must be in [0, 1), got {p}")
        self.p = p

    def emit(self, gb: GraphBuilder, x: str, prefix: str, rng: np.random.Generator) -> str:
        return gb.op("Dropout", x, gb.const(np.asarray(self.p, np.float32), self._name(prefix, "ratio")))


class MaxPool2d(Module):
    def __init__(self, kernel_size: int | Sequence[int], stride: int | Sequence[int] | None = None,
                 padding: int | Sequence[int] = 0):
        self.kernel = _pair(kernel_size)
        self.stride = self.kernel if stride is None else _pair(stride)
        self.padding = _pair(padding)

    def emit(self, gb: GraphBuilder, x: str, prefix: str, rng: np.random.Generator) -> str:
        return gb.op("MaxPool", x, kernel_shape=self.kernel, strides=self.stride, pads=self.padding * 2)


class AvgPool2d(MaxPool2d):
    """Average pooling; padded zeros count in the average, as PyTorch's default."""

    def emit(self, gb: GraphBuilder, x: str, prefix: str, rng: np.random.Generator) -> str:
        return gb.op("AveragePool", x, kernel_shape=self.kernel, strides=self.stride, pads=self.padding * 2,
                     count_include_pad=1)


class GlobalAvgPool2d(_Elementwise):
    op_type = "GlobalAveragePool"


class Flatten(Module):
    def emit(self, gb: GraphBuilder, x: str, prefix: str, rng: np.random.Generator) -> str:
        return gb.op("Flatten", x, axis=1)


class Sequential(Module):
    """Children applied in order, named "0", "1", ... or by the keys of an ordered mapping."""

    def __init__(self, *modules: Module | "OrderedDict[str, Module]"):
        if len(modules) == 1 and isinstance(modules[0], (dict, OrderedDict)):
            self.children = list(modules[0].items())
        else:
            self.children = [(str(i), m) for i, m in enumerate(modules)]

    def __iter__(self) -> Iterator[tuple[str, Module]]:
        return iter(self.children)

    def emit(self, gb: GraphBuilder, x: str, prefix: str, rng: np.random.Generator) -> str:
        for name, child in self.children:
            x = child.emit(gb, x, self._name(prefix, name), rng)
        return x

    def to_model(self, input_shape: Sequence[Dim], seed: int = 0, **kwargs) -> Model:
        return build_model(self, input_shape, seed, **kwargs)


def build_model(module: Module, input_shape: Sequence[Dim], seed: int = 0, input_name: str = "input",
                output_name: str = "output", opset: int = 17) -> Model:
    """An inference model of ``module`` on float32 inputs of ``input_shape`` (None/str: dynamic batch)."""
    gb = GraphBuilder(type(module).__name__.lower(), opset=opset)
    shape = tuple("N" if d is None else d for d in input_shape)
    x = gb.input(input_name, np.float32, shape)
    y = module.emit(gb, x, "", np.random.default_rng(seed))
    gb.output(y, rename=output_name)
    return infer_shapes(gb.build(producer_name="edgelearn.training.nn"))  # typed outputs, as ONNX requires
