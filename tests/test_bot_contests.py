"""Contests end to end: the real bot against the fake Discord, a real Redis and the scripted worker.

A contest opens a thread; /imagine runs in it are anonymous entries with the contest's steps and
size; reactions of old-enough members vote; the close (made due through the store, as /contest end
does) posts the ranking and the hall-of-fame repost exactly once, across bot restarts.
"""
import asyncio
import datetime as dt

import pytest

from bot.contests.store import ContestStore
from tests.bot_harness import ScriptedWorker, harness  # noqa: F401
from tests.fake_discord import EPHEMERAL, PERM_MANAGE_GUILD, PERM_VIEW_SEND

ADMIN = PERM_VIEW_SEND | PERM_MANAGE_GUILD


@pytest.fixture
async def worker(harness):
    w = ScriptedWorker(harness.queue, steps=3, step_delay=0.02).start()
    yield w
    await w.stop()


def days_ago(n: float) -> str:
    return (dt.datetime.now(dt.UTC) - dt.timedelta(days=n)).isoformat()


async def answer(fake, inter) -> dict:
    """The interaction's first answer (callback data, or the follow-up after a deferral)."""
    cb = await fake.wait_call("POST", rf"/interactions/{inter.id}/")
    if cb.json["type"] == 5:
        return (await fake.wait_call("POST", rf"/webhooks/\d+/{inter.token}$")).json \
            if (cb.json.get("data") or {}).get("flags", 0) & EPHEMERAL else \
            (await fake.wait_call("PATCH", rf"/webhooks/\d+/{inter.token}/messages/")).json
    return cb.json["data"]


async def private_answer(fake, inter) -> str:
    """The text of an ephemeral answer (a direct one, or the follow-up after a deferral)."""
    def found():
        for c in fake.responses(inter):
            data = c.json.get("data", c.json) if isinstance(c.json, dict) else {}
            if data.get("flags", 0) & EPHEMERAL and data.get("content"):
                return data["content"]
        return None
    return await fake.wait_for(found)


async def start_contest(h, admin, **opts) -> tuple[int, str]:
    fake = h.fake
    inter = await fake.slash_sub("contest", "start", admin, **opts)
    data = await answer(fake, inter)
    thread = await fake.wait_for(lambda: fake.threads())
    tid = int(thread[-1]["id"])
    assert f"<#{tid}>" in data["content"]
    store = ContestStore(h.queue.redis)
    contest = await store.for_thread(tid)
    return tid, contest.id


async def enter(h, user, thread, prompt, **opts):
    fake = h.fake
    before = set(fake.messages)
    inter = await fake.slash("imagine", user, channel=thread, prompt=prompt, **opts)
    cb = await fake.wait_call("POST", rf"/interactions/{inter.id}/")
    return inter, cb, before


async def final_entry(fake, thread, before) -> dict:
    def done():
        for m in fake.channel_messages(thread, via="channel"):
            if int(m["id"]) not in before and "✅ done" in m["content"]:
                return m
        return None
    return await fake.wait_for(done, timeout=30)


