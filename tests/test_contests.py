"""Contests on a real Redis: one per channel, race-free entries, fair votes, the ranking, the rules."""
from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from bot.contests import render
from bot.contests.ranking import Entry, rank, winner
from bot.contests.rules import ContestRefused, may_vote, validate_request
from bot.contests.store import ContestStore

T0 = 1_800_000_000.0
GUILD, CHANNEL, THREAD, HOST = 10, 20, 21, 1
BIG = 987654321987654321  # Discord ids are above 2**53: they must not be rounded anywhere


async def open_contest(store: ContestStore, minutes=60, entries=1, days=0, channel=CHANNEL, thread=THREAD, theme="a red circle"):
    created = await store.create(validate_request(theme, minutes, entries, days), guild=GUILD, channel=channel,
                                 created_by=HOST, steps=50, width=64, height=64, now=T0)
    assert created.ok
    if thread is not None:
        await store.set_thread(created.contest_id, thread)
    return created.contest_id


async def enter(store, cid, job, author, message_id, now=T0 + 10, flagged=False):
    a = await store.admit_entry(cid, job, author, seed=1234, now=now)
    assert a.ok, a
    assert await store.entry_posted(cid, job, message_id, flagged=flagged) == "posted"
    return a.number


@pytest.fixture
def store(redis_client):
    return ContestStore(redis_client)


# ------------------------------------------------------------------ rules

@pytest.mark.parametrize("theme,minutes,entries,days,match", [
    ("", 60, 1, 0, "needs a theme"), ("   \n ", 60, 1, 0, "needs a theme"),
    ("x" * 201, 60, 1, 0, "201 characters long; the limit is 200"),
    ("cats", 0, 1, 0, "at least 1 minute"), ("cats", -5, 1, 0, "at least 1 minute"),
    ("cats", 10_081, 1, 0, "at most 10,080 minutes"),
    ("cats", 60, 0, 0, "between 1 and 10"), ("cats", 60, 11, 0, "between 1 and 10"),
    ("cats", 60, 1, -1, "between 0 and 3650 days"), ("cats", 60, 1, 3651, "between 0 and 3650 days"),
])
def test_bad_requests_get_a_clear_answer(theme, minutes, entries, days, match):
    with pytest.raises(ContestRefused, match=match):
        validate_request(theme, minutes, entries, days)


def test_good_request_is_normalised():
    r = validate_request("  a  red\ncircle ", 10_080, 10, 3650)
    assert (r.theme, r.minutes, r.entries, r.min_member_days) == ("a red circle", 10_080, 10, 3650)


def test_may_vote():
    now = dt.datetime(2026, 11, 29, tzinfo=dt.UTC)
    assert may_vote(None, 0, now.timestamp())
    assert not may_vote(None, 1, now.timestamp())
    assert may_vote(now - dt.timedelta(days=7), 7, now.timestamp())
    assert not may_vote(now - dt.timedelta(days=6, hours=23), 7, now.timestamp())
    assert may_vote((now - dt.timedelta(days=8)).replace(tzinfo=None), 7, now.timestamp())  # naive = UTC


# ------------------------------------------------------------------ one contest per channel

async def test_one_contest_per_channel_even_when_started_at_once(store):
    req = validate_request("a blue star", 30)
    results = await asyncio.gather(*(store.create(req, guild=GUILD, channel=CHANNEL, created_by=u, steps=50, width=64,
                                                  height=64, now=T0) for u in range(10)))
    winners = [r for r in results if r.ok]
    assert len(winners) == 1
    assert all(r.contest_id == winners[0].contest_id for r in results)
    other = await store.create(req, guild=GUILD, channel=CHANNEL + 100, created_by=1, steps=50, width=64, height=64, now=T0)
    assert other.ok  # another channel is free


async def test_contest_round_trip_and_lookups(store):
    cid = await open_contest(store, minutes=90, entries=3, days=7, channel=BIG, thread=BIG + 1)
    c = await store.get(cid)
    assert (c.guild, c.channel, c.thread, c.theme, c.entries_limit, c.min_member_days) == (GUILD, BIG, BIG + 1, "a red circle", 3, 7)
    assert (c.steps, c.width, c.height, c.state, c.opens_at, c.closes_at) == (50, 64, 64, "open", T0, T0 + 5400)
    assert (await store.for_channel(BIG)).id == cid and (await store.for_channel(BIG + 1)).id == cid
    assert (await store.for_thread(BIG + 1)).id == cid and await store.for_thread(BIG) is None
    # a contest cannot be started inside a contest's thread
    inside = await store.create(validate_request("x", 5), guild=GUILD, channel=BIG + 1, created_by=1, steps=50,
                                width=64, height=64, now=T0)
    assert not inside.ok and inside.contest_id == cid


