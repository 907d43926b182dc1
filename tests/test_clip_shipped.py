"""The shipped CLIP (models/clip-shapes) through the engine: real semantics, so real claims.

Images are drawn here with PIL's own primitives (not the training renderer): the shipped model
must handle "any reasonable renderer". These tests need the trained model in models/; until the
training run has committed it they are skipped, with that reason.
"""
from __future__ import annotations

import io
import math

import pytest
import redis
import torch
from PIL import Image, ImageDraw

from jobs.schemas import FindJob, GalleryItem, IndexJob
from tests.clip_support import SHIPPED_CLIP, shipped_clip_available
from worker.clip.classify import classify
from worker.clip.handlers import ClipHandlers
from worker.runner import LocalRunner
from worker.setup import WorkerSetup

pytestmark = pytest.mark.skipif(not shipped_clip_available(), reason="models/clip-shapes is not trained/committed yet")

RGB = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (30, 60, 220), "yellow": (240, 220, 30),
       "orange": (245, 140, 20), "purple": (140, 40, 170), "white": (250, 250, 250), "black": (10, 10, 10),
       "grey": (128, 128, 128)}


def draw(colour: str, shape: str, background: str, size: int = 128, frac: float = 0.5) -> Image.Image:
    img = Image.new("RGB", (size, size), RGB[background])
    d = ImageDraw.Draw(img)
    r = size * frac / 2
    c = size / 2
    if shape == "circle":
        d.ellipse([c - r, c - r, c + r, c + r], fill=RGB[colour])
    elif shape == "square":
        d.rectangle([c - r, c - r, c + r, c + r], fill=RGB[colour])
    elif shape == "triangle":
        d.regular_polygon((c, c, r), 3, fill=RGB[colour])
    elif shape == "star":
        pts = [(c + (r if i % 2 == 0 else r * 0.45) * math.sin(i * math.pi / 5),
                c - (r if i % 2 == 0 else r * 0.45) * math.cos(i * math.pi / 5)) for i in range(10)]
        d.polygon(pts, fill=RGB[colour])
    return img


CASES = [("red", "circle", "grey"), ("blue", "square", "white"), ("yellow", "star", "black"),
         ("green", "triangle", "grey")]


@pytest.fixture(scope="module")
def shipped():
    from worker.clip.model import get_clip

    return get_clip(SHIPPED_CLIP)


def test_engine_embeddings_match_the_training_evaluation_path(shipped):
    """The engine's loading and preprocessing agree with how training evaluated the model (worker/training/evaluate.py)."""
    from worker.training.evaluate import image_embeddings, load_clip, text_embeddings

    model, processor = load_clip(SHIPPED_CLIP)
    images = [draw(c, s, b, size=96 + 40 * i) for i, (c, s, b) in enumerate(CASES)]
    texts = ["a red circle", "a photo of a small blue star on a yellow background"]
    assert torch.allclose(shipped.embed_images(images), image_embeddings(model, processor, images), atol=1e-4)
    assert torch.allclose(shipped.embed_texts(texts), text_embeddings(model, processor, texts), atol=1e-4)


@pytest.mark.parametrize("colour,shape,bg", CASES)
def test_shipped_model_classifies_drawn_shapes(shipped, colour, shape, bg):
    labels = [f"{c} {s}" for c, s, _ in CASES]  # four colours, four shapes
    result = classify(shipped, draw(colour, shape, bg), labels)
    assert result[0][0] == f"{colour} {shape}", result
    assert math.isclose(sum(p for _, p in result), 1.0, abs_tol=1e-9)


def test_shipped_model_tells_shapes_of_one_colour_apart_well_above_chance(shipped):
    """Same colour, four shapes: chance is 6/24. The model of 19:01 got 14/24 here (colour is its
    strong suit, shape much less so); a broken preprocessing path would sit near chance."""
    correct = 0
    for colour, bg in [("red", "grey"), ("blue", "white"), ("yellow", "black"), ("green", "grey"),
                       ("purple", "white"), ("orange", "black")]:
        labels = [f"{colour} {s}" for s in ("circle", "square", "triangle", "star")]
        for s in ("circle", "square", "triangle", "star"):
            correct += classify(shipped, draw(colour, s, bg), labels)[0][0] == f"{colour} {s}"
    assert correct >= 12, correct


def test_shipped_model_text_search_ranks_the_matching_image_first(shipped, redis_url):
    """Text -> image search through index and find jobs. Every scene has its own colour, so the
    query's colour and shape both point at one image and the others are genuine distractors."""
    runner = LocalRunner(WorkerSetup(handlers=ClipHandlers(shipped, redis.Redis.from_url(redis_url)).as_dict()))
    scenes = [("red", "circle", "grey"), ("blue", "square", "white"), ("yellow", "star", "black"),
              ("green", "triangle", "grey"), ("purple", "circle", "white"), ("orange", "square", "grey"),
              ("white", "star", "blue"), ("black", "triangle", "yellow")]
    items = []
    for c, s, b in scenes:
        buf = io.BytesIO()
        draw(c, s, b).save(buf, "PNG")
        items.append(GalleryItem(item_id=f"{c}-{s}-{b}", image=runner.put_blob(buf.getvalue())))
    assert runner.run(IndexJob(guild=7, add=items)).data["added"] == len(scenes)
    for c, s, b in scenes:
        hits = runner.run(FindJob(guild=7, query=f"a {c} {s}", top=3)).data["hits"]
        assert hits[0]["item_id"] == f"{c}-{s}-{b}", hits
