"""Redis stops under a running bot: members are told the queue is unavailable (privately, at once),
the events loop backs off and logs one line for the outage and one when Redis is back, and
everything flows again once it returns."""
from __future__ import annotations

import asyncio
import logging

from tests.bot_harness import ScriptedWorker, harness  # noqa: F401
from tests.fake_discord import EPHEMERAL


async def private_answer(fake, inter) -> str:
    call = await fake.wait_for(lambda: next((c for c in fake.responses(inter) if c.method == "POST" and c.json and (
        (c.json.get("type") == 4 and c.json["data"].get("flags", 0) & EPHEMERAL)
        or (c.json.get("flags", 0) & EPHEMERAL and "/webhooks/" in c.path))), None))
    assert call.at - inter.sent_at < 3.0  # inside Discord's window: not after a long Redis timeout
    return call.json["data"]["content"] if "type" in call.json else call.json["content"]


def outage_lines(caplog, what: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "bot.dispatcher" and what in r.getMessage()]


async def test_commands_say_the_queue_is_unavailable_and_the_loop_logs_once(harness, redis_server, caplog):
    caplog.set_level(logging.INFO)
    bot = await harness.start_bot()
    fake = harness.fake
    ann = fake.user("ann")
    reader = bot.dispatcher.reader
    failed_reads = 0
    read = reader.read

    async def counted_read(*args, **kwargs):
        nonlocal failed_reads
        try:
            return await read(*args, **kwargs)
        except Exception:
            failed_reads += 1
            raise

    reader.read = counted_read

    redis_server.stop()
    for command, options in (("imagine", {"prompt": "a red circle"}), ("queue", {}), ("find", {"query": "a star"}),
                             ("top", {})):
        text = await private_answer(fake, await fake.slash(command, ann, **options))
        assert text == "The queue is unavailable right now; please try again in a minute.", (command, text)
    for user in (ann, fake.user("bob")):  # reactions meanwhile: not counted, one line for the outage
        await fake.react(fake.post_user_message(ann, "hello", []), user, "👍")
    await fake.wait_for(lambda: failed_reads >= 5, timeout=30)  # the loop kept trying, with backoff
    assert len([r for r in caplog.records if r.name == "bot.cogs.votes" and "unavailable (" in r.getMessage()]) == 1
    assert len(outage_lines(caplog, "unavailable (")) == 1
    assert len([r for r in caplog.records if r.name == "bot.contests.closer" and "unavailable (" in r.getMessage()]) <= 1
    assert not [r for r in caplog.records if r.exc_info], "no tracebacks for an outage"
    assert not outage_lines(caplog, "is back after")

    redis_server.start()
    worker = ScriptedWorker(harness.queue).start()
    try:
        inter = await fake.slash("imagine", ann, prompt="a blue star")
        cb = await fake.wait_call("POST", rf"/interactions/{inter.id}/")
        assert "Queued" in cb.json["data"]["content"]
        msg = await fake.wait_for(lambda: next((m for m in fake.channel_messages(via="channel")
                                                if "a blue star" in m["content"]), None))
        await fake.wait_call("PATCH", rf"/channels/\d+/messages/{msg['id']}$", timeout=30,
                             where=lambda c: any(f.filename == "imagine.png" for f in c.files))
    finally:
        await worker.stop()
    assert len(outage_lines(caplog, "is back after")) == 1
    assert len(outage_lines(caplog, "unavailable (")) == 1


async def test_buttons_say_the_queue_is_unavailable(harness, redis_server):
    await harness.start_bot()
    fake = harness.fake
    ann = fake.user("ann")
    inter = await fake.slash("imagine", ann, prompt="a green square")  # no worker: it stays queued
    await fake.wait_call("POST", rf"/interactions/{inter.id}/")
    msg = await fake.wait_for(lambda: next(iter(fake.channel_messages(via="channel")), None))
    job_id = msg["components"][0]["components"][0]["custom_id"].rsplit(":", 1)[1]
    while (await harness.bot.records.get(job_id)).message_id is None:  # the bot is done with Redis for now
        await asyncio.sleep(0.05)
    redis_server.stop()
    for custom_id in (f"clipbot:cancel:{job_id}", f"clipbot:reroll:{job_id}"):
        button = {"type": 2, "style": 1, "label": "x", "custom_id": custom_id}  # as on a finished generation
        text = await private_answer(fake, await fake.click({**msg, "components": [{"type": 1, "components": [button]}]},
                                                           custom_id, ann))
        assert "queue is unavailable" in text, custom_id
    redis_server.start()
    await asyncio.sleep(0)  # the bot's pool reconnects on its next command
    text = await private_answer(fake, await fake.click(msg, f"clipbot:cancel:{job_id}", ann))
    assert text.startswith("Cancelling")


async def test_pooled_connections_survive_a_redis_restart(redis_server):
    """After a restart every idle pooled connection is closed: commands on them must not fail."""
    from jobs.queue import queue_from_url

    q = queue_from_url(redis_server.url)
    try:
        await asyncio.gather(*(q.redis.ping() for _ in range(32)))  # 32 open connections, as the bot warms
        redis_server.stop()
        redis_server.start()
        results = await asyncio.gather(*(q.redis.set(f"k{i}", i) for i in range(64)), return_exceptions=True)
        assert [r for r in results if r is not True] == []
    finally:
        await q.redis.aclose()
