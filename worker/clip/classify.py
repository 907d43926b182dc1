"""Zero-shot classification with prompt ensembling, as in the CLIP paper (Radford et al. 2021, sec. 3.1.4).

Each label is put into several templates ("a photo of a {}.", "a drawing of a {}."...); the
normalised text embeddings are averaged over templates and renormalised, giving one classifier
vector per label. The image's cosine similarity to each, times the model's logit scale, is
softmaxed into probabilities.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence

import torch
from PIL import Image

from jobs.schemas import MAX_JOB_LABELS
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


LABEL_CACHE_SIZE = 20_000  # label vectors kept per worker: 20 ImageNet-sized sets, ~40 MB at 512 dims


def label_embeddings(clip: Clip, labels: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES,
                     cache: bool = True) -> torch.Tensor:
    """[L, D] one unit vector per label: the renormalised mean of its template embeddings."""
    templates = validate_templates(templates)
    # replace, not format: a label may contain braces
    prompts = [t.replace("{}", label) for label in labels for t in templates]
    emb = clip.embed_texts(prompts, cache=cache).view(len(labels), len(templates), -1)
    return torch.nn.functional.normalize(emb.mean(dim=1), dim=-1)


class LabelCache:
    """label -> its prompt-ensembled vector for one CLIP and one template set, LRU.

    Keyed per label rather than per prompt: 1,000 labels x 8 templates would overflow the CLIP's
    own text cache (which then evicts its oldest entries first and re-embeds everything), while
    1,000 label vectors fit. Labels not cached are embedded together, `TEXT_BATCH` prompts per pass.
    """

    def __init__(self, clip: Clip, templates: Sequence[str] = DEFAULT_TEMPLATES, size: int = LABEL_CACHE_SIZE):
        self.clip, self.templates, self.size = clip, validate_templates(templates), size
        self._rows: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._rows)

    def __call__(self, labels: Sequence[str]) -> torch.Tensor:
        with self._lock:
            found = {lab: self._rows[lab] for lab in labels if lab in self._rows}
            for lab in found:
                self._rows.move_to_end(lab)
        missing = list(dict.fromkeys(lab for lab in labels if lab not in found))
        if missing:
            fresh = dict(zip(missing, label_embeddings(self.clip, missing, self.templates, cache=False)))
            found.update(fresh)
            with self._lock:
                self._rows.update(fresh)
                while len(self._rows) > self.size:
                    self._rows.popitem(last=False)
        return torch.stack([found[lab] for lab in labels]) if labels else torch.empty(0, self.clip.dim)


def classify(
    clip: Clip, image: Image.Image, labels: str | Iterable[str], templates: Sequence[str] = DEFAULT_TEMPLATES,
    cache: LabelCache | None = None,
) -> list[tuple[str, float]]:
    """[(label, probability)] best first; probabilities sum to 1. Up to MAX_JOB_LABELS labels.

    cache: label vectors reused across calls (must be for this clip and these templates).
    """
    labels = validate_labels(labels, max_labels=MAX_JOB_LABELS)
    image_emb = clip.embed_images([image])  # [1, D]
    if cache is not None and cache.templates != tuple(templates):
        raise ValueError("the label cache was built for other templates")
    text = cache(labels) if cache is not None else label_embeddings(clip, labels, templates)
    logits = clip.logit_scale * (image_emb @ text.T)[0]
    probs = logits.double().softmax(dim=0).tolist()
    return sorted(zip(labels, probs), key=lambda lp: lp[1], reverse=True)
