"""Gradient rules, one module per op family; importing this package registers them all."""
from __future__ import annotations

from inference.submodules import import_submodules
from training.grads.registry import GRAD_DOMAIN, GradBuilder, get_rule, grad_rule, registered_rules

import_submodules(__name__, __path__, skip=("registry",))

__all__ = ["GRAD_DOMAIN", "GradBuilder", "get_rule", "grad_rule", "registered_rules"]
