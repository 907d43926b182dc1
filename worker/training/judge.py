"""An independent judge of generated pictures: a tiny CNN that names the object's colour and shape
and the background colour, trained only on the foreign renderer (`foreign.py`), never on shapes.py
or anything the shipped models saw, and never used to train them.

Generated pictures are not clean renders: the judge sees foreign shapes at random sizes, places and
rotations with the degradations a 64 px VQGAN picture has (shade drift, a textured background, low
resolution, blur, JPEG, noise). Besides the four shapes it knows a fifth class, "blob": irregular
lumps and stretched ovals, what a picture that failed to draw a shape looks like, so a blob is not
forced into the nearest shape.

`python -m worker.training judge` retrains it (deterministic on one thread) and writes
`judge.safetensors` next to this file; `load_judge()` reads it.
"""
from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter
from safetensors.torch import load_file, save_file

from worker.training import foreign

SIDE = 64
COLOURS = foreign.COLOUR_NAMES
BACKGROUNDS = tuple(foreign.FOREIGN_SHADES)  # the colours and grey
SHAPES = foreign.SHAPE_NAMES + ("blob",)
WEIGHTS = Path(__file__).with_name("judge.safetensors")
TRAIN_SEED, TEST_SEED = 7001, 7002  # the judge's own data; its test seed is never trained on


class Judge(torch.nn.Module):
    """Four conv blocks, then global average and max pooling (position-free), three linear heads."""

    def __init__(self, width: int = 24):
        super().__init__()
        chans = (3, width // 2, width, 2 * width, 2 * width)
        blocks = []
        for i in range(4):
            blocks += [torch.nn.Conv2d(chans[i], chans[i + 1], 3, padding=1, bias=False),
                       torch.nn.BatchNorm2d(chans[i + 1]), torch.nn.ReLU()]
            if i < 3:
                blocks.append(torch.nn.MaxPool2d(2))
        self.features = torch.nn.Sequential(*blocks)
        self.colour = torch.nn.Linear(4 * width, len(COLOURS))
        self.shape = torch.nn.Linear(4 * width, len(SHAPES))
        self.background = torch.nn.Linear(4 * width, len(BACKGROUNDS))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.features(x)
        h = torch.cat([h.mean((2, 3)), h.amax((2, 3))], 1)
        return self.colour(h), self.shape(h), self.background(h)


def to_input(images: list[Image.Image]) -> torch.Tensor:
    """PIL images of any size -> (N, 3, 64, 64) floats in [-1, 1]."""
    arr = np.stack([np.asarray(im.convert("RGB").resize((SIDE, SIDE), Image.BILINEAR)) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 127.5 - 1


# --- the judge's training pictures (foreign renderer geometry + degradations) -----------------


def _blob(rng: np.random.Generator, cx: float, cy: float, r: float, size: int) -> np.ndarray:
    """An irregular lump (two or three low harmonics of comparable size) or a stretched oval."""
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    if rng.random() < 0.3:
        a, b, th = r, r / rng.uniform(1.7, 2.6), rng.uniform(0, np.pi)
        u = (xs - cx) * np.cos(th) + (ys - cy) * np.sin(th)
        v = -(xs - cx) * np.sin(th) + (ys - cy) * np.cos(th)
        return (u / a) ** 2 + (v / b) ** 2 <= 1
    t = np.linspace(0, 2 * np.pi, 120, endpoint=False)
    radius = np.ones_like(t)
    for k in rng.choice([1, 2, 3, 4], size=int(rng.integers(2, 4)), replace=False):
        radius += rng.uniform(0.2, 0.35) * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    radius = r * radius / radius.max()
    poly = np.stack([cx + radius * np.cos(t), cy + radius * np.sin(t)], 1)
    return foreign._inside_polygon(xs, ys, poly)


def _shade(name: str, rng: np.random.Generator, spread: float) -> np.ndarray:
    return np.clip(np.array(foreign.FOREIGN_SHADES[name], float) + rng.normal(0, spread, 3), 0, 255)


def degrade(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """What a small generated picture does to a clean render: low resolution, blur, JPEG, noise."""
    if rng.random() < 0.6:
        low = int(rng.integers(16, SIDE))
        img = img.resize((low, low), Image.BILINEAR).resize((SIDE, SIDE), [Image.BILINEAR, Image.BICUBIC, Image.NEAREST][rng.integers(3)])
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.6)))
    if rng.random() < 0.5:
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=int(rng.integers(25, 90)))
        img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    if rng.random() < 0.5:
        arr = np.asarray(img, np.float32) + rng.normal(0, rng.uniform(2, 12), (SIDE, SIDE, 3))
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    return img


