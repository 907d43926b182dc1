"""What members read about their daily generation quota (/quota and refusals). Pure functions.

The counting itself is `jobs.quota.DailyQuota` (shared with the queue's submit script); which
limit applies to a member is `GuildConfig.quota(settings, role_ids)`. Quotas reset at midnight UTC.
"""
from __future__ import annotations

import math

from jobs.quota import next_reset


def resets_in(now: float) -> str:
    """'7h 05m' until the next midnight UTC (minutes rounded up, so it never says 0m too early)."""
    minutes = max(1, math.ceil((next_reset(now) - now) / 60))
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m"


def quota_status(used: int, limit: int, now: float, exempt: bool = False) -> str:
    """The /quota answer."""
    if exempt:
        return "You have no daily generation limit here (your role is exempt)."
    if limit <= 0:
        return "This server has no daily generation limit."
    left = max(limit - used, 0)
    noun = "generation" if left == 1 else "generations"
    return (f"You have **{left}** of {limit} {noun} left today. "
            f"The count resets at midnight UTC, in {resets_in(now)}.")


def quota_refusal(limit: int, now: float) -> str:
    """The private answer when a member's quota for today is used up."""
    noun = "generation" if limit == 1 else "generations"
    return (f"You have used your {limit} {noun} for today on this server. "
            f"The count resets at midnight UTC, in {resets_in(now)}.")
