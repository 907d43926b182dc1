"""A deliberately different renderer, to check that the shipped models generalise beyond shapes.py.

It shares no drawing code with shapes.py: pure-numpy rasterisation with no anti-aliasing, its own
fixed shade per colour, its own geometry (pixel-centre tests, upright regular shapes, a classic
5-point star with inner radius 0.382) and a different canvas size (96 px, so the CLIP processor
resizes it). Only the colour and shape *names* are shared.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

FOREIGN_SHADES = {
    "red": (228, 26, 28), "green": (44, 160, 44), "blue": (31, 90, 220), "yellow": (250, 225, 30),
    "orange": (255, 127, 14), "purple": (125, 50, 165), "white": (250, 250, 250), "black": (10, 10, 10),
    "grey": (127, 127, 127),
}
COLOUR_NAMES = ("red", "green", "blue", "yellow", "orange", "purple", "white", "black")
SHAPE_NAMES = ("circle", "square", "triangle", "star")


def _inside_polygon(xs: np.ndarray, ys: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd rule point-in-polygon for every pixel centre."""
    inside = np.zeros(xs.shape, bool)
    n = len(poly)
    for i in range(n):
        (x1, y1), (x2, y2) = poly[i], poly[(i + 1) % n]
        crosses = (y1 > ys) != (y2 > ys)
        x_at = (x2 - x1) * (ys - y1) / (y2 - y1 + 1e-12) + x1
        inside ^= crosses & (xs < x_at)
    return inside


def mask(shape: str, cx: float, cy: float, r: float, size: int) -> np.ndarray:
    """Pixels covered by `shape` with centre (cx, cy) and half-extent r, all in pixels."""
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    if shape == "circle":
        return (xs - cx) ** 2 + (ys - cy) ** 2 <= r * r
    if shape == "square":
        return (np.abs(xs - cx) <= r) & (np.abs(ys - cy) <= r)
    if shape == "triangle":  # upright equilateral, width 2r
        h = r * np.sqrt(3)
        poly = np.array([[cx, cy - h / 2], [cx + r, cy + h / 2], [cx - r, cy + h / 2]])
        return _inside_polygon(xs, ys, poly)
    if shape == "star":
        t = -np.pi / 2 + np.arange(10) * np.pi / 5
        rad = np.where(np.arange(10) % 2 == 0, r, 0.382 * r)
        poly = np.stack([cx + rad * np.cos(t), cy + rad * np.sin(t)], 1)
        return _inside_polygon(xs, ys, poly)
    raise ValueError(shape)


def draw(colour: str, shape: str, background: str, frac: float, cx: float, cy: float, size: int = 96) -> Image.Image:
    """One shape whose extent is `frac` of the side, centred at (cx, cy) in units of the side."""
    img = np.empty((size, size, 3), np.uint8)
    img[:] = FOREIGN_SHADES[background]
    img[mask(shape, cx * size, cy * size, frac * size / 2, size)] = FOREIGN_SHADES[colour]
    return Image.fromarray(img)


def sample(n: int, seed: int, size: int = 96) -> list[tuple[Image.Image, str, str]]:
    """n single-shape images (image, colour, shape), every class equally often, random placement."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        colour, shape = COLOUR_NAMES[(i // 4) % 8], SHAPE_NAMES[i % 4]
        bg = rng.choice([b for b in FOREIGN_SHADES if b != colour])
        frac = rng.uniform(0.25, 0.65)
        cx, cy = rng.uniform(frac / 2, 1 - frac / 2, 2)
        out.append((draw(colour, shape, str(bg), frac, cx, cy, size), colour, shape))
    return out
