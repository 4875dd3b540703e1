"""The converters behind ``Config(precision=...)``, declared as ``edgelearn.precision`` entry points.

``inference`` cannot import ``compress`` (the import direction points the other way), so it finds
these through the entry points of pyproject.toml (see :mod:`inference.precision`). Each takes the
float model and the Config's ``calibration_data`` and returns a new model; the Predictor then runs
its usual passes, which fuse the int8 QDQ patterns into the int8 kernels.
"""
from __future__ import annotations

from typing import Any

from compress.fp16 import Fp16Error, convert_fp16
from compress.quantize import QuantizationError, quantize_dynamic, quantize_static
from inference.errors import ConfigError
from inference.ir import Model

PER_CHANNEL_OPSET = 13  # per-axis DequantizeLinear


def int8(model: Model, calibration_data: Any = None) -> Model:
    """Static int8 (Conv/MatMul/Gemm, calibrated ranges) when ``calibration_data`` is given; else
    dynamic int8 for MatMul/Gemm (activation scales computed at run time, no data needed)."""
    per_channel = model.opset_imports.get("", 1) >= PER_CHANNEL_OPSET  # else per tensor (opset 11, 12)
    try:
        if calibration_data is not None:
            return quantize_static(model, calibration_data, per_channel=per_channel)
        return quantize_dynamic(model, per_channel=per_channel)
    except QuantizationError as e:
        hint = "" if calibration_data is not None else (
            " (without calibration_data only MatMul/Gemm are quantized, dynamically: give "
            "Config(calibration_data=...) with sample inputs for static int8 of Conv layers too)")
        raise ConfigError(f"precision='int8': {e}{hint}") from e


def fp16(model: Model, calibration_data: Any = None) -> Model:
    """float32 weights rounded to float16 (stored fp16, computed in float32: see compress.fp16)."""
    try:
        return convert_fp16(model)
    except Fp16Error as e:
        raise ConfigError(f"precision='fp16': {e}") from e
