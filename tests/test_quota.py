"""Daily generation quotas on a real Redis: atomic reservations, refunds, the UTC day, the texts."""
from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from bot.guild_config import GuildConfig, parse_safety_labels
from bot.quota import quota_refusal, quota_status, resets_in
from jobs.quota import QUOTA_LUA_FN, DailyQuota, day_of, next_reset
from jobs.schemas import SafetyPolicy
from jobs.settings import Settings


def utc(*args) -> float:
    return dt.datetime(*args, tzinfo=dt.UTC).timestamp()


NOON = utc(2026, 11, 29, 12, 0, 0)  # for the pure functions: a fixed day reads best

# Redis expires a day's set at a real moment (EXPIREAT, next midnight + 1 h): the days the Redis
# tests count in must lie ahead of the real clock, or their sets vanish as they are written.
DAY = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).replace(hour=0, minute=0, second=0, microsecond=0)


def at(days: int = 0, hours: int = 0, minutes: int = 0, seconds: int = 0) -> float:
    """A moment of DAY (or a day after it), as unix seconds."""
    return (DAY + dt.timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)).timestamp()


DAY_NOON = at(hours=12)


async def test_fifty_concurrent_reservations_against_three_admit_exactly_three(redis_client):
    q = DailyQuota(redis_client)
    results = await asyncio.gather(*(q.reserve(1, 7, f"job{i}", 3, now=DAY_NOON) for i in range(50)))
    ok = [r for r in results if r.ok]
    assert len(ok) == 3 and sorted(r.used for r in ok) == [1, 2, 3]
    assert all(r.used == 3 and r.left == 0 for r in results if not r.ok)
    assert await q.used(1, 7, now=DAY_NOON) == 3


async def test_reserve_is_idempotent_per_job_and_refund_frees_a_slot_once(redis_client):
    q = DailyQuota(redis_client)
    a = await q.reserve(1, 7, "a", 2, now=DAY_NOON)
    again = await q.reserve(1, 7, "a", 2, now=DAY_NOON)  # a retried submit of the same job
    assert a.ok and again.ok and again.used == 1
    b = await q.reserve(1, 7, "b", 2, now=DAY_NOON)
    assert b.ok and b.left == 0
    assert not (await q.reserve(1, 7, "c", 2, now=DAY_NOON)).ok
    assert await q.refund(b) and not await q.refund(b)  # a second refund gives nothing back
    assert (await q.reserve(1, 7, "c", 2, now=DAY_NOON)).ok


async def test_members_servers_and_days_are_counted_apart(redis_client):
    q = DailyQuota(redis_client)
    assert (await q.reserve(1, 7, "a", 1, now=DAY_NOON)).ok
    assert not (await q.reserve(1, 7, "b", 1, now=DAY_NOON)).ok
    assert (await q.reserve(1, 8, "b", 1, now=DAY_NOON)).ok  # another member
    assert (await q.reserve(2, 7, "b", 1, now=DAY_NOON)).ok  # another server
    tomorrow = at(days=1, seconds=1)
    assert (await q.reserve(1, 7, "c", 1, now=tomorrow)).ok  # a new UTC day


async def test_a_refund_after_midnight_goes_back_to_the_day_it_was_counted(redis_client):
    q = DailyQuota(redis_client)
    late = await q.reserve(1, 7, "late", 1, now=at(hours=23, minutes=59, seconds=59))
    early = await q.reserve(1, 7, "early", 1, now=at(days=1, seconds=1))
    assert late.ok and early.ok
    assert await q.refund(late)
    assert await q.used(1, 7, now=at(days=1, seconds=2)) == 1  # today's count untouched


async def test_unlimited_records_nothing_and_the_day_set_expires_after_midnight(redis_client):
    q = DailyQuota(redis_client)
    r = await q.reserve(1, 7, "a", 0, now=DAY_NOON)
    assert r.ok and r.left is None and await q.used(1, 7, now=DAY_NOON) == 0
    import time

    now = time.time()
    await q.reserve(1, 7, "b", 5, now=now)
    ttl = await redis_client.ttl(q.key(1, 7, day_of(now)))
    assert next_reset(now) - now < ttl <= next_reset(now) - now + 3601


