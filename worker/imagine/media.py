"""Pixels out of the engine: tensors to uint8 frames, preview PNGs, the GIF timelapse."""
from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from jobs.validation.images import encode_png


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] (any device) -> (H, W, 3) uint8."""
    return img.detach().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def fit(frame: np.ndarray, max_side: int) -> Image.Image:
    """The frame as a PIL image no larger than max_side on its longer side (aspect kept)."""
    img = Image.fromarray(frame)
    scale = max_side / max(img.size)
    if scale < 1:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BOX)
    return img


def fit_crisp(frame: np.ndarray, side: int) -> Image.Image:
    """Reduced to `side` like `fit`, or enlarged by a whole factor (nearest: crisp pixels) when the
    picture is small, so a 64 px preview or timelapse is not a postage stamp in a chat."""
    factor = side // max(frame.shape[:2])
    if factor <= 1:
        return fit(frame, side)
    img = Image.fromarray(frame)
    return img.resize((img.width * factor, img.height * factor), Image.NEAREST)


def preview_png(frame: np.ndarray, max_side: int) -> bytes:
    return encode_png(fit_crisp(frame, max_side), compress_level=1)  # small and fast: it is shown once


def encode_gif(
    frames: list[np.ndarray], max_bytes: int, frame_ms: int = 80, hold_last_ms: int = 1500, max_side: int = 256
) -> bytes:
    """An endlessly looping GIF of the frames, under max_bytes.

    When too big, every other frame is dropped (doubling the frame time, so the clip keeps its
    length) down to 8 frames, then frames are downscaled; the last frame is always kept.
    """
    if not frames:
        raise ValueError("no frames")
    images = [fit(f, max_side) for f in frames]
    while True:
        buf = io.BytesIO()
        durations = [frame_ms] * (len(images) - 1) + [hold_last_ms]
        images[0].save(
            buf, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0, disposal=1
        )
        data = buf.getvalue()
        if len(data) <= max_bytes:
            return data
        if len(images) > 8:
            images = images[:-1][::2] + [images[-1]]
            frame_ms *= 2
        elif max(images[0].size) > 16:
            images = [im.resize((max(1, im.width * 3 // 4), max(1, im.height * 3 // 4)), Image.BOX) for im in images]
        else:
            raise ValueError(f"cannot fit a GIF under {max_bytes} bytes")
