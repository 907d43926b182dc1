"""The safety check: an image scored zero-shot against a server's safety labels plus neutral labels.

The CLIP a worker already loaded does the scoring, with the same prompt-ensembled classifier as
/classify (`worker.clip.classify`). Neutral labels give the softmax somewhere to put an ordinary
picture, so a safety label wins only when the image really looks like it: the verdict is
"flagged" when the likeliest safety label's probability reaches the policy's threshold.

Every decision is logged (INFO, or WARNING when flagged) with the scores, so moderators can tune
labels and threshold from the worker's log.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from PIL import Image

from jobs.schemas import SafetyPolicy, SafetyVerdict
from jobs.validation import JobError
from worker.clip.classify import DEFAULT_TEMPLATES, label_embeddings
from worker.clip.model import Clip

log = logging.getLogger(__name__)

# What most pictures in an art channel are. Measured with the shipped CLIP: against these, a red
# star scores 0.99 for "a red star" and a blue square 0.000 (tests/test_clip_safety.py).
NEUTRAL_LABELS: tuple[str, ...] = (
    "a photo", "a drawing", "a painting", "an illustration", "a pattern", "a plain background",
    "a person", "an animal", "a landscape", "text",
)

REFUSAL = ("This image was refused by this server's safety check (it looks like {label!r}). "
           "If that is a mistake, ask a moderator to adjust /config safety_labels or safety_threshold.")


def _labels(policy: SafetyPolicy, neutral: Sequence[str]) -> tuple[list[str], list[str]]:
    """Safety labels and the neutral ones that do not repeat them (case-insensitive), both deduplicated."""
    seen: set[str] = set()
    safety, others = [], []
    for label in policy.labels:
        key = label.strip().casefold()
        if key and key not in seen:
            seen.add(key)
            safety.append(label.strip())
    for label in neutral:
        key = label.strip().casefold()
        if key and key not in seen:
            seen.add(key)
            others.append(label.strip())
    return safety, others


def _as_pil(image: Image.Image | torch.Tensor) -> Image.Image:
    """A PIL image, or a [3, H, W] / [1, 3, H, W] tensor in [0, 1]."""
    if isinstance(image, Image.Image):
        return image
    x = image.detach().float().cpu()
    if x.dim() == 4:
        if x.shape[0] != 1:
            raise ValueError(f"score one image at a time, got a batch of {x.shape[0]}")
        x = x[0]
    if x.dim() != 3 or x.shape[0] != 3:
        raise ValueError(f"expected a [3, H, W] tensor in [0, 1], got {tuple(image.shape)}")
    arr = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(arr, "RGB")


def check(clip: Clip, image: Image.Image | torch.Tensor, policy: SafetyPolicy, *,
          neutral: Sequence[str] = NEUTRAL_LABELS, templates: Sequence[str] = DEFAULT_TEMPLATES,
          what: str = "image") -> SafetyVerdict:
    """Score `image` against the policy's labels plus `neutral`; flagged when the best safety
    label's probability >= policy.threshold. `what` names the image in the log line."""
    safety, others = _labels(policy, neutral)
    labels = safety + others
    emb = clip.embed_images([_as_pil(image)])
    logits = clip.logit_scale * (emb @ label_embeddings(clip, labels, templates).T)[0]
    probs = logits.double().softmax(dim=0).tolist()
    scores = {label: round(p, 6) for label, p in zip(labels, probs)}
    top = max(safety, key=lambda label: scores[label])
    verdict = SafetyVerdict(flagged=scores[top] >= policy.threshold, top_label=top,
                            top_score=min(max(scores[top], 0.0), 1.0), threshold=policy.threshold, scores=scores)
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])[:5]
    log.log(logging.WARNING if verdict.flagged else logging.INFO,
            "safety %s: %s (%r %.3f, threshold %.2f; top: %s)", what, "FLAGGED" if verdict.flagged else "ok",
            top, scores[top], policy.threshold, ", ".join(f"{k!r} {v:.3f}" for k, v in ranked))
    return verdict


def refuse_if_flagged(clip: Clip, image: Image.Image | torch.Tensor, policy: SafetyPolicy | None, *,
                      what: str = "image", **kw) -> SafetyVerdict | None:
    """For uploads: raise JobError (the member is told privately) when flagged; None without a policy."""
    if policy is None:
        return None
    verdict = check(clip, image, policy, what=what, **kw)
    if verdict.flagged:
        raise JobError(REFUSAL.format(label=verdict.top_label))
    return verdict