async def test_contest_entries_votes_and_one_close_across_restarts(harness, worker):
    bot = await harness.start_bot()
    fake = harness.fake
    settings = bot.settings
    admin = fake.user("admin", ADMIN)
    hof = await fake.create_channel("hall-of-fame")
    await answer(fake, await fake.slash("config", admin, hall_of_fame_channel=hof))
    tid, cid = await start_contest(harness, admin, theme="a **red** circle @everyone", minutes=60, entries=1,
                                   min_member_days=3)
    thread = fake.channels[tid]
    assert thread["parent_id"] == str(fake.channel_id) and thread["name"].startswith("Contest: a **red** circle")
    [announce] = fake.channel_messages(tid, via="channel")
    assert "\\*\\*red\\*\\*" in announce["content"] and "@everyone" not in announce["content"].replace("@\u200beveryone", "")
    assert "at least 3 days ago" in announce["content"]

    ann, bob = fake.user("ann"), fake.user("bob")
    ann.joined_at = bob.joined_at = days_ago(30)
    inter, cb, before = await enter(harness, ann, tid, "a red circle", steps=7, size="48x48", seed=5)
    assert cb.json["data"]["flags"] & EPHEMERAL and "Entry #1" in cb.json["data"]["content"]
    ann_msg = await final_entry(fake, tid, before)
    job = next(j for j in worker.seen if j.kind == "imagine")
    # the contest's steps and size, whatever the member asked for
    assert (job.steps, job.width, job.height) == (settings.imagine.steps, settings.imagine.width, settings.imagine.height)
    assert "Entry #1" in ann_msg["content"] and str(ann.id) not in ann_msg["content"] and "`5`" not in ann_msg["content"]
    # every edit of the entry's message hid the author and the seed too
    for c in fake.find_calls(None, rf"/channels/{tid}/messages"):
        text = (c.json or {}).get("content") or ""
        assert str(ann.id) not in text and "seed" not in text, c
    await fake.wait_for(lambda: fake.bot_reactions(ann_msg["id"]) == ["👍", "👎"])

    # a second entry of ann is over the limit: refused privately, nothing queued
    n_jobs = len(worker.seen)
    inter, cb, _ = await enter(harness, ann, tid, "another red circle")
    assert cb.json["data"]["flags"] & EPHEMERAL and "already entered this contest 1 time" in cb.json["data"]["content"]
    _, _, before = await enter(harness, bob, tid, "a round red thing")
    bob_msg = await final_entry(fake, tid, before)
    assert "Entry #2" in bob_msg["content"]
    await asyncio.sleep(0.2)
    assert len([j for j in worker.seen if j.kind == "imagine"]) == 2 and len(worker.seen) >= n_jobs + 1
    assert not [j for j in worker.seen if j.kind == "index"]  # entries stay out of /find (it names authors)

    cat, dan, eve = fake.user("cat"), fake.user("dan"), fake.user("eve")
    cat.joined_at = eve.joined_at = days_ago(10)
    dan.joined_at = days_ago(1)  # too new to vote
    await fake.react(ann_msg, cat, "👍")
    await fake.react(ann_msg, eve, "👍")
    await fake.react(ann_msg, bob, "👎")
    await fake.react(bob_msg, cat, "👍")
    await fake.react(bob_msg, dan, "👍")
    await fake.react(ann_msg, ann, "👍")  # one's own entry: no vote
    dm = await fake.wait_call("POST", r"/channels/\d+/messages",
                              where=lambda c: "joined the server at least 3 days" in ((c.json or {}).get("content") or ""))
    assert fake.channels[int(dm.path.split("/")[2])]["type"] == 1  # a direct message: a reaction has no interaction
    await fake.wait_call("POST", r"/channels/\d+/messages",
                         where=lambda c: "your own entry" in ((c.json or {}).get("content") or ""))
    store = ContestStore(harness.queue.redis)
    for _ in range(50):
        votes = {e.number: (e.up, e.down) for e in await store.entries(cid)}
        if votes == {1: (2, 1), 2: (1, 0)}:
            break
        await asyncio.sleep(0.1)
    assert votes == {1: (2, 1), 2: (1, 0)}

    st = await fake.slash_sub("contest", "status", bob, channel=tid)
    text = await private_answer(fake, st)
    assert "2 entries so far" in text and "You have used 1 of your 1 entry" in text

    # the bot stops while the contest runs; its closing time passes; a new start closes it once
    await harness.stop_bot()
    assert await store.end_now(cid) == "ending"
    await harness.start_bot()
    ranking = await fake.wait_call("POST", rf"/channels/{tid}/messages",
                                   where=lambda c: "Contest closed" in ((c.json or {}).get("content") or ""))
    text = ranking.json["content"]
    # both +1: the tie goes to fewer 👎, so bob (1-0) ranks above ann (2-1)
    assert text.index(f"<@{bob.id}>") < text.index(f"<@{ann.id}>")
    assert "🥇 [Entry #2]" in text and "🥈 [Entry #1]" in text
    assert "seed `5`" in text  # seeds are shown after the close
    assert ranking.json["allowed_mentions"]["parse"] == [] and \
        sorted(map(int, ranking.json["allowed_mentions"]["users"])) == sorted([ann.id, bob.id])
    post = await fake.wait_call("POST", rf"/channels/{hof}/messages")
    embed = post.json["embeds"][0]
    assert "Contest winner" in embed["description"] and f"<@{bob.id}>" in embed["description"]
    assert embed["image"]["url"] == bob_msg["attachments"][0]["url"]
    c = await store.get(cid)
    for _ in range(50):
        if (c := await store.get(cid)).state == "closed":
            break
        await asyncio.sleep(0.1)
    assert c.state == "closed"

    # votes after the close count nothing and are answered; no second close after another restart
    await fake.react(bob_msg, eve, "👍")
    await fake.wait_call("POST", r"/channels/\d+/messages",
                         where=lambda c: "votes are no longer counted" in ((c.json or {}).get("content") or ""))
    inter, cb, _ = await enter(harness, eve, tid, "a late red circle")
    assert "closed" in cb.json["data"]["content"] and cb.json["data"]["flags"] & EPHEMERAL
    await harness.stop_bot()
    await harness.start_bot()
    await asyncio.sleep(0.5)
    assert len([c for c in fake.find_calls("POST", rf"/channels/{tid}/messages")
                if "Contest closed" in ((c.json or {}).get("content") or "")]) == 1
    assert len(fake.find_calls("POST", rf"/channels/{hof}/messages")) == 1
    assert {e.number: (e.up, e.down) for e in await store.entries(cid)} == {1: (2, 1), 2: (1, 0)}


