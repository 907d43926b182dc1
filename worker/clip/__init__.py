"""The CLIP engine: model loading and embedding, zero-shot classification, server galleries and /find.

Imports are lazy: `import worker.clip` costs nothing until a name is used (torch loads then).
"""
from __future__ import annotations

import importlib

_EXPORTS = {"Clip": "model", "ClipLoadError": "model", "get_clip": "model", "load_clip": "model",
            "classify": "classify", "Gallery": "gallery"}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"worker.clip.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'worker.clip' has no attribute {name!r}")
