"""The CLIP engine: model loading and embedding, zero-shot classification, server galleries and /find."""
from worker.clip.model import Clip, ClipLoadError, get_clip, load_clip

__all__ = ["Clip", "ClipLoadError", "get_clip", "load_clip"]