async def test_bad_contest_requests_get_a_private_answer(harness, worker):
    await harness.start_bot()
    fake = harness.fake
    admin, ann = fake.user("admin", ADMIN), fake.user("ann")
    cases = [(ann, dict(theme="x", minutes=5), "Manage Server"),
             (admin, dict(theme="   ", minutes=5), "needs a theme"),
             (admin, dict(theme="x", minutes=0), "at least 1 minute"),
             (admin, dict(theme="x", minutes=10_081), "at most 10,080 minutes"),
             (admin, dict(theme="x", minutes=5, entries=11), "between 1 and 10")]
    for user, opts, expected in cases:
        text = await private_answer(fake, await fake.slash_sub("contest", "start", user, **opts))
        assert expected in text, (opts, text)
    assert not fake.threads()
    tid, cid = await start_contest(harness, admin, theme="blue squares", minutes=5)
    text = await private_answer(fake, await fake.slash_sub("contest", "start", admin, theme="again", minutes=5))
    assert "already running" in text and "blue squares" in text
    text = await private_answer(fake, await fake.slash_sub("contest", "start", admin, channel=tid, theme="x", minutes=5))
    assert "text channel" in text
    text = await private_answer(fake, await fake.slash_sub("contest", "end", ann))
    assert "Manage Server" in text
    other = await fake.create_channel("other")
    text = await private_answer(fake, await fake.slash_sub("contest", "status", ann, channel=other))
    assert "no contest in this channel" in text
    # /contest end closes at once: with no entries the ranking says so, and the channel is free again
    text = await private_answer(fake, await fake.slash_sub("contest", "end", admin))
    assert "Closing the contest now" in text
    closed = await fake.wait_call("POST", rf"/channels/{tid}/messages",
                                  where=lambda c: "Contest closed" in ((c.json or {}).get("content") or ""))
    assert "No entries were posted" in closed.json["content"]
    text = await private_answer(fake, await fake.slash_sub("contest", "end", admin, channel=tid))
    assert "already closed" in text
    for _ in range(50):
        if (await ContestStore(harness.queue.redis).for_channel(fake.channel_id)) is None:
            break
        await asyncio.sleep(0.1)
    await start_contest(harness, admin, theme="next round", minutes=5)


