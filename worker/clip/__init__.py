"""The CLIP engine: model loading and embedding, zero-shot classification, server galleries and /find."""
from worker.clip.model import Clip, ClipLoadError, load_clip

__all__ = ["Clip", "ClipLoadError", "load_clip"]
