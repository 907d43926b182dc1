"""Shared set-up for the CLIP engine's tests (no tests here).

Making the tiny CLIP trains a tokenizer (~5 s on 2 cores), so it is made once per test process
and shared by every test_clip* / test_gallery* / test_find* module.
"""
from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from tests.factories import make_clip_dir

SHIPPED_CLIP = Path(__file__).resolve().parent.parent / "models" / "clip-shapes"


@functools.cache
def tiny_clip_dir() -> Path:
    root = Path(tempfile.mkdtemp(prefix="tiny-clip-"))
    atexit.register(shutil.rmtree, root, True)
    return make_clip_dir(root / "tiny-clip")


@functools.cache
def tiny_clip():
    """One loaded tiny CLIP for the whole run (read-only: eval mode, no grads)."""
    from worker.clip.model import load_clip

    return load_clip(tiny_clip_dir())


def shipped_clip_available() -> bool:
    return (SHIPPED_CLIP / "config.json").is_file()
