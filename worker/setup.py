"""What a worker runs: the handlers and engines a factory (`CLIPBOT_HANDLERS=module:function`)
builds from the Settings, and loading that factory."""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from jobs.keys import FAST, IMAGINE
from jobs.schemas import Job
from worker.api import JobContext, Outcome

Handler = Callable[[Job, JobContext], Outcome]


class BatchEngine(Protocol):
    """An engine that optimises several jobs at once (VQGAN+CLIP). All methods are sync."""

    capacity: int  # most jobs at once

    @property
    def active(self) -> int: ...

    def add(self, job: Job, ctx: JobContext) -> None:
        """Start a job (may raise JobError for bad input: the job fails at once)."""

    def step(self) -> None:
        """One optimisation step for every active job. Per-job failures and cancellations are
        reported by pop_finished, not raised; raising here means the engine itself is broken."""

    def pop_finished(self) -> list[tuple[Job, Outcome | BaseException]]:
        """Jobs that ended since the last call, with their Outcome or exception
        (JobError, JobCancelled, or anything else = unexpected)."""


@dataclass
class WorkerSetup:
    """What a handlers factory (`CLIPBOT_HANDLERS=module:function`) returns."""

    handlers: dict[str, Handler] = field(default_factory=dict)  # kind -> handler
    imagine_engine: BatchEngine | None = None  # takes imagine jobs instead of handlers["imagine"]
    models: list[str] = field(default_factory=list)  # shown in the registry
    device: str = "cpu"
    close: Callable[[], None] | None = None

    def lanes(self) -> list[str]:
        kinds = set(self.handlers)
        out = [FAST] if kinds & {"classify", "index", "find"} else []
        if self.imagine_engine is not None or "imagine" in kinds:
            out.append(IMAGINE)
        return out


def load_setup(spec: str, settings) -> WorkerSetup:
    """Build the worker's handlers from 'module:function'; the function takes the Settings and
    returns a WorkerSetup (or a plain dict kind -> handler)."""
    mod_name, _, fn_name = spec.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        if e.name and mod_name.startswith(e.name):
            raise RuntimeError(f"CLIPBOT_HANDLERS={spec!r}: module {mod_name} not found") from e
        raise
    fn = getattr(mod, fn_name or "build", None)
    if fn is None:
        raise RuntimeError(f"CLIPBOT_HANDLERS={spec!r}: {mod_name} has no function {fn_name or 'build'}")
    setup = fn(settings)
    return setup if isinstance(setup, WorkerSetup) else WorkerSetup(handlers=dict(setup))
