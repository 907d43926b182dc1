"""Contest entries and their order: score = up - down; ties go to fewer downs, then the earlier entry."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    contest_id: str
    job_id: str
    number: int  # admission order within the contest: "Entry #3"; lower = earlier
    author: int
    seed: int | None
    entered_at: float
    message_id: int | None = None  # set once the finished picture is posted
    up: int = 0
    down: int = 0
    flagged: bool = False  # the safety check marked the picture: never in the hall of fame

    @property
    def score(self) -> int:
        return self.up - self.down

    @property
    def posted(self) -> bool:
        return self.message_id is not None


def sort_key(e: Entry) -> tuple:
    return (-e.score, e.down, e.number)


def rank(entries: Iterable[Entry]) -> list[Entry]:
    """Posted entries, best first (unfinished ones have no picture to rank)."""
    return sorted((e for e in entries if e.posted), key=sort_key)


def winner(ranked: list[Entry]) -> Entry | None:
    """The hall-of-fame pick: the best entry the safety check did not flag."""
    return next((e for e in ranked if not e.flagged), None)
