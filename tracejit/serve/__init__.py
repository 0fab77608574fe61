"""Serving an exported function over HTTP with dynamic batching (``python -m tracejit.serve``)."""

from .batching import Batcher, rows_are_independent
from .server import ModelServer, serve

__all__ = ["Batcher", "ModelServer", "rows_are_independent", "serve"]
