"""Errors of the update codecs, so a caller can tell bad payloads from bad inputs or specs."""
from __future__ import annotations

from inference.errors import EdgelearnError


class CodecError(EdgelearnError):
    """Base of every error raised by the update codecs."""


class PayloadError(CodecError):
    """A payload cannot be decoded: truncated, corrupt, or not what the caller expected."""


class CodecInputError(CodecError):
    """The arrays or the state handed to an encoder are unusable (NaN/Inf, wrong dtype or shape)."""


class CodecSpecError(CodecError):
    """A codec spec string or config asks for something that does not exist."""
