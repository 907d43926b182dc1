"""The CLIP engine: model loading and embedding, zero-shot classification, server galleries and /find.

Imports are lazy so the bot can use `worker.clip.labels.validate_labels` without importing torch.
"""
from __future__ import annotations

import importlib

_EXPORTS = {"Clip": "model", "ClipLoadError": "model", "get_clip": "model", "load_clip": "model",
            "classify": "classify", "validate_labels": "labels", "Gallery": "gallery"}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"worker.clip.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'worker.clip' has no attribute {name!r}")
