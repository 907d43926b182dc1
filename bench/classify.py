"""classify: images per second on this CPU, at batch 1 and 32, for the shipped CLIP and a ViT-B/32.

Batch 1 is the worker's classify job as it runs (ClipHandlers.classify: PNG decode, the model's
own preprocessing, the image tower, cached prompt-ensembled label embeddings, softmax). Batch 32
is the same work for 32 images at once (decode, Clip.embed_images, label logits), as the CLI and
indexing batch them. Inputs are 512x512 PNGs of coloured shapes; labels are 8 shape names with
the default 8 templates (embedded once, then cached, as in a running worker).
"""
from __future__ import annotations

import contextlib
import io
import random
import sys
import time

import torch
from PIL import Image, ImageDraw

from bench.common import median

LABELS = ["red circle", "blue square", "green triangle", "yellow star", "purple circle", "orange square",
          "white triangle", "black star"]


def shape_pngs(n: int, size: int = 512, seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    colours = ["red", "green", "blue", "yellow", "orange", "purple", "white", "black", "grey"]
    out = []
    for _ in range(n):
        img = Image.new("RGB", (size, size), rng.choice(colours))
        d = ImageDraw.Draw(img)
        r = rng.randint(size // 10, size // 3)
        x, y = rng.randint(r, size - r), rng.randint(r, size - r)
        d.ellipse([x - r, y - r, x + r, y + r], fill=rng.choice(colours))
        buf = io.BytesIO()
        img.save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def measure(clip, repeats_b1: int, repeats_b32: int) -> dict:
    from jobs.schemas import ClassifyJob
    from jobs.validation.images import decode_image
    from worker.api import QuietContext
    from worker.clip.classify import DEFAULT_TEMPLATES, label_embeddings
    from worker.clip.handlers import ClipHandlers

    pngs = shape_pngs(32)
    ctx = QuietContext({f"{i:032x}": b for i, b in enumerate(pngs)})
    handlers = ClipHandlers(clip)
    job = lambda i: ClassifyJob(image=f"{i % 32:032x}", labels=LABELS)  # noqa: E731
    handlers.classify(job(0), ctx)  # warm-up: label embeddings cached, kernels chosen
    b1 = []
    for i in range(repeats_b1):
        t = time.perf_counter()
        handlers.classify(job(i), ctx)
        b1.append(time.perf_counter() - t)

    labels = label_embeddings(clip, LABELS, DEFAULT_TEMPLATES)

    def batch32():
        images = [decode_image(b, min_side=2 * clip.image_size) for b in pngs]
        emb = clip.embed_images(images, batch_size=32)
        return (clip.logit_scale * emb @ labels.T).softmax(-1)

    batch32()
    b32 = []
    for _ in range(repeats_b32):
        t = time.perf_counter()
        batch32()
        b32.append(time.perf_counter() - t)
    return {"b1_images_per_s": round(1 / median(b1), 2), "b1_ms_per_image": round(1000 * median(b1), 2),
            "b32_images_per_s": round(32 / median(b32), 2), "b32_ms_per_batch": round(1000 * median(b32), 1)}


def measure_many_labels(clip, n: int) -> dict:
    """One classify job over n labels x the 8 default templates (ImageNet-sized for n = 1000) in a
    fresh handler: the first job embeds n * 8 prompts (TEXT_BATCH per forward pass), the second
    finds every label vector in the handler's LabelCache and embeds only its image."""
    from jobs.schemas import ClassifyJob
    from worker.api import QuietContext
    from worker.clip.handlers import ClipHandlers

    labels = [f"{c} {s} {i}" for i, (c, s) in enumerate(
        (c, s) for c in ("red", "green", "blue", "yellow", "orange", "purple", "white", "black", "grey", "pink")
        for s in ("circle", "square", "triangle", "star") * 30)][:n]
    ctx = QuietContext({"a" * 32: shape_pngs(1)[0]})
    handlers = ClipHandlers(clip)
    job = ClassifyJob(image="a" * 32, labels=labels)
    t = time.perf_counter()
    handlers.classify(job, ctx)
    first = time.perf_counter() - t
    cached = []
    for _ in range(3):
        t = time.perf_counter()
        handlers.classify(job, ctx)
        cached.append(time.perf_counter() - t)
    return {f"labels{n}_first_s": round(first, 3), f"labels{n}_cached_ms": round(1000 * median(cached), 2)}


def run(quick: bool = False, tiny: bool = False) -> dict:
    from bench.gpu_imagine import vit_b_32_clip
    from bench.models import SHIPPED_CLIP, random_clip_dir, shipped_present
    from worker.clip.model import load_clip

    have = shipped_present()["clip"]
    with contextlib.redirect_stdout(sys.stderr):
        if tiny:
            from bench.models import tiny_models

            shapes, _, note = tiny_models()
            note = {"shapes_clip": note["clip"]}
        else:
            shapes = load_clip(SHIPPED_CLIP if have else random_clip_dir("shapes"), "cpu")
            note = {"shapes_clip": "shipped" if have else "random (shipped architecture; models/clip-shapes absent)"}
    r1, r32 = (3, 1) if tiny else ((10, 2) if quick else (50, 5))
    out = {f"shapes_{k}": v for k, v in measure(shapes, r1, r32).items()}
    out.update({f"shapes_{k}": v for k, v in measure_many_labels(shapes, 50 if tiny else 1000).items()})
    del shapes
    big = vit_b_32_clip(torch.device("cpu"), torch.float32, tiny=tiny)
    r1, r32 = (3, 1) if tiny else ((5, 1) if quick else (20, 3))
    out.update({f"vitb32_{k}": v for k, v in measure(big, r1, r32).items()})
    note["vitb32_clip"] = "random weights, CLIPConfig defaults (ViT-B/32 shapes)" if not tiny else "tiny stand-in"
    note["threads"] = torch.get_num_threads()
    return {"metrics": out, "notes": note}


if __name__ == "__main__":
    from bench.common import main

    main(run)
