"""The seam between the engines (CLIP, VQGAN+CLIP) and whatever runs them.

Engines are plain synchronous code that takes a validated job and a `JobContext` and returns
an `Outcome`. They never see Redis, Discord or the CLI. Two things run them:

* the queue worker (`worker.loop`), whose context publishes Progress events to Redis and reads
  the cancel flag there;
* the local CLI without `--redis` (`worker.cli`), whose context draws a progress bar.

A `Runner` is what the CLI talks to: in-process or through the queue, the same calls.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from jobs.schemas import Event, Job
from jobs.validation import JobError  # defined with the input checks that raise it; part of this API


class JobCancelled(Exception):
    """Raised by an engine when `ctx.cancelled()` turned true between steps."""


@dataclass
class Outcome:
    """What a finished job produced: JSON-able data and named binary blobs (PNG, GIF...)."""

    data: dict[str, Any]
    blobs: dict[str, bytes] = field(default_factory=dict)


class JobContext(Protocol):
    job: Job

    def progress(
        self, step: int, total: int, loss: float | None = None, preview_png: bytes | None = None
    ) -> None:
        """Report progress. Cheap to call every step: the context rate-limits what it sends."""

    def cancelled(self) -> bool:
        """True once someone asked to cancel this job. Engines check it between steps."""

    def blob(self, key: str) -> bytes:
        """Bytes of a blob the job references. Raises JobError if it expired or is missing."""


class QuietContext:
    """A JobContext for running an engine directly (benchmarks, evaluation): blobs from a dict,
    progress dropped, never cancelled."""

    def __init__(self, blobs: dict[str, bytes] | None = None, job: Job | None = None):
        self.job = job
        self.blobs = blobs or {}

    def progress(self, step: int, total: int, loss: float | None = None, preview_png: bytes | None = None) -> None:
        pass

    def cancelled(self) -> bool:
        return False

    def blob(self, key: str) -> bytes:
        try:
            return self.blobs[key]
        except KeyError:
            raise JobError(f"blob {key} is missing") from None


class Runner(Protocol):
    def put_blob(self, data: bytes) -> str:
        """Store bytes the job will reference (an image to classify, an init image); returns its key."""

    def run(self, job: Job, on_event: Callable[[Event], None] | None = None) -> Outcome:
        """Run one job to its end. Raises JobError on Failed, JobCancelled on Cancelled."""
