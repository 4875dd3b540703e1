"""Import every module of a package: how the registries fill (reference ops, fast kernels, gradient
rules), each module registering what it defines when imported."""
from __future__ import annotations

import importlib
import pkgutil
from typing import Iterable


def import_submodules(package: str, path: Iterable[str], skip: tuple[str, ...] = ()) -> None:
    """Import the modules of ``package`` (its ``__path__``), those named with a leading underscore
    and those in ``skip`` excepted."""
    for mod in pkgutil.iter_modules(path):
        if mod.name not in skip and not mod.name.startswith("_"):
            importlib.import_module(f"{package}.{mod.name}")
