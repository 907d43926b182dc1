"""worker.clip.classify: label validation and prompt-ensembled zero-shot classification."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from tests.clip_support import tiny_clip
from worker.api import JobError
from worker.clip.classify import DEFAULT_TEMPLATES, classify, label_embeddings, validate_labels

# ----------------------------------------------------------------------------- validate_labels


def test_labels_from_a_comma_string_are_cleaned_and_merged():
    assert validate_labels(" red circle ,Blue   square,, red  CIRCLE, star ") == ["red circle", "Blue square", "star"]
    assert validate_labels(["cat", "dog", "Cat", "DOG "]) == ["cat", "dog"]


@pytest.mark.parametrize(
    "labels,message",
    [
        ("cat", "at least 2 different labels"),
        ("cat, Cat, CAT ", "got only 'cat'"),
        (" , ,", "at least 2"),
        ([f"label {i}" for i in range(26)], "Too many labels: 26"),
        (["ok", "x" * 101], "101 characters"),
    ],
)
def test_bad_label_sets_get_clear_messages(labels, message):
    with pytest.raises(JobError, match=message):
        validate_labels(labels)


def test_label_bounds_inclusive():
    assert len(validate_labels([f"label {i}" for i in range(25)])) == 25
    assert validate_labels(["x" * 100, "y"])[0] == "x" * 100
    # 26 raw labels that merge to 25 are fine: the limit is on distinct labels
    assert len(validate_labels([f"label {i}" for i in range(25)] + ["LABEL 0"])) == 25


# ----------------------------------------------------------------------------- classify


def image(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (48, 40, 3), dtype=np.uint8))


def test_probabilities_sorted_sum_to_one_and_use_merged_labels():
    clip = tiny_clip()
    labels = "red circle, blue square, green star, Red Circle, yellow triangle"
    for seed in range(3):
        result = classify(clip, image(seed), labels)
        assert [lab for lab, _ in result] and sorted(lab for lab, _ in result) == sorted(
            ["red circle", "blue square", "green star", "yellow triangle"]
        )
        probs = [p for _, p in result]
        assert probs == sorted(probs, reverse=True)
        assert math.isclose(sum(probs), 1.0, abs_tol=1e-9)
        assert all(0 < p < 1 for p in probs)


def test_matches_an_independent_computation_of_the_ensemble():
    """Recompute the CLIP-paper recipe by hand from raw model outputs (no cache, no helper)."""
    clip = tiny_clip()
    labels = ["red circle", "blue square", "green star"]
    templates = ("a photo of a {}.", "a drawing of a {}.", "{}")
    img = image(7)
    got = dict(classify(clip, img, labels, templates))

    with torch.no_grad():
        rows = []
        for label in labels:
            tok = clip.tokenizer([t.format(label) for t in templates], padding=True, return_tensors="pt")
            e = clip.model.get_text_features(**tok).pooler_output
            e = e / e.norm(dim=-1, keepdim=True)
            m = e.mean(0)
            rows.append(m / m.norm())
        text = torch.stack(rows)
        px = clip.image_processor(images=[img], return_tensors="pt")["pixel_values"]
        im = clip.model.get_image_features(pixel_values=px).pooler_output
        im = im / im.norm(dim=-1, keepdim=True)
        want = (clip.model.logit_scale.exp() * im @ text.T).softmax(-1)[0]
    for label, p in zip(labels, want.tolist()):
        assert got[label] == pytest.approx(p, abs=1e-5)


def test_ensemble_differs_from_a_single_template():
    clip = tiny_clip()
    labels = ["red circle", "blue square"]
    one = label_embeddings(clip, labels, ("a photo of a {}.",))
    many = label_embeddings(clip, labels, DEFAULT_TEMPLATES)
    assert torch.allclose(one, clip.embed_texts(["a photo of a red circle.", "a photo of a blue square."]))
    assert not torch.allclose(one, many)
    assert torch.allclose(many.norm(dim=1), torch.ones(2), atol=1e-5)


def test_braces_in_labels_and_bad_templates():
    clip = tiny_clip()
    assert len(classify(clip, image(0), ["{0}", "{}{}"])) == 2
    with pytest.raises(ValueError, match="needs a"):
        classify(clip, image(0), ["a", "b"], templates=("no slot here",))


def test_the_discord_limit_stays_25_and_jobs_take_1000():
    from jobs.schemas import MAX_JOB_LABELS, ClassifyJob

    many = [f"label {i}" for i in range(MAX_JOB_LABELS)]
    with pytest.raises(JobError, match="the limit is 25"):
        validate_labels(many)
    assert len(validate_labels(many, max_labels=MAX_JOB_LABELS)) == 1000
    assert len(ClassifyJob(image="k", labels=many).labels) == 1000
    with pytest.raises(ValueError):
        ClassifyJob(image="k", labels=many + ["one more"])


def test_label_cache_embeds_only_new_labels_and_matches_the_uncached_vectors():
    from worker.clip.classify import LabelCache

    clip = tiny_clip()
    cache = LabelCache(clip, DEFAULT_TEMPLATES, size=3)
    prompts = []
    hook = clip.model.text_model.register_forward_hook(lambda m, i, o: prompts.append(o.last_hidden_state.shape[0]))
    try:
        a = cache(["cat", "dog"])
        b = cache(["dog", "cat", "bird"])  # only bird is new
        assert prompts == [16, 8]
        cache(["fish"])  # over the size: the least recently used (dog) goes
        assert len(cache) == 3
        prompts.clear()
        cache(["dog"])
        assert prompts == [8]
    finally:
        hook.remove()
    assert torch.equal(a[0], b[1]) and torch.equal(a[1], b[0])
    assert torch.allclose(b, label_embeddings(clip, ["dog", "cat", "bird"]), atol=1e-6)
    assert dict(classify(clip, image(3), ["cat", "dog"], cache=cache)) == pytest.approx(
        dict(classify(clip, image(3), ["cat", "dog"])), abs=1e-6)