async def test_thread_creation_failure_frees_the_channel(harness, worker):
    await harness.start_bot()
    fake = harness.fake
    admin = fake.user("admin", ADMIN)
    fake.fail_next("POST", r"/channels/\d+/threads", 403)
    text = await private_answer(fake, await fake.slash_sub("contest", "start", admin, theme="x", minutes=5))
    assert "Create Public Threads" in text
    await start_contest(harness, admin, theme="second try", minutes=5)


async def test_rerolls_enter_flagged_entries_rank_but_never_win_and_cancelled_ones_free_the_slot(harness):
    from tests.test_bot_safety_quota import CheckingWorker  # flags generations whose prompt says "flag"
    worker = CheckingWorker(harness.queue, steps=3, step_delay=0.02).start()
    try:
        await harness.start_bot()
        fake = harness.fake
        admin = fake.user("admin", ADMIN)
        hof = await fake.create_channel("hall-of-fame")
        # commands limited to the art channel: its contest thread is allowed too
        await answer(fake, await fake.slash("config", admin, hall_of_fame_channel=hof, allow_channel=fake.channel_id))
        tid, cid = await start_contest(harness, admin, theme="red things", minutes=30, entries=2)
        ann, bob, cat = fake.user("ann"), fake.user("bob"), fake.user("cat")
        _, _, before = await enter(harness, ann, tid, "flag this")
        flagged = await final_entry(fake, tid, before)
        assert [a["filename"] for a in flagged["attachments"]] == ["SPOILER_imagine.png", "SPOILER_timelapse.gif"]
        assert "Entry #1" in flagged["content"] and "safety check marked" in flagged["content"]
        await fake.wait_for(lambda: fake.bot_reactions(flagged["id"]) == ["👍", "👎"])  # entries are voted on
        # bob's entry is cancelled while it runs: the slot is free again
        worker.hold.clear()
        _, _, before = await enter(harness, bob, tid, "a red apple")
        progress = await fake.wait_for(lambda: next((m for m in fake.channel_messages(tid, via="channel")
                                                     if int(m["id"]) not in before and "Entry #2" in m["content"]), None))
        custom_id = next(c["custom_id"] for row in progress["components"] for c in row["components"])
        await fake.click(progress, custom_id, bob)
        worker.hold.set()
        await fake.wait_call("PATCH", rf"/channels/{tid}/messages/{progress['id']}$",
                             where=lambda c: "cancelled" in ((c.json or {}).get("content") or ""))
        store = ContestStore(harness.queue.redis)
        for _ in range(50):
            if await store.entry_count(cid, bob.id) == 0:
                break
            await asyncio.sleep(0.1)
        assert await store.entry_count(cid, bob.id) == 0
        _, _, before = await enter(harness, bob, tid, "a red apple")
        apple = await final_entry(fake, tid, before)
        assert "Entry #3" in apple["content"]
        # Re-roll of an entry is another entry of whoever clicks, up to their limit
        reroll = next(c["custom_id"] for row in fake.messages[int(flagged["id"])]["components"] for c in row["components"])
        before = set(fake.messages)
        cb = await fake.wait_call("POST", rf"/interactions/{(await fake.click(flagged, reroll, ann)).id}/")
        assert "Entry #4" in cb.json["data"]["content"]
        await final_entry(fake, tid, before)
        cb = await fake.wait_call("POST", rf"/interactions/{(await fake.click(flagged, reroll, ann)).id}/")
        assert "already entered this contest 2 times" in cb.json["data"]["content"]
        await fake.react(flagged, cat, "👍")  # the flagged entry ranks first...
        for _ in range(50):
            if {e.number: e.up for e in await store.entries(cid)}.get(1) == 1:
                break
            await asyncio.sleep(0.1)
        assert await store.end_now(cid) == "ending"
        await harness.stop_bot()
        await harness.start_bot()
        ranking = await fake.wait_call("POST", rf"/channels/{tid}/messages",
                                       where=lambda c: "Contest closed" in ((c.json or {}).get("content") or ""))
        assert "🥇 [Entry #1]" in ranking.json["content"]
        post = await fake.wait_call("POST", rf"/channels/{hof}/messages")  # ...but the winner is the best unflagged
        assert "Entry #3" in post.json["embeds"][0]["description"]
    finally:
        await worker.stop()