async def test_abandon_frees_the_channel(store):
    created = await store.create(validate_request("x", 5), guild=GUILD, channel=CHANNEL, created_by=1, steps=50,
                                 width=64, height=64, now=T0)
    await store.abandon(created.contest_id)
    assert await store.get(created.contest_id) is None and await store.due(T0 + 1e6) == []
    assert (await store.create(validate_request("y", 5), guild=GUILD, channel=CHANNEL, created_by=1, steps=50,
                               width=64, height=64, now=T0)).ok


# ------------------------------------------------------------------ entries

async def test_five_simultaneous_entries_with_a_limit_of_one_admit_exactly_one(store):
    cid = await open_contest(store, entries=1)
    results = await asyncio.gather(*(store.admit_entry(cid, f"job{i}", BIG, seed=i, now=T0 + 1) for i in range(5)))
    assert [r.status for r in results].count("admitted") == 1
    assert sorted(r.status for r in results if not r.ok) == ["limit"] * 4
    assert await store.entry_count(cid, BIG) == 1 and len(await store.entries(cid)) == 1
    # another member still gets in, and entry numbers follow admission order
    other = await store.admit_entry(cid, "jobX", 5, seed=None, now=T0 + 2)
    assert other.ok and other.number == 2


async def test_entry_limit_is_per_member_and_admission_is_idempotent(store):
    cid = await open_contest(store, entries=2)
    a = await store.admit_entry(cid, "a", 7, seed=1, now=T0 + 1)
    again = await store.admit_entry(cid, "a", 7, seed=1, now=T0 + 1)
    assert a.ok and again.ok and again.status == "again" and again.number == a.number
    assert (await store.admit_entry(cid, "b", 7, seed=1, now=T0 + 1)).ok
    refused = await store.admit_entry(cid, "c", 7, seed=1, now=T0 + 1)
    assert not refused.ok and refused.status == "limit" and refused.number == 2
    c = await store.get(cid)
    assert render.admission_refusal(c, refused) == "You have already entered this contest 2 times; the limit is 2 entries per member."


async def test_withdrawn_entries_free_the_slot_but_posted_ones_do_not(store):
    cid = await open_contest(store, entries=1)
    assert (await store.admit_entry(cid, "a", 7, seed=1, now=T0 + 1)).ok
    assert await store.withdraw_entry(cid, "a")  # e.g. the queue refused it
    assert not await store.withdraw_entry(cid, "a")
    assert (await store.admit_entry(cid, "b", 7, seed=1, now=T0 + 1)).ok
    assert await store.entry_posted(cid, "b", 555) == "posted"
    assert not await store.withdraw_entry(cid, "b")
    assert not (await store.admit_entry(cid, "c", 7, seed=1, now=T0 + 1)).ok


async def test_no_entries_after_the_closing_time(store):
    cid = await open_contest(store, minutes=10)
    late = await store.admit_entry(cid, "late", 7, seed=1, now=T0 + 600)
    assert not late.ok and late.status == "closed"
    assert render.admission_refusal(await store.get(cid), late) == "This contest is closed: it takes no more entries."
    assert (await store.admit_entry("nope", "x", 7, seed=1, now=T0)).status == "missing"


# ------------------------------------------------------------------ votes

async def test_vote_rules(store):
    cid = await open_contest(store, days=7)
    await enter(store, cid, "a", author=BIG, message_id=BIG + 5)
    old = dt.datetime.fromtimestamp(T0 - 30 * 86400, dt.UTC)
    new = dt.datetime.fromtimestamp(T0 - 2 * 86400, dt.UTC)
    now = T0 + 100

    async def vote(voter, up=True, add=True, joined=old, at=now):
        return await store.vote(BIG + 5, voter, up=up, add=add, joined_at=joined, now=at)

    assert (await vote(BIG)).status == "own"
    assert (await vote(2, joined=new)).status == "too_new"
    assert (await vote(2, joined=None)).status == "too_new"
    v = await vote(2)
    assert (v.status, v.up, v.down, v.contest_id, v.job_id) == ("counted", 1, 0, cid, "a")
    assert (await vote(2)).status == "unchanged"  # one vote per member: a repeat counts nothing
    v = await vote(2, up=False)  # a member who reacts 👎 too changes their vote, it does not add one
    assert (v.status, v.up, v.down) == ("switched", 0, 1)
    assert (await vote(2, up=True, add=False)).status == "unchanged"  # removing the old reaction: still 👎
    v = await vote(2, up=False, add=False, joined=None)  # a removal event carries no member: it still removes
    assert (v.status, v.up, v.down) == ("removed", 0, 0)
    assert (await vote(3)).status == "counted" and (await vote(4, up=False)).status == "counted"
    assert (await store.vote(999, 3, up=True, add=True, now=now)).status == "not_entry"
    # after the closing time, and after /contest end
    late = await vote(5, at=T0 + 3600)
    assert (late.status, late.up, late.down) == ("closed", 1, 1)
    c = await store.get(cid)
    assert render.vote_answer(c, late) == "This contest is closed: votes are no longer counted."
    assert render.vote_answer(c, await vote(2, joined=new)) == (
        "Only members who joined the server at least 7 days ago can vote in this contest.")
    assert render.vote_answer(c, await vote(BIG)) == "You can't vote on your own entry."
    assert await store.end_now(cid, now=now + 1) == "ending"
    assert (await vote(6, at=now + 2)).status == "closed"
    [e] = await store.entries(cid)
    assert (e.up, e.down, e.author, e.message_id) == (1, 1, BIG, BIG + 5)


