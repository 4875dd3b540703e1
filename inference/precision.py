"""Precision converters: how ``Config(precision="int8"|"fp16")`` turns a float model into that precision.

Why a registry: converting needs ``compress`` (quantization, fp16 storage), and ``inference``
imports nothing of ours above it. ``compress`` declares its converters under the Python entry point
group ``edgelearn.precision`` (see pyproject.toml), found here on first use; a program can also
call :func:`register_precision` itself (its own converter, or one for a build without entry points).
"""
from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any, Callable

from inference.errors import ConfigError
from inference.ir import Model

ENTRY_POINT_GROUP = "edgelearn.precision"
NATIVE = "fp32"  # what a float model already is: no converter needed
KNOWN = ("fp32", "fp16", "int8")

# (model, calibration data or None) -> a new model in that precision
Converter = Callable[[Model, Any], Model]
_CONVERTERS: dict[str, Converter] = {}
_discovered = False


def register_precision(name: str, fn: Converter) -> None:
    """Make ``Config(precision=name)`` convert models with ``fn(model, calibration_data)``."""
    _CONVERTERS[name] = fn


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in _CONVERTERS:
            try:
                _CONVERTERS[ep.name] = ep.load()
            except ImportError:  # a converter whose package is not installed: reported on use
                continue


def available() -> list[str]:
    """Precisions a Predictor can run here (fp32 always)."""
    _discover()
    return sorted({NATIVE, *_CONVERTERS})


def converter(name: str) -> Converter:
    """The converter for ``name``; ConfigError naming the precision and the fix when there is none."""
    _discover()
    if name in _CONVERTERS:
        return _CONVERTERS[name]
    raise ConfigError(
        f"precision {name!r} needs a converter and none is registered (available: {available()}): "
        f"install edgelearn with its compress package (it declares them under the "
        f"{ENTRY_POINT_GROUP!r} entry points), or call inference.precision.register_precision({name!r}, fn)")


def convert(model: Model, name: str, calibration_data: Any = None) -> Model:
    """``model`` in precision ``name`` (fp32: unchanged)."""
    if name == NATIVE:
        return model
    return converter(name)(model, calibration_data)
