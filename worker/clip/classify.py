"""Zero-shot classification with prompt ensembling, as in the CLIP paper (Radford et al. 2021, sec. 3.1.4).

Each label is put into several templates ("a photo of a {}.", "a drawing of a {}."...); the
normalised text embeddings are averaged over templates and renormalised, giving one classifier
vector per label. The image's cosine similarity to each, times the model's logit scale, is
softmaxed into probabilities.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from PIL import Image

from jobs.validation.labels import validate_labels
from worker.clip.model import Clip

# Art channels post photos, drawings, paintings and renders: templates that cover those (a subset of
# the CLIP paper's 80), plus the bare label and "a {}", which is how the shipped shapes model was
# mostly captioned. No trailing periods: the shipped model never saw one. Override per worker in settings.
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "{}",
    "a {}",
    "a photo of a {}",
    "a picture of a {}",
    "an image of a {}",
    "a drawing of a {}",
    "a painting of a {}",
    "an illustration of a {}",
)


def validate_templates(templates: Sequence[str]) -> tuple[str, ...]:
    templates = tuple(templates)
    if not templates or any("{}" not in t for t in templates):
        raise ValueError(f"every prompt template needs a '{{}}' where the label goes: {templates!r}")
    return templates


def label_embeddings(clip: Clip, labels: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES) -> torch.Tensor:
    """[L, D] one unit vector per label: the renormalised mean of its template embeddings."""
    templates = validate_templates(templates)
    # replace, not format: a label may contain braces
    prompts = [t.replace("{}", label) for label in labels for t in templates]
    emb = clip.embed_texts(prompts).view(len(labels), len(templates), -1)
    return torch.nn.functional.normalize(emb.mean(dim=1), dim=-1)


def classify(
    clip: Clip, image: Image.Image, labels: str | Iterable[str], templates: Sequence[str] = DEFAULT_TEMPLATES
) -> list[tuple[str, float]]:
    """[(label, probability)] best first; probabilities sum to 1."""
    labels = validate_labels(labels)
    image_emb = clip.embed_images([image])  # [1, D]
    logits = clip.logit_scale * (image_emb @ label_embeddings(clip, labels, templates).T)[0]
    probs = logits.double().softmax(dim=0).tolist()
    return sorted(zip(labels, probs), key=lambda lp: lp[1], reverse=True)