async def test_the_lua_function_folds_into_another_script(redis_client):
    """How the submit script uses it: one script, the quota checked next to other conditions."""
    script = redis_client.register_script(QUOTA_LUA_FN + """
local r = quota_take(KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]))
if r[1] == 0 then return {0, 'quota', r[2]} end
redis.call('SET', KEYS[2], ARGV[1])
return {1, 'ok', r[2]}
""")
    q = DailyQuota(redis_client)
    key, args = q.submit_seam(1, 7, "j1", 1, now=DAY_NOON)
    assert await script(keys=[key, "submitted"], args=args) == [1, b"ok", 1]
    key, args = q.submit_seam(1, 7, "j2", 1, now=DAY_NOON)
    assert await script(keys=[key, "submitted"], args=args) == [0, b"quota", 1]
    assert await redis_client.get("submitted") == b"j1"


def test_day_and_reset_are_utc():
    assert day_of(utc(2026, 11, 29, 23, 59, 59)) == "20261129" and day_of(utc(2026, 11, 30)) == "20261130"
    assert next_reset(NOON) == utc(2026, 11, 30) and next_reset(utc(2026, 12, 31, 23)) == utc(2027, 1, 1)


def test_texts():
    assert resets_in(utc(2026, 11, 29, 16, 54, 30)) == "7h 06m"
    assert resets_in(utc(2026, 11, 29, 23, 59, 59)) == "1m"
    text = quota_status(3, 5, utc(2026, 11, 29, 22, 30))
    assert "**2** of 5 generations left today" in text and "midnight UTC, in 1h 30m" in text
    assert "**1** of 5 generation left" in quota_status(4, 5, NOON)
    assert "**0** of 5" in quota_status(9, 5, NOON)
    assert "no daily generation limit" in quota_status(0, 0, NOON)
    assert "exempt" in quota_status(9, 5, NOON, exempt=True)
    assert quota_refusal(1, NOON) == ("You have used your 1 generation for today on this server. "
                                      "The count resets at midnight UTC, in 12h 00m.")


def test_guild_config_quota_and_exempt_role():
    s = Settings(daily_quota=4)
    assert GuildConfig().quota(s) == 4
    assert GuildConfig(daily_quota=0).quota(s) == 0
    cfg = GuildConfig(daily_quota=2, quota_exempt_role=55)
    assert cfg.quota(s, [1, 2]) == 2 and cfg.quota(s, [1, 55]) == 0


def test_guild_config_safety_policy():
    s = Settings()
    assert GuildConfig().safety_policy(s) is None  # off unless labels are set somewhere
    assert GuildConfig(safety_labels=["a red star"]).safety_policy(s) == SafetyPolicy(labels=["a red star"], threshold=0.5)
    s2 = Settings(safety_labels="gore, graphic violence", safety_threshold=0.7)
    assert GuildConfig().safety_policy(s2) == SafetyPolicy(labels=["gore", "graphic violence"], threshold=0.7)
    assert GuildConfig(safety_labels=[]).safety_policy(s2) is None  # a server can turn it off
    assert GuildConfig(safety_threshold=0.9).safety_policy(s2).threshold == 0.9
    assert parse_safety_labels(" Gore ,gore,\n graphic   violence,, ") == ["Gore", "graphic violence"]
    with pytest.raises(ValueError, match="limit is 100"):
        parse_safety_labels("x" * 101)
    with pytest.raises(ValueError, match="26 safety labels; the limit is 25"):
        parse_safety_labels(",".join(f"l{i}" for i in range(26)))


def test_readme_lists_the_default_safety_labels():
    from pathlib import Path

    from jobs.schemas import DEFAULT_SAFETY_LABELS

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert f'CLIPBOT_SAFETY_LABELS="{", ".join(DEFAULT_SAFETY_LABELS)}"' in readme
    assert parse_safety_labels(", ".join(DEFAULT_SAFETY_LABELS)) == list(DEFAULT_SAFETY_LABELS)
