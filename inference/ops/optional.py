"""Optional-type ops; an optional is either None (empty) or the value it holds (tensor or list)."""
from __future__ import annotations

import numpy as np

from inference.errors import KernelError
from inference.ops.registry import register


@register("Optional", since=15)
def optional(value=None, *, type=None):
    """Wrap ``value``; with no input, the empty optional of the ``type`` attribute."""
    if value is None and type is None:
        raise KernelError("Optional: an empty optional needs the 'type' attribute")
    return value


@register("OptionalHasElement", since=15)
def optional_has_element(value=None):
    return np.array(value is not None)


@register("OptionalGetElement", since=15)
def optional_get_element(value):
    if value is None:
        raise KernelError("OptionalGetElement: the optional is empty")
    return value
