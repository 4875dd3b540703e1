"""Gradient rules, one module per op family; importing this package registers them all."""
from __future__ import annotations

import importlib
import pkgutil

from training.grads.registry import GRAD_DOMAIN, GradBuilder, get_rule, grad_rule, registered_rules


def _load_all() -> None:
    for mod in pkgutil.iter_modules(__path__):
        if mod.name != "registry" and not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")


_load_all()

__all__ = ["GRAD_DOMAIN", "GradBuilder", "get_rule", "grad_rule", "registered_rules"]
