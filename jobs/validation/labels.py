"""Label validation for /classify, shared by the bot (before queueing) and the worker (before running).

Torch-free on purpose: the bot imports this and never loads a model.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

from jobs.schemas import MAX_LABEL_CHARS, MAX_LABELS, MIN_LABELS
from jobs.validation import JobError


def validate_labels(labels: str | Iterable[str], max_labels: int = MAX_LABELS) -> list[str]:
    """Clean user labels: a comma-separated string or a list -> 2..max_labels distinct labels of 1..100 chars.

    max_labels: 25 (a Discord option) by default; jobs and the CLI pass `MAX_JOB_LABELS` (1,000).

    Whitespace is collapsed, empty entries dropped, duplicates merged case-insensitively (the first
    spelling is kept). Raises JobError with a message meant for the user. The bot calls this before
    queueing, the worker again before running.
    """
    if isinstance(labels, str):
        labels = labels.split(",")
    seen: dict[str, str] = {}
    for raw in labels:
        label = re.sub(r"\s+", " ", str(raw)).strip()
        if not label:
            continue
        if len(label) > MAX_LABEL_CHARS:
            raise JobError(
                f"The label {label[:40]!r}... is {len(label)} characters long; each label can have at most "
                f"{MAX_LABEL_CHARS}."
            )
        seen.setdefault(label.casefold(), label)
    cleaned = list(seen.values())
    if len(cleaned) < MIN_LABELS:
        got = f" (got only {cleaned[0]!r})" if cleaned else ""
        raise JobError(
            f"Give at least {MIN_LABELS} different labels, separated by commas{got}: "
            "e.g. \"cat, dog, bird\"."
        )
    if len(cleaned) > max_labels:
        raise JobError(f"Too many labels: {len(cleaned):,} different ones; the limit is {max_labels:,}.")
    return cleaned
