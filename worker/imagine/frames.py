"""Full-size frames of a picture's timelapse, so a member can pick an earlier one as the final picture.

A picture of `steps` steps keeps up to n evenly spaced frames: the picture after steps*1/n,
steps*2/n, ... updates, the last of which is the final picture itself. That one is the result's
"png" blob already, so only the earlier frames are stored, each as a PNG named "frame_<i>".
The Result lists them all as `frames: [{"step": s, "blob": name}, ...]`, earliest first, the last
entry naming "png"; `name` is a key of the Result's `blobs` (name -> blob key).
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from jobs.validation.images import encode_png

FINAL = "png"


def frame_steps(steps: int, n: int) -> list[int]:
    """The steps of n evenly spaced frames of a `steps`-step run, ending with `steps` (fewer when steps < n)."""
    if n <= 0 or steps <= 0:
        return []
    return sorted({max(1, round(steps * i / n)) for i in range(1, n + 1)})


class FrameKeeper:
    """Collects the wanted frames of one run while it steps (full size, uint8 HxWx3)."""

    def __init__(self, steps: int, n: int):
        self.steps = steps
        self.listed = frame_steps(steps, n)
        self._wanted = set(self.listed) - {steps}
        self.kept: list[tuple[int, np.ndarray]] = []

    def wants(self, step: int) -> bool:
        """True when the picture after `step` updates is one to keep."""
        return step in self._wanted

    def keep(self, step: int, frame: np.ndarray) -> None:
        self.kept.append((step, frame))

    def encode(self, text: dict[str, str], max_bytes: int) -> tuple[list[dict], dict[str, bytes]]:
        """(frames listing, {blob name: PNG}) within max_bytes of PNGs (see `fit_budget`)."""
        if not self.listed:
            return [], {}
        blobs, listing = {}, []
        for i, (step, frame) in enumerate(self.kept, 1):
            name = f"frame_{i}"
            blobs[name] = encode_png(Image.fromarray(frame), text={**text, "step": str(step)})
            listing.append({"step": step, "blob": name})
        listing.append({"step": self.steps, "blob": FINAL})
        return fit_budget(listing, blobs, max_bytes)


def fit_budget(listing: list[dict], blobs: dict[str, bytes], max_bytes: int) -> tuple[list[dict], dict[str, bytes]]:
    """Drop every other earlier frame (the earliest first) until their PNGs total at most max_bytes.
    Entries whose blob is not in `blobs` (the final picture) always stay."""
    listing, blobs = list(listing), dict(blobs)
    while sum(len(b) for b in blobs.values()) > max_bytes:
        earlier = [e for e in listing if e["blob"] in blobs]
        drop = earlier[0::2] if len(earlier) > 1 else earlier
        for e in drop:
            listing.remove(e)
            del blobs[e["blob"]]
    return listing, blobs
