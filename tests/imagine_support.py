"""Shared set-up for the imagine tests (no tests here): tiny real models and a recording JobContext."""
from __future__ import annotations

import io
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from tests.factories import make_clip_dir, make_vqgan_files
from worker.api import JobError
from worker.imagine.engine import ImagineConfig


def tiny_models(root):
    """A tiny random CLIP (32 px) and VQGAN (factor 2), written in the real formats and loaded by
    the production loaders."""
    from worker.clip.model import load_clip
    from worker.imagine.vqgan import load_vqgan

    clip = load_clip(make_clip_dir(root / "clip"), "cpu")
    vqgan = load_vqgan(*make_vqgan_files(root / "vqgan"), "cpu")
    return clip, vqgan


def tiny_config(**overrides) -> ImagineConfig:
    """Small and fast: 32x32 images, 8 cutouts."""
    base = dict(width=32, height=32, steps=12, max_steps=200, min_side=8, max_pixels=64 * 64, cutouts=8,
                lr=0.05, preview_every=4, gif_frames=10, batch_size=4)
    base.update(overrides)
    return ImagineConfig(**base)


class RecordingContext:
    """A JobContext that records progress, serves blobs from a dict and can be cancelled."""

    def __init__(self, job=None, blobs=None, cancel_after_step=None):
        self.job = job
        self.blobs = dict(blobs or {})
        self.events: list[tuple[int, int, float | None, bytes | None]] = []
        self.cancel_after_step = cancel_after_step
        self.cancel_flag = threading.Event()

    def progress(self, step, total, loss=None, preview_png=None):
        self.events.append((step, total, loss, preview_png))
        if self.cancel_after_step is not None and step >= self.cancel_after_step:
            self.cancel_flag.set()

    def cancelled(self) -> bool:
        return self.cancel_flag.is_set()

    def blob(self, key):
        try:
            return self.blobs[key]
        except KeyError:
            raise JobError(f"The uploaded file {key} has expired; upload it again.") from None


def png_pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float64)


def psnr(a: bytes, b: bytes) -> float:
    x, y = png_pixels(a), png_pixels(b)
    mse = float(((x - y) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def png_bytes(colour=(255, 0, 0), size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The CI box has 2 cores shared with other jobs: intra-op threads only contend there."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
