"""Weighted text prompts: "a red circle | a blue star:0.5 | something:-1".

`|` separates prompts. Each may end in `:weight` (a number; negative pushes the image away
from that text). A colon that is not followed by a number up to the end stays part of the
text, so "portrait: oil" is one prompt of weight 1 and "portrait: oil:2" has weight 2.
Errors are `JobError`s whose message is shown to the user as is.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from jobs.schemas import MAX_PROMPT_CHARS, MAX_WEIGHT
from jobs.validation import JobError

MAX_PROMPTS = 8

# A trailing ":<number>", where number is anything float() reads that looks like a number
# (inf/nan included, so that they are rejected with a clear message instead of becoming text).
_TRAILING_WEIGHT = re.compile(
    r":\s*([+-]?(?:\d*\.?\d+(?:e[+-]?\d+)?|\d+\.|inf(?:inity)?|nan))\s*$",
    re.IGNORECASE | re.ASCII,
)


@dataclass(frozen=True)
class Prompt:
    text: str
    weight: float = 1.0

    def __str__(self) -> str:
        return self.text if self.weight == 1.0 else f"{self.text}:{self.weight:g}"


def split_weight(part: str) -> tuple[str, float]:
    """'a blue star:0.5' -> ('a blue star', 0.5); 'portrait: oil' -> ('portrait: oil', 1.0)."""
    match = _TRAILING_WEIGHT.search(part)
    if match is None:
        return part.strip(), 1.0
    return part[: match.start()].strip(), float(match.group(1))


def parse_prompts(raw: str) -> list[Prompt]:
    """Parse a prompt string into weighted prompts, or raise JobError saying what to fix."""
    if len(raw) > MAX_PROMPT_CHARS:
        raise JobError(f"The prompt is {len(raw)} characters long; the limit is {MAX_PROMPT_CHARS}.")
    if not raw.strip():
        raise JobError("The prompt is empty: describe the picture, e.g. 'a red circle | a blue star:0.5'.")
    parts = raw.split("|")
    if len(parts) > MAX_PROMPTS:
        raise JobError(f"The prompt has {len(parts)} parts separated by '|'; the limit is {MAX_PROMPTS}.")
    prompts = []
    for i, part in enumerate(parts, 1):
        text, weight = split_weight(part)
        where = f"prompt {i} of {len(parts)}" if len(parts) > 1 else "the prompt"
        if not text:
            raise JobError(
                f"{where.capitalize()} is empty ({part.strip()!r}): write some text before any ':weight' "
                "and remove stray '|'."
            )
        if not math.isfinite(weight):
            raise JobError(f"The weight of {where} ({text!r}) must be a finite number, not {weight}.")
        if abs(weight) > MAX_WEIGHT:
            raise JobError(
                f"The weight of {where} ({text!r}) is {weight:g}; weights must lie between "
                f"-{MAX_WEIGHT:g} and {MAX_WEIGHT:g}."
            )
        prompts.append(Prompt(text, weight))
    total = math.fsum(p.weight for p in prompts)
    if abs(total) < 1e-6:
        raise JobError(
            "The prompt weights sum to zero, so there is nothing to aim for: "
            "give at least one prompt a positive weight (e.g. 'a red circle | a blue star:-0.5')."
        )
    return prompts
