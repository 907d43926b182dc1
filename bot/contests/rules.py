"""What /contest start accepts, and who may vote. Pure functions; refusals say what to change."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

MAX_THEME_CHARS = 200
MAX_MINUTES = 10_080  # one week
MIN_ENTRIES, MAX_ENTRIES = 1, 10
MAX_MEMBER_DAYS = 3650


class ContestRefused(Exception):
    """A request about a contest that we will not do; str(e) is the private answer."""


@dataclass(frozen=True)
class ContestRequest:
    theme: str  # as typed, whitespace collapsed: escape it for display (render.py)
    minutes: int
    entries: int
    min_member_days: int


def validate_request(theme: str | None, minutes: int, entries: int = 1, min_member_days: int = 0) -> ContestRequest:
    """Raises ContestRefused with the reason."""
    text = " ".join((theme or "").split())
    if not text:
        raise ContestRefused("A contest needs a theme: say what the entries should show, e.g. `theme: a red circle`.")
    if len(text) > MAX_THEME_CHARS:
        raise ContestRefused(f"The theme is {len(text)} characters long; the limit is {MAX_THEME_CHARS}.")
    if minutes <= 0:
        raise ContestRefused("A contest must run for at least 1 minute.")
    if minutes > MAX_MINUTES:
        raise ContestRefused(f"A contest may run for at most {MAX_MINUTES:,} minutes (one week); you asked for {minutes:,}.")
    if not MIN_ENTRIES <= entries <= MAX_ENTRIES:
        raise ContestRefused(f"Entries per member must be between {MIN_ENTRIES} and {MAX_ENTRIES}; you asked for {entries}.")
    if not 0 <= min_member_days <= MAX_MEMBER_DAYS:
        raise ContestRefused(f"The membership age for voting must be between 0 and {MAX_MEMBER_DAYS} days; "
                             f"you asked for {min_member_days}.")
    return ContestRequest(text, minutes, entries, min_member_days)


def joined_timestamp(joined_at: dt.datetime | None) -> float | None:
    """A member's joined_at (aware, or naive meaning UTC) as unix seconds; None when unknown."""
    if joined_at is None:
        return None
    if joined_at.tzinfo is None:
        joined_at = joined_at.replace(tzinfo=dt.UTC)
    return joined_at.timestamp()


def may_vote(joined_at: dt.datetime | None, min_member_days: int, now: float) -> bool:
    """Members who joined at least `min_member_days` ago; with 0 days everyone, even if unknown."""
    if min_member_days <= 0:
        return True
    joined = joined_timestamp(joined_at)
    return joined is not None and joined + min_member_days * 86400 <= now