async def test_a_close_interrupted_after_the_ranking_finishes_after_a_restart_without_repeating_it(harness, worker):
    from bot.contests.store import STEP_RANKING
    bot = await harness.start_bot()
    fake = harness.fake
    admin, ann = fake.user("admin", ADMIN), fake.user("ann")
    hof = await fake.create_channel("hall-of-fame")
    await answer(fake, await fake.slash("config", admin, hall_of_fame_channel=hof))
    tid, cid = await start_contest(harness, admin, theme="green", minutes=30)
    _, _, before = await enter(harness, ann, tid, "a green square")
    await final_entry(fake, tid, before)
    store = ContestStore(harness.queue.redis)
    for _ in range(50):
        if (await store.entries(cid))[0].posted:
            break
        await asyncio.sleep(0.1)
    owner = bot.settings.events_consumer
    await harness.stop_bot()
    # the process that stopped had claimed the close and posted the ranking, then died
    assert await store.end_now(cid) == "ending"
    claim = await store.claim_close(cid, owner, "boot-before-the-restart", lease_s=3600)
    assert claim.ok and await store.record_step(claim, STEP_RANKING, "12345", lease_s=3600)
    await harness.start_bot()  # the same owner takes its own close back at once, lease or not
    post = await fake.wait_call("POST", rf"/channels/{hof}/messages")
    assert f"<@{ann.id}>" in post.json["embeds"][0]["description"]
    for _ in range(50):
        if (await store.get(cid)).state == "closed":
            break
        await asyncio.sleep(0.1)
    assert (await store.get(cid)).state == "closed"
    assert not [c for c in fake.find_calls("POST", rf"/channels/{tid}/messages")
                if "Contest closed" in ((c.json or {}).get("content") or "")]  # the ranking was not posted again


async def test_a_refine_in_the_thread_is_an_anonymous_entry_without_lineage(harness, worker):
    await harness.start_bot()
    fake = harness.fake
    admin = fake.user("admin", ADMIN)
    tid, cid = await start_contest(harness, admin, theme="green stars", minutes=60)
    ann, bob = fake.user("ann"), fake.user("bob")
    _, _, before = await enter(harness, ann, tid, "a green star")
    ann_msg = await final_entry(fake, tid, before)
    ann_job = next(j for j in worker.seen if j.kind == "imagine")
    # the final post of an entry: its own files and buttons, no author, no seed
    assert f"<@{ann.id}>" not in ann_msg["content"] and str(ann_job.seed) not in ann_msg["content"]
    before = set(fake.messages)
    inter = await fake.click(ann_msg, f"clipbot:refine:{ann_job.id}", bob)
    cb = await fake.wait_call("POST", rf"/interactions/{inter.id}/")
    assert "Entry #2" in cb.json["data"]["content"]
    bob_msg = await final_entry(fake, tid, before)
    bob_job = [j for j in worker.seen if j.kind == "imagine"][-1]
    assert bob_job.init_image and bob_job.user == bob.id
    # no link to the parent in the caption, nothing /top or the hall of fame could show
    assert "refines" not in bob_msg["content"] and f"<@{bob.id}>" not in bob_msg["content"]
    assert await harness.bot.generations.parent(bob_job.id) is None
    assert await harness.bot.generations.children(ann_job.id) == []
    assert await ContestStore(harness.queue.redis).entry_number(cid, bob_job.id) == 2