async def test_concurrent_votes_of_one_member_count_once(store):
    cid = await open_contest(store)
    await enter(store, cid, "a", author=1, message_id=77)
    results = await asyncio.gather(*(store.vote(77, 2, up=True, add=True, now=T0 + 20) for _ in range(10)))
    assert [r.status for r in results].count("counted") == 1
    [e] = await store.entries(cid)
    assert (e.up, e.down) == (1, 0)


async def test_unposted_entries_take_no_votes_and_late_posts_are_not_ranked(store):
    cid = await open_contest(store, minutes=10)
    assert (await store.admit_entry(cid, "slow", 7, seed=1, now=T0 + 1)).ok
    assert (await store.vote(1234, 2, up=True, add=True, now=T0 + 2)).status == "not_entry"
    assert await store.ranking(cid) == []  # no picture yet: nothing to rank
    claim = await store.claim_close(cid, "bot", "boot1", lease_s=60, now=T0 + 600)
    assert claim.ok
    assert await store.entry_posted(cid, "slow", 888) == "closed"
    assert await store.ranking(cid) == []


# ------------------------------------------------------------------ ranking

def entry(number, up, down, **kw) -> Entry:
    return Entry("c", f"j{number}", number, author=100 + number, seed=number, entered_at=T0 + number,
                 message_id=1000 + number, up=up, down=down, **kw)


def test_ranking_ties_go_to_fewer_downs_then_the_earlier_entry():
    entries = [entry(1, 3, 2), entry(2, 1, 0), entry(3, 5, 4), entry(4, 1, 0), entry(5, 0, 3), entry(6, 4, 0)]
    assert [e.number for e in rank(entries)] == [6, 2, 4, 1, 3, 5]
    unposted = Entry("c", "j9", 9, author=1, seed=None, entered_at=T0, message_id=None, up=50)
    assert unposted not in rank(entries + [unposted])
    assert winner(rank([entry(1, 9, 0, flagged=True), entry(2, 1, 0)])).number == 2
    assert winner([]) is None


async def test_store_ranking_from_real_votes(store):
    cid = await open_contest(store, entries=1)
    for n, author in enumerate((11, 12, 13), start=1):
        await enter(store, cid, f"job{n}", author, message_id=500 + n, now=T0 + n)
    votes = {501: [(21, True), (22, True), (23, False)],  # +1, one down
             502: [(21, True)],                             # +1, no down: beats entry 1
             503: [(21, True), (22, True)]}                 # +2: first
    for mid, vs in votes.items():
        for voter, up in vs:
            assert (await store.vote(mid, voter, up=up, add=True, now=T0 + 50)).status == "counted"
    ranked = await store.ranking(cid)
    assert [(e.number, e.author, e.score, e.down) for e in ranked] == [(3, 13, 2, 0), (2, 12, 1, 0), (1, 11, 1, 1)]


# ------------------------------------------------------------------ texts

async def test_texts_escape_the_theme_and_reveal_authors_only_at_the_close(store):
    cid = await open_contest(store, theme="**bold** @everyone <@&42> _cats_", days=1)
    await enter(store, cid, "a", author=BIG, message_id=601)
    c = await store.get(cid)
    intro = render.announcement(c)
    assert r"\*\*bold\*\*" in intro and "@everyone" not in intro.replace("@\u200beveryone", "")
    assert f"<t:{int(T0 + 3600)}:R>" in intro and "one entry per member" in intro and "at least 1 day ago" in intro
    caption = render.entry_caption(c, 1)
    assert caption.startswith("**Entry #1**") and str(BIG) not in caption and "1234" not in caption  # no author, no seed
    assert render.thread_name(c).startswith("Contest: **bold**") and len(render.thread_name(c)) <= 100
    text = render.ranking(c, await store.ranking(cid))
    assert f"<@{BIG}>" in text and "seed `1234`" in text and "Entry #1" in text
    assert f"https://discord.com/channels/{GUILD}/{THREAD}/601" in text
    assert "no winner" in render.ranking(c, [])
    assert "already running" in render.already_running(c) and "/contest end" in render.already_running(c)
    st = render.status(c, posted=1, mine=1)
    assert "open, closes" in st and "1 entry so far" in st and "used 1 of your 1 entry" in st
    hof = render.hall_of_fame(c, (await store.ranking(cid))[0])
    assert "Contest winner" in hof and f"<@{BIG}>" in hof
