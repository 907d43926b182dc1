"""A refreshed pool of rendered training scenes, and the fact matrix that says which caption fits which image.

Rendering costs ~2.5 ms an image on this CPU, as much as a training step's compute per image, so
we keep a pool of scenes and replace a slice of it every step: the data stays fresh without
rendering a whole batch per step. Flips and quarter turns are free and change no caption.
"""
from __future__ import annotations

import numpy as np
import torch

from worker.training import shapes as S

# OpenAI CLIP's normalisation; the saved image processor uses the same numbers.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def to_tensor(images) -> torch.Tensor:
    """PIL images -> uint8 tensor (N, 3, H, W)."""
    arr = np.stack([np.asarray(im.convert("RGB"), np.uint8) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def normalise_clip(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x.float() / 255.0 - mean) / std


def flip_rotate(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and quarter turn per image (shapes keep their names)."""
    out = x.clone()
    flips = torch.rand(len(x), generator=gen) < 0.5
    out[flips] = out[flips].flip(-1)
    k = torch.randint(0, 4, (len(x),), generator=gen)
    for r in range(1, 4):
        sel = k == r
        if sel.any():
            out[sel] = torch.rot90(out[sel], r, dims=(-2, -1))
    return out


class ScenePool:
    """`size` scenes from dataset `seed`; `refresh(n)` replaces the n oldest with new ones."""

    def __init__(self, seed: int, size: int, image_size: int = 64, split: str = "train", blob_frac: float = 0.0):
        self.seed, self.split, self.image_size, self.blob_frac = seed, split, image_size, blob_frac
        self.next_index = 0
        self.specs: list[tuple[list[S.ShapeSpec], str]] = []
        self.images = torch.empty(size, 3, image_size, image_size, dtype=torch.uint8)
        self.cursor = 0
        self._fill(size)

    def _fill(self, n: int) -> None:
        new = S.scenes(self.seed, n, self.split, self.image_size, start=self.next_index, blob_frac=self.blob_frac)
        self.next_index += n
        imgs = to_tensor([s.image for s in new])
        for j, s in enumerate(new):
            slot = (self.cursor + j) % len(self.images)
            self.images[slot] = imgs[j]
            item = (s.shapes, s.background)
            if slot < len(self.specs):
                self.specs[slot] = item
            else:
                self.specs.append(item)
        self.cursor = (self.cursor + n) % len(self.images)

    def refresh(self, n: int) -> None:
        if n > 0:
            self._fill(n)

    def __len__(self) -> int:
        return len(self.images)


def captions_with_facts(pool: ScenePool, idx: np.ndarray, rng: np.random.Generator) -> tuple[list[str], list[dict]]:
    texts, facts = [], []
    for i in idx:
        specs, bg = pool.specs[i]
        t, f = S.caption_for(specs, bg, rng, pool.split if pool.split != "test" else "train")
        texts.append(t)
        facts.append(f)
    return texts, facts


def scene_truth(specs: list[S.ShapeSpec], bg: str) -> dict:
    return {
        "shapes": tuple(sorted((s.colour, s.shape) for s in specs)),
        "colour": specs[0].colour if len(specs) == 1 else None,
        "shape": specs[0].shape if len(specs) == 1 else None,
        "bg": bg,
        "size": S.size_word(specs[0].size) if len(specs) == 1 else None,
    }


def caption_fits(facts: dict, truth: dict) -> bool:
    """Does a caption stating `facts` truly describe a scene whose ground truth is `truth`?"""
    if facts["shapes"] is not None and facts["shapes"] != truth["shapes"]:
        return False
    if facts["shapes"] is None and truth["colour"] is None:  # partial captions describe single shapes only
        return False
    for key in ("colour", "shape", "bg", "size"):
        if facts[key] is not None and facts[key] != truth[key]:
            return False
    return True


def fit_matrix(facts: list[dict], truths: list[dict]) -> torch.Tensor:
    """M[i, j] = 1 when caption j fits image i. The diagonal is 1 by construction."""
    # Group equal captions and equal scenes: a batch of 256 holds far fewer distinct ones.
    fkeys = [tuple(f[k] for k in _KEYS) for f in facts]
    tkeys = [tuple(t[k] for k in _KEYS) for t in truths]
    uf, f_inv = np.unique(np.array([hash(k) for k in fkeys]), return_inverse=True)
    ut, t_inv = np.unique(np.array([hash(k) for k in tkeys]), return_inverse=True)
    f_first = {int(f_inv[j]): j for j in range(len(facts))}
    t_first = {int(t_inv[i]): i for i in range(len(truths))}
    small = np.zeros((len(ut), len(uf)), np.float32)
    for a, i in t_first.items():
        for b, j in f_first.items():
            small[a, b] = caption_fits(facts[j], truths[i])
    return torch.from_numpy(small[t_inv][:, f_inv])


_KEYS = ("shapes", "colour", "shape", "bg", "size")
