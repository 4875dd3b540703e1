"""Model compression and the update codecs federated clients send on the wire."""
from .codecs import *  # noqa: F401,F403
from .codecs import __all__ as __all__  # noqa: F401