def picture(rng: np.random.Generator, degraded: bool = True) -> tuple[Image.Image, int, int, int]:
    """One training picture and its (colour, shape, background) labels."""
    c, s = int(rng.integers(len(COLOURS))), int(rng.integers(len(SHAPES)))
    # Generated pictures mostly keep the grey canvas: grey backgrounds a third of the time.
    others = [b for b in BACKGROUNDS if b != COLOURS[c]]
    bg = "grey" if rng.random() < 0.33 and COLOURS[c] != "grey" else others[rng.integers(len(others))]
    big = 2 * SIDE
    frac = rng.uniform(0.22, 0.8)
    r = frac * big / 2
    cx, cy = rng.uniform(r * 0.8, big - r * 0.8, 2)
    inside = _blob(rng, cx, cy, r, big) if SHAPES[s] == "blob" else foreign.mask(SHAPES[s], cx, cy, r, big)
    spread = 18.0 if degraded else 0.0
    back = np.broadcast_to(_shade(bg, rng, spread), (big, big, 3)).copy()
    if degraded and rng.random() < 0.6:  # a textured, uneven background, as VQGAN canvases are
        grid = rng.normal(0, rng.uniform(3, 20), (4, 4, 3))
        back += np.stack([np.asarray(Image.fromarray(grid[..., k].astype(np.float32)).resize((big, big), Image.BICUBIC))
                          for k in range(3)], -1)
    if rng.random() < 0.5:  # generated shapes are not upright: turn the shape, not the picture
        turned = Image.fromarray(inside.astype(np.uint8) * 255).rotate(float(rng.uniform(-45, 45)), Image.NEAREST, center=(cx, cy))
        inside = np.asarray(turned) > 127
    img = np.where(inside[..., None], _shade(COLOURS[c], rng, spread), back)
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    pil = pil.resize((SIDE, SIDE), Image.BILINEAR)
    if degraded:
        pil = degrade(pil, rng)
    return pil, c, s, BACKGROUNDS.index(bg)


def dataset(n: int, seed: int, degraded: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    items = [picture(rng, degraded) for _ in range(n)]
    return to_input([it[0] for it in items]), torch.tensor([it[1:] for it in items])


# --- training, loading, judging ----------------------------------------------------------------


def train_judge(n: int = 16000, epochs: int = 8, seed: int = TRAIN_SEED, log: Callable[[str], None] = print,
                out: Path | None = WEIGHTS) -> tuple[Judge, dict]:
    """Train on `n` fresh degraded foreign pictures (one thread: deterministic); report held-out accuracy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t0 = time.time()
        torch.manual_seed(seed)
        x, y = dataset(n, seed)
        log(f"judge: {n} pictures rendered in {time.time() - t0:.0f}s")
        model = Judge()
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
        steps, batch = epochs * n // 64, 64
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.15)
        gen = torch.Generator().manual_seed(seed)
        model.train()
        for step in range(steps):
            idx = torch.randint(0, n, (batch,), generator=gen)
            xb = x[idx]
            flip = torch.rand(batch, generator=gen) < 0.5
            xb[flip] = xb[flip].flip(-1)
            turns = int(torch.randint(0, 4, (1,), generator=gen))  # shapes keep their names when turned
            xb = torch.rot90(xb, turns, dims=(2, 3))
            c, s, b = model(xb)
            loss = F.cross_entropy(c, y[idx, 0]) + F.cross_entropy(s, y[idx, 1]) + F.cross_entropy(b, y[idx, 2])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if (step + 1) % 200 == 0:
                log(f"judge step {step + 1}/{steps} loss {loss.item():.3f}")
        model.eval()
        if out is not None:
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out))
        report = judge_report(model)
        report["train"] = {"pictures": n, "epochs": epochs, "seconds": round(time.time() - t0, 1)}
        return model, report
    finally:
        torch.set_num_threads(threads)


def load_judge(path: Path = WEIGHTS) -> Judge:
    model = Judge()
    model.load_state_dict(load_file(str(path)))
    return model.eval()


@torch.no_grad()
def judge(model: Judge, images: list[Image.Image]) -> list[dict]:
    """{"colour", "shape", "background", "shape_p"} for each picture (shape_p: the judge's confidence)."""
    c, s, b = model(to_input(images))
    p = s.softmax(1)
    return [{"colour": COLOURS[ci], "shape": SHAPES[si], "background": BACKGROUNDS[bi], "shape_p": round(float(p[k, si]), 3)}
            for k, (ci, si, bi) in enumerate(zip(c.argmax(1).tolist(), s.argmax(1).tolist(), b.argmax(1).tolist()))]


def _accuracy(model: Judge, x: torch.Tensor, y: torch.Tensor) -> dict:
    with torch.no_grad():
        c, s, b = model(x)
    c, s, b = c.argmax(1), s.argmax(1), b.argmax(1)
    return {"n": len(y), "colour": float((c == y[:, 0]).float().mean()), "shape": float((s == y[:, 1]).float().mean()),
            "background": float((b == y[:, 2]).float().mean()),
            "both": float(((c == y[:, 0]) & (s == y[:, 1])).float().mean())}


def judge_report(model: Judge, n: int = 1000) -> dict:
    """Held-out accuracy: fresh degraded pictures, clean ones, and the shapes world's own renders
    (a renderer the judge never saw: 6-point stars, outlines, other shades)."""
    from worker.training import shapes as S

    out = {"degraded": _accuracy(model, *dataset(n, TEST_SEED)), "clean": _accuracy(model, *dataset(n // 2, TEST_SEED + 1, degraded=False))}
    scenes = S.scenes(TEST_SEED + 2, n // 2, "test", n_shapes=1)
    got = judge(model, [sc.image for sc in scenes])
    truth = [(sc.shapes[0].colour, sc.shapes[0].shape, sc.background) for sc in scenes]
    out["shapes_world"] = {
        "n": len(scenes),
        "colour": float(np.mean([g["colour"] == t[0] for g, t in zip(got, truth)])),
        "shape": float(np.mean([g["shape"] == t[1] for g, t in zip(got, truth)])),
        "background": float(np.mean([g["background"] == t[2] for g, t in zip(got, truth)])),
        "both": float(np.mean([(g["colour"], g["shape"]) == t[:2] for g, t in zip(got, truth)])),
    }
    return out
