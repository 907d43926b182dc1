"""Several gateway shards: one process running two, and two `python -m bot` processes (one shard
each) on one Redis against the fake Discord: every result posted once and in order, votes and
buttons on both shards, a killed process's unacked events shown once after its restart."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import pytest

from bot.dispatcher import EventDispatcher, Renderer
from bot.jobstore import JobRecord, JobStore, record_for
from bot.shards import APPLIED_AS, ShardPlan, problem, shard_of
from bot.votes import VoteBook
from jobs.events import EventReader
from jobs.keys import FAST, Keys
from jobs.queue import queue_from_url
from jobs.schemas import ClassifyJob, Event, Progress, Result
from jobs.settings import SettingsError, load_settings
from tests.bot_harness import ScriptedWorker, harness  # noqa: F401
from tests.fake_discord import FakeDiscord

GIF = "timelapse.gif"


# ---------------------------------------------------------------------------- the layout

def test_a_guild_belongs_to_the_shard_discord_sends_it_to():
    assert shard_of(None, 4) == 0  # DMs
    assert shard_of(81384788765712384, 1) == 0
    assert shard_of(81384788765712384, 4) == (81384788765712384 >> 22) % 4 == 2  # Discord's documented rule
    fake = FakeDiscord()
    for shard in range(3):
        gid, _ = fake.add_guild(f"g{shard}", shard=shard, shard_count=3)
        assert shard_of(gid, 3) == shard


def test_shard_settings_and_groups():
    assert ShardPlan.from_settings(load_settings()) == ShardPlan(None, None)
    one = ShardPlan.from_settings(load_settings(shard_count=4, shard_ids=" 3,1"))
    assert one == ShardPlan(4, (1, 3)) and one.events_group == "bot-shards-1-3-of-4"
    every = ShardPlan.from_settings(load_settings(shard_count=2, shard_ids="1,0"))
    assert every.ids is None and every.events_group == "bot"  # all shards spelled out: one process as before
    assert ShardPlan(2, None).owns(record_for(ClassifyJob(image="k", labels=["a", "b"], user=1, guild=5), "x"))
    for bad, says in (({"shard_ids": "0"}, "SHARD_IDS needs SHARD_COUNT"), ({"shard_count": 2, "shard_ids": "2"}, "below"),
                      ({"shard_count": 2, "shard_ids": "0,0"}, "distinct"), ({"shard_count": 0}, "SHARD_COUNT")):
        with pytest.raises(SettingsError, match=says):
            load_settings(**bad)
    assert "REDIS_URL" in problem(load_settings(shard_count=2, shard_ids="0"))
    assert problem(load_settings(shard_count=2, shard_ids="0", redis_url="redis://r:6379/0")) is None
    assert problem(load_settings(shard_count=2)) is None


# ---------------------------------------------------------------------------- ownership, without Discord

class Seen(Renderer):
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    async def render(self, job_id: str, record: JobRecord, event: Event) -> None:
        self.seen.append((job_id, event.type))


async def _run_job(queue, job) -> None:
    await queue.submit(job)
    (taken,) = await queue.take(FAST, "w", count=1, block_ms=None)
    for step in (1, 2, 3):
        await queue.publish(taken, Progress(job_id=job.id, seq=0, step=step, total=3))
    await queue.finish(taken, Result(job_id=job.id, seq=0, data={}))


async def caught_up(redis, group: str) -> bool:
    """The group has read the whole stream and acked everything."""
    key = Keys("clipbot:").events
    last = (await redis.xinfo_stream(key))["last-generated-id"]
    info = next((g for g in await redis.xinfo_groups(key) if g["name"] in (group, group.encode())), None)
    return info is not None and info["last-delivered-id"] == last and info["pending"] == 0


async def test_each_process_shows_only_its_shards_jobs_once_in_order_and_acks_the_rest(queue):
    fake = FakeDiscord()
    guilds = [fake.add_guild(f"g{k}", shard=k, shard_count=2)[0] for k in (0, 1)]
    records = JobStore(queue.redis, "clipbot:", 3600)
    ready = asyncio.Event()
    ready.set()
    dispatchers, renderers = [], []
    for shard in (0, 1):
        plan = ShardPlan(2, (shard,))
        reader = EventReader(queue.redis, group=plan.events_group, consumer=f"p{shard}", applied_as=APPLIED_AS)
        d = EventDispatcher(reader, records, ready.wait, owns=plan.owns)
        d.register("classify", r := Seen())
        dispatchers.append(d)
        renderers.append(r)
    jobs = [ClassifyJob(image=await queue.put_blob(b"x"), labels=["a", "b"], user=1, guild=g) for g in guilds + guilds]
    jobs.append(ClassifyJob(image=await queue.put_blob(b"x"), labels=["a", "b"], user=1, guild=None))  # a DM: shard 0
    for job in jobs:
        await records.put(record_for(job, "x"), job.id)
    for d in dispatchers:
        d.start()
    try:
        for job in jobs:
            await _run_job(queue, job)
        order = ["queued", "started", "progress", "progress", "progress", "result"]

        async def done() -> bool:
            pending = [await queue.redis.xpending(Keys("clipbot:").events, d.reader.group) for d in dispatchers]
            return sum(len(r.seen) for r in renderers) == len(jobs) * len(order) and all(p["pending"] == 0 for p in pending)

        async with asyncio.timeout(15):
            while not await done():
                await asyncio.sleep(0.05)
        # a process started later in another layout (one process, every shard) re-reads the stream from
        # its start but shows nothing again: shown events are recorded under one name for all groups
        late = EventDispatcher(EventReader(queue.redis, group="bot", consumer="late", applied_as=APPLIED_AS),
                               records, ready.wait)
        late.register("classify", late_seen := Seen())
        late.start()
        dispatchers.append(late)
        async with asyncio.timeout(15):
            while not await caught_up(queue.redis, "bot"):
                await asyncio.sleep(0.05)
    finally:
        for d in dispatchers:
            await d.stop()
    owner = {job.id: (0 if job.guild is None else shard_of(job.guild, 2)) for job in jobs}
    for shard, r in enumerate(renderers):
        mine = [job.id for job in jobs if owner[job.id] == shard]
        assert {job_id for job_id, _ in r.seen} == set(mine)
        for job_id in mine:
            assert [kind for j, kind in r.seen if j == job_id] == order
    assert late_seen.seen == []


# ---------------------------------------------------------------------------- real bots on the fake Discord

def components_custom_ids(msg: dict) -> list[str]:
    return [c["custom_id"] for row in msg.get("components", []) for c in row.get("components", [])]


async def imagine(fake: FakeDiscord, user, channel: int, prompt: str) -> dict:
    """/imagine in `channel`; returns its generation message (posted with the bot token)."""
    inter = await fake.slash("imagine", user, channel=channel, prompt=prompt)
    await fake.wait_call("POST", rf"/interactions/{inter.id}/")
    return await fake.wait_for(lambda: next((m for m in fake.channel_messages(channel, via="channel")
                                             if prompt in m["content"]), None))


async def final_edit(fake: FakeDiscord, mid) -> object:
    return await fake.wait_call("PATCH", rf"/channels/\d+/messages/{mid}$", timeout=30,
                                where=lambda c: any(f.filename == GIF for f in c.files))


def assert_posted_once_in_order(fake: FakeDiscord, job_id: str) -> None:
    """One message for the job (its buttons carry the job id), one successful final edit, no
    progress edit after it."""
    posts = [m for cid in fake.channels for m in fake.channel_messages(cid, via="channel")
             if any(c.endswith(f":{job_id}") for c in components_custom_ids(m))]
    assert len(posts) == 1, posts
    mid = posts[0]["id"]
    edits = [c for c in fake.find_calls("PATCH", rf"/channels/\d+/messages/{mid}$") if 200 <= c.status < 300]
    finals = [c for c in edits if any(f.filename == GIF for f in c.files)]
    assert len(finals) == 1, edits
    assert edits[-1] is finals[0], edits  # progress edits never after the result


async def votable(fake: FakeDiscord, redis, msg: dict) -> None:
    """The result is posted, its vote reactions added and the generation registered for votes."""
    await final_edit(fake, msg["id"])
    await fake.wait_for(lambda: fake.bot_reactions(msg["id"]) == ["👍", "👎"])
    async with asyncio.timeout(15):
        while await VoteBook(redis, "clipbot:").job_for_message(int(msg["id"])) is None:
            await asyncio.sleep(0.05)


async def wait_votes(redis, job_id: str, up: int) -> None:
    book = VoteBook(redis, "clipbot:")
    async with asyncio.timeout(15):
        while (gen := await book.get(job_id)) is None or gen.up != up:
            await asyncio.sleep(0.05)


async def test_one_process_runs_two_shards(harness):
    fake = harness.fake
    (ga, ca), (gb, cb) = fake.add_guild("a", 0, 2), fake.add_guild("b", 1, 2)
    worker = ScriptedWorker(harness.queue, steps=4, step_delay=0.05).start()
    try:
        bot = await harness.start_bot(shard_count=2)
        assert sorted(tuple(i["shard"]) for i in fake.identifies) == [(0, 2), (1, 2)]
        assert {ga, gb} <= {g.id for g in bot.guilds} and bot.dispatcher.reader.group == "bot"
        ann, bob = fake.user("ann"), fake.user("bob")
        msgs = await asyncio.gather(imagine(fake, ann, ca, "a red circle"), imagine(fake, ann, cb, "a blue star"))
        for msg in msgs:
            await votable(fake, harness.queue.redis, msg)
            await fake.react(msg, bob, "👍")
        for job in worker.seen:
            if job.kind == "imagine":
                assert_posted_once_in_order(fake, job.id)
                await wait_votes(harness.queue.redis, job.id, 1)
    finally:
        await worker.stop()


def bot_process(fake: FakeDiscord, redis_url: str, shard: int, log_path) -> subprocess.Popen:
    env = {**os.environ, "REDIS_URL": redis_url, "DISCORD_TOKEN": "test-token", "DISCORD_API_BASE": fake.api_base,
           "DISCORD_GATEWAY_URL": fake.gateway_url, "SHARD_COUNT": "2", "SHARD_IDS": str(shard),
           "CLIPBOT_EVENTS_CONSUMER": f"bot-{shard}", "CLIPBOT_GUILD_READY_TIMEOUT_S": "0.05",
           "CLIPBOT_EDIT_INTERVAL_S": "0.3", "CLIPBOT_COOLDOWN_S": "0", "LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"}
    log = open(log_path, "ab")
    proc = subprocess.Popen([sys.executable, "-m", "bot"], env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    proc.log_path = log_path
    return proc


async def connected(fake: FakeDiscord, proc, shard: int) -> None:
    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"bot exited {proc.returncode}:\n{proc.log_path.read_text()[-3000:]}")
        return any(ws_shard == (shard, 2) for ws_shard in fake._shard_of_socket.values()) and bool(fake.commands)
    await fake.wait_for(up, timeout=60)
    # the process answers commands once its gateway session is up; its events loop starts at READY
    for _ in range(600):
        if "has connected to Gateway" in proc.log_path.read_text(errors="replace"):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(proc.log_path.read_text()[-3000:])


def stop(proc) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_two_bot_processes_share_one_redis(redis_server, tmp_path):
    fake = await FakeDiscord().start()
    (_, ca), (gb, cb) = fake.add_guild("a", 0, 2), fake.add_guild("b", 1, 2)
    queue = queue_from_url(redis_server.url)
    worker = ScriptedWorker(queue, steps=5, step_delay=0.05).start()
    procs = [bot_process(fake, redis_server.url, shard, tmp_path / f"bot-{shard}.log") for shard in (0, 1)]
    try:
        await asyncio.gather(*(connected(fake, p, shard) for shard, p in enumerate(procs)))
        ann, bob, cat, dan = fake.user("ann"), fake.user("bob"), fake.user("cat"), fake.user("dan")
        # a generation in a guild of each shard: each posted once, in order, by the process of its shard
        ma, mb = await asyncio.gather(imagine(fake, ann, ca, "a red circle"), imagine(fake, bob, cb, "a blue star"))
        for msg in (ma, mb):
            await votable(fake, queue.redis, msg)
        job_of = {j.prompt: j.id for j in worker.seen if j.kind == "imagine"}
        # votes on both shards (by members who are not the authors: self-votes are off by default)
        for msg in (ma, mb):
            await fake.react(msg, cat, "👍")
            await fake.react(msg, dan, "👍")
        await wait_votes(queue.redis, job_of["a red circle"], 2)
        await wait_votes(queue.redis, job_of["a blue star"], 2)
        # buttons on both shards: Re-roll in guild b, Cancel in guild a
        reroll = next(c for c in components_custom_ids(fake.messages[int(mb["id"])]) if c.startswith("clipbot:reroll:"))
        click = await fake.click(fake._message_json(int(mb["id"])), reroll, bob)  # as shown now: Re-roll
        assert "Queued" in (await fake.wait_call("POST", rf"/interactions/{click.id}/")).json["data"]["content"]
        await fake.wait_for(lambda: sum(j.kind == "imagine" and j.guild == gb for j in worker.seen) == 2)
        worker.hold.clear()
        held = await imagine(fake, ann, ca, "a green square")
        await fake.wait_for(lambda: "clipbot:cancel:" in str(fake.messages[int(held["id"])]["components"]))
        cancel = components_custom_ids(fake.messages[int(held["id"])])[0]
        click = await fake.click(fake._message_json(int(held["id"])), cancel, ann)
        answer = await fake.wait_call("POST", rf"/interactions/{click.id}/")
        assert "Cancelling job" in answer.json["data"]["content"], answer
        worker.hold.set()
        await fake.wait_for(lambda: "cancelled" in fake.messages[int(held["id"])]["content"])

        # kill the shard-1 process while it is showing a result (Discord answers 500 to the final edit,
        # so the result event is read but not acked), then start it again
        worker.hold.clear()
        mk = await imagine(fake, bob, cb, "a yellow moon")
        refuse = fake.fail_next("PATCH", rf"/channels/\d+/messages/{mk['id']}$", 500, times=1000,
                                where=lambda c: any(f.filename == GIF for f in c.files))
        worker.hold.set()
        await fake.wait_call("PATCH", rf"/channels/\d+/messages/{mk['id']}$", ok=False, timeout=30,
                             where=lambda c: c.status == 500)
        procs[1].kill()
        procs[1].wait()
        group = ShardPlan(2, (1,)).events_group
        pending = await queue.redis.xpending(Keys("clipbot:").events, group)
        assert pending["pending"] >= 1  # the result, read and not acked
        refuse.times = 0
        procs[1] = bot_process(fake, redis_server.url, 1, tmp_path / "bot-1-again.log")
        await connected(fake, procs[1], 1)
        await final_edit(fake, mk["id"])
        await fake.wait_for(lambda: fake.bot_reactions(mk["id"]) == ["👍", "👎"])

        async def settled() -> bool:
            groups = (ShardPlan(2, (0,)).events_group, group)
            return [await caught_up(queue.redis, g) for g in groups] == [True, True]

        async with asyncio.timeout(20):
            while not await settled():
                await asyncio.sleep(0.1)
        # every event reached each process through its own group (a group shared by the two would hand a
        # job's events to both, out of order), and each showed only its own jobs
        groups = {g["name"].decode() if isinstance(g["name"], bytes) else g["name"]
                  for g in await queue.redis.xinfo_groups(Keys("clipbot:").events)}
        assert groups == {"bot-shards-0-of-2", "bot-shards-1-of-2"}, groups
        delivered = [j.id for j in worker.seen if j.kind == "imagine" and j.prompt != "a green square"]
        assert len(delivered) == 4  # red circle, blue star and its re-roll, yellow moon
        for job_id in delivered:
            assert_posted_once_in_order(fake, job_id)
    finally:
        for p in procs:
            stop(p)
        await worker.stop()
        await queue.redis.aclose()
        await fake.stop()
    assert not fake.errors, fake.errors
    for name in ("bot-0.log", "bot-1.log", "bot-1-again.log"):
        assert "Traceback" not in (tmp_path / name).read_text(errors="replace")


def test_some_shards_without_a_shared_redis_is_refused(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(DISCORD_TOKEN="test-token", SHARD_COUNT="2", SHARD_IDS="1", DATA_DIR=str(tmp_path))
    r = subprocess.run([sys.executable, "-m", "bot"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Set REDIS_URL" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "redis").exists() and not list(tmp_path.iterdir())  # no embedded Redis started
