"""The bot's flows against the fake Discord, a real Redis and the scripted worker (real events)."""
import asyncio

import pytest

from bot.text import member_text
from tests.bot_harness import ScriptedWorker, harness, png_bytes  # noqa: F401
from tests.fake_discord import EPHEMERAL, PERM_MANAGE_GUILD, PERM_MANAGE_MESSAGES, PERM_VIEW_SEND


@pytest.fixture
async def worker(harness):
    w = ScriptedWorker(harness.queue).start()
    yield w
    await w.stop()


def components_custom_ids(msg: dict) -> list[str]:
    return [c["custom_id"] for row in msg.get("components", []) for c in row.get("components", [])]


async def run_imagine(h, user, prompt="a red circle", **opts):
    fake = h.fake
    before = set(fake.messages)
    inter = await fake.slash("imagine", user, prompt=prompt, **opts)
    shown = member_text(prompt)  # captions show the prompt escaped (bot/text.py)
    cb = await fake.wait_call("POST", rf"/interactions/{inter.id}/")
    channel = fake.channel_id
    msg = await fake.wait_for(lambda: next((m for m in fake.channel_messages(channel, via="channel")
                                            if int(m["id"]) not in before and shown in m["content"]), None))
    return inter, cb, msg


async def test_classify_defers_fast_and_answers_with_a_bar_chart(harness, worker):
    await harness.start_bot()
    fake = harness.fake
    ann = fake.user("ann")
    att = fake.upload(png_bytes(), "shape.png", "image/png", 64, 64)
    inter = await fake.slash("classify", ann, image=att, labels="red circle, blue square, green star")
    cb = await fake.wait_call("POST", rf"/interactions/{inter.id}/")
    assert cb.json["type"] == 5  # deferred (thinking), public
    assert cb.at - inter.sent_at < 3.0
    final = await fake.wait_call("PATCH", rf"/webhooks/\d+/{inter.token}/messages/",
                                 where=lambda c: "```" in (c.json or {}).get("content", ""))
    text = final.json["content"]
    assert "**red circle**" in text
    lines = [line for line in text.split("\n") if "%" in line]
    assert [line.split()[0] for line in lines] == ["red", "blue", "green"]  # ranked
    assert "50.0%" in lines[0]
    job = worker.seen[0]
    assert job.kind == "classify" and job.labels == ["red circle", "blue square", "green star"]


async def test_imagine_progress_edits_throttled_then_final_post(harness, worker):
    worker.steps, worker.step_delay = 12, 0.1
    await harness.start_bot(edit_interval_s=0.4)
    fake = harness.fake
    ann = fake.user("ann")
    inter, cb, msg = await run_imagine(harness, ann, "a blue star", steps=12, seed=7)
    assert cb.at - inter.sent_at < 3.0
    assert cb.json["type"] == 4 and "position 1" in cb.json["data"]["content"]
    assert cb.json["data"]["flags"] & EPHEMERAL  # the channel itself gets only the one generation message
    assert any(cid.startswith("clipbot:cancel:") for cid in components_custom_ids(msg))
    mid = msg["id"]
    final = await fake.wait_call("PATCH", rf"/channels/\d+/messages/{mid}$",
                                 where=lambda c: any(f.filename == "timelapse.gif" for f in c.files), timeout=30)
    edits = [c for c in fake.find_calls("PATCH", rf"/channels/\d+/messages/{mid}$") if c.status == 200]
    progress = [c for c in edits if c is not final]
    assert len(progress) >= 2, edits
    assert len(edits) < 12  # coalesced: not one edit per frame
    assert any(f.filename == "preview.png" and f.data.startswith(b"\x89PNG") for c in progress for f in c.files)
    gaps = [b.at - a.at for a, b in zip(edits, edits[1:])]
    assert min(gaps) >= 0.4 - 0.02, gaps  # never faster than the configured interval
    assert "█" in progress[-1].json["content"]
    # final: image + GIF + prompt/seed/steps + Re-roll, reactions added
    assert sorted(f.filename for f in final.files) == ["imagine.png", "timelapse.gif"]
    assert "a blue star" in final.json["content"] and "`7`" in final.json["content"] and "steps `12`" in final.json["content"]
    stored = fake.messages[int(mid)]
    job_id = worker.seen[0].id
    assert components_custom_ids(stored) == [f"clipbot:reroll:{job_id}", f"clipbot:refine:{job_id}",
                                             f"clipbot:similar:{job_id}", f"clipbot:frame:{job_id}"]
    await fake.wait_for(lambda: fake.bot_reactions(mid) == ["👍", "👎"])
    assert worker.seen[0].seed == 7 and worker.seen[0].steps == 12
    # the generation is added to the server gallery
    await fake.wait_for(lambda: any(j.kind == "index" for j in worker.seen))
    index = next(j for j in worker.seen if j.kind == "index")
    assert index.add[0].item_id == f"{mid}:0" and index.add[0].caption == "a blue star"


async def test_progress_edit_respects_429_retry_after(harness, worker):
    worker.steps, worker.step_delay = 10, 0.1
    await harness.start_bot(edit_interval_s=0.2)
    fake = harness.fake
    fake.fail_next("PATCH", r"/channels/\d+/messages/\d+$", 429, times=1, retry_after=0.8)
    _, _, msg = await run_imagine(harness, fake.user("ann"), "a green square")
    mid = msg["id"]
    await fake.wait_call("PATCH", rf"/channels/\d+/messages/{mid}$",
                         where=lambda c: any(f.filename == "imagine.png" for f in c.files), timeout=30)
    calls = fake.find_calls("PATCH", rf"/channels/\d+/messages/{mid}$")
    limited = [i for i, c in enumerate(calls) if c.status == 429]
    assert limited, calls
    after = calls[limited[0] + 1]
    assert after.at - calls[limited[0]].at >= 0.8 - 0.02  # retried after retry_after, not before
    assert after.status == 200


async def test_votes_leaderboard_and_hall_of_fame_once(harness, worker):
    await harness.start_bot()
    fake = harness.fake
    admin = fake.user("admin", PERM_VIEW_SEND | PERM_MANAGE_GUILD)
    hof = await fake.create_channel("hall-of-fame")
    inter = await fake.slash("config", admin, hall_of_fame_channel=hof, hall_of_fame_threshold=2)
    cb = await fake.wait_call("POST", rf"/interactions/{inter.id}/")
    assert cb.json["data"]["flags"] & EPHEMERAL and f"<#{hof}>" in cb.json["data"]["content"]
    _, _, msg = await run_imagine(harness, fake.user("ann"), "a purple triangle")
    await fake.wait_for(lambda: fake.bot_reactions(msg["id"]) == ["👍", "👎"], timeout=30)
    bob, cat, dan = fake.user("bob"), fake.user("cat"), fake.user("dan")
    await fake.react(msg, fake.bot_user, "👍")  # the bot's own reaction is not a vote
    await fake.react(msg, bob, "👍")
    await fake.react(msg, bob, "👍")  # a repeat changes nothing
    await fake.react(msg, dan, "👎")
    await fake.react(msg, dan, "🎉")  # not a vote emoji
    await asyncio.sleep(0.3)
    assert not fake.channel_messages(hof)
    await fake.react(msg, cat, "👍")  # second up-vote: threshold reached
    post = await fake.wait_call("POST", rf"/channels/{hof}/messages")
    assert "a purple triangle" in post.json["embeds"][0]["description"]
    await fake.react(msg, cat, "👍", add=False)
    await fake.react(msg, cat, "👍")  # back at the threshold: no second repost
    await asyncio.sleep(0.3)  # reactions are fire-and-forget gateway events: let the bot apply them
    inter = await fake.slash("top", bob, period="week")
    top = await fake.wait_call("POST", rf"/interactions/{inter.id}/")
    desc = top.json["data"]["embeds"][0]["description"]
    assert "a purple triangle" in desc and "+1" in desc and "2👍 1👎" in desc and msg["id"] in desc
    await asyncio.sleep(0.3)
    assert len(fake.find_calls("POST", rf"/channels/{hof}/messages")) == 1


async def test_votes_survive_a_restart(harness, worker):
    await harness.start_bot()
    fake = harness.fake
    _, _, msg = await run_imagine(harness, fake.user("ann"), "a white circle")
    await fake.wait_for(lambda: fake.bot_reactions(msg["id"]) == ["👍", "👎"], timeout=30)
    bob = fake.user("bob")
    await fake.react(msg, bob, "👍")
    await asyncio.sleep(0.3)
    await harness.stop_bot()
    await harness.start_bot()
    await fake.react(msg, bob, "👍")  # the same vote again after the restart: still one
    await fake.react(msg, fake.user("cat"), "👍")
    await asyncio.sleep(0.3)
    inter = await fake.slash("top", bob)
    top = await fake.wait_call("POST", rf"/interactions/{inter.id}/")
    assert "2👍 0👎" in top.json["data"]["embeds"][0]["description"]


async def test_cancel_button_only_for_author_or_moderator(harness, worker):
    worker.hold.clear()  # keep the generation running
    await harness.start_bot()
    fake = harness.fake
    ann, eve = fake.user("ann"), fake.user("eve")
    _, _, msg = await run_imagine(harness, ann, "a black star")
    custom_id = components_custom_ids(msg)[0]
    inter = await fake.click(msg, custom_id, eve)
    cb = await fake.wait_call("POST", rf"/interactions/{inter.id}/")
    assert cb.json["data"]["flags"] & EPHEMERAL and "Only the member who started" in cb.json["data"]["content"]
    mod = fake.user("mod", PERM_VIEW_SEND | PERM_MANAGE_MESSAGES)
    inter = await fake.click(msg, custom_id, mod)
    cb = await fake.wait_call("POST", rf"/interactions/{inter.id}/")
    assert "Cancelling" in cb.json["data"]["content"]
    worker.hold.set()
    final = await fake.wait_call("PATCH", rf"/channels/\d+/messages/{msg['id']}$",
                                 where=lambda c: "cancelled" in (c.json or {}).get("content", ""))
    assert f"<@{mod.id}>" in final.json["content"]
    assert final.json["components"] == []  # the Cancel button is gone


async def test_reroll_button_requeues_same_options_new_seed(harness, worker):
    await harness.start_bot()
    fake = harness.fake
    ann = fake.user("ann")
    _, _, msg = await run_imagine(harness, ann, "an orange square", steps=5, seed=11, size="64x48")
    await fake.wait_for(lambda: worker.seen and components_custom_ids(fake.messages[int(msg["id"])])[:1] ==
                        [f"clipbot:reroll:{worker.seen[0].id}"], timeout=30)
    stored = fake._message_json(int(msg["id"]))
    # restart: the button must still work (dynamic items re-registered at start)
    await harness.stop_bot()
    await harness.start_bot()
    bob = fake.user("bob")
    inter = await fake.click(stored, components_custom_ids(stored)[0], bob)
    cb = await fake.wait_call("POST", rf"/interactions/{inter.id}/")
    assert "Queued" in cb.json["data"]["content"]
    await fake.wait_for(lambda: len([j for j in worker.seen if j.kind == "imagine"]) == 2)
    a, b = [j for j in worker.seen if j.kind == "imagine"]
    assert (b.prompt, b.steps, b.width, b.height) == (a.prompt, a.steps, a.width, a.height) == ("an orange square", 5, 64, 48)
    assert b.seed != a.seed and b.user == bob.id and b.origin.reroll_of == a.id


async def test_results_posted_after_bot_restart(harness, worker):
    worker.hold.clear()
    await harness.start_bot()
    fake = harness.fake
    ann = fake.user("ann")
    _, _, msg = await run_imagine(harness, ann, "a yellow circle")
    att = fake.upload(png_bytes(), "s.png", "image/png", 64, 64)
    inter = await fake.slash("classify", ann, image=att, labels="circle, square")
    await fake.wait_call("PATCH", rf"/webhooks/\d+/{inter.token}/messages/")  # "Classifying…" (queued)
    await harness.stop_bot()
    worker.hold.set()  # both finish while the bot is away
    await asyncio.sleep(1.0)
    assert not fake.find_calls("PATCH", rf"/channels/\d+/messages/{msg['id']}$",
                               since=fake.calls[-1].at + 1e-9)
    await harness.start_bot()
    await fake.wait_call("PATCH", rf"/channels/\d+/messages/{msg['id']}$",
                         where=lambda c: any(f.filename == "imagine.png" for f in c.files), timeout=30)
    await fake.wait_call("PATCH", rf"/webhooks/\d+/{inter.token}/messages/",
                         where=lambda c: "```" in (c.json or {}).get("content", ""))


async def test_deleted_message_and_missing_channel_do_not_block_other_jobs(harness, worker):
    worker.hold.clear()
    await harness.start_bot()
    fake = harness.fake
    ann, bob, cat = fake.user("ann"), fake.user("bob"), fake.user("cat")
    other = await fake.create_channel("doomed")
    _, _, m1 = await run_imagine(harness, ann, "a red star")
    inter = await fake.slash("imagine", bob, channel=other, prompt="a green star")
    await fake.wait_call("POST", rf"/interactions/{inter.id}/")
    await fake.wait_call("POST", rf"/channels/{other}/messages")
    _, _, m3 = await run_imagine(harness, cat, "a blue star")
    fake.delete_message(int(m1["id"]))  # someone deleted the progress message
    fake.delete_channel(other)  # and the channel of the second job
    worker.hold.set()
    # job 1: a fresh message with the result; job 3: its own message edited; job 2 dropped quietly
    new = await fake.wait_call("POST", rf"/channels/{fake.channel_id}/messages",
                               where=lambda c: any(f.filename == "imagine.png" for f in c.files), timeout=30)
    assert "a red star" in new.json["content"]
    await fake.wait_call("PATCH", rf"/channels/\d+/messages/{m3['id']}$",
                         where=lambda c: any(f.filename == "imagine.png" for f in c.files), timeout=30)


async def test_forbidden_channel_and_5xx(harness, worker):
    worker.hold.clear()
    await harness.start_bot()
    fake = harness.fake
    locked = await fake.create_channel("locked")
    inter = await fake.slash("imagine", fake.user("ann"), channel=locked, prompt="a grey circle")
    await fake.wait_call("POST", rf"/interactions/{inter.id}/")
    await fake.wait_call("POST", rf"/channels/{locked}/messages")
    fake.forbid_channel(locked)
    _, _, m2 = await run_imagine(harness, fake.user("bob"), "a white star")
    fake.fail_next("PATCH", rf"/channels/\d+/messages/{m2['id']}$", 500, times=1)
    worker.hold.set()
    await fake.wait_call("PATCH", rf"/channels/\d+/messages/{m2['id']}$",
                                 where=lambda c: any(f.filename == "imagine.png" for f in c.files), timeout=30)
    statuses = [c.status for c in fake.find_calls("PATCH", rf"/channels/\d+/messages/{m2['id']}$")]
    assert 500 in statuses and statuses[-1] == 200, statuses
    # the locked channel's job was tried, refused with 403, and did not stop the other one
    await fake.wait_for(lambda: any(c.status == 403 for c in fake.find_calls(None, rf"/channels/{locked}/")))


async def test_find_and_add_to_gallery(harness, worker):
    await harness.start_bot()
    fake = harness.fake
    ann = fake.user("ann")
    att = fake.upload(png_bytes(), "art.png", "image/png", 64, 64)
    post = fake.post_user_message(ann, "my red circle", [att])
    inter = await fake.message_command("Add to gallery", ann, post)
    cb = await fake.wait_call("POST", rf"/interactions/{inter.id}/")
    assert cb.json["type"] == 5 and cb.json["data"]["flags"] & EPHEMERAL
    done = await fake.wait_call("PATCH", rf"/webhooks/\d+/{inter.token}/messages/",
                                where=lambda c: "Added" in (c.json or {}).get("content", ""))
    assert "Added 1 image" in done.json["content"]
    assert fake.messages[int(done.path.rsplit("/", 1)[1])]["flags"] & EPHEMERAL
    inter = await fake.slash("find", ann, query="red circle", top=3)
    cb = await fake.wait_call("POST", rf"/interactions/{inter.id}/")
    assert cb.json["type"] == 5 and cb.at - inter.sent_at < 3.0
    res = await fake.wait_call("PATCH", rf"/webhooks/\d+/{inter.token}/messages/",
                               where=lambda c: bool((c.json or {}).get("embeds")))
    e = res.json["embeds"][0]
    assert e["thumbnail"]["url"] == att["url"] and post["id"] in e["url"] and "score" in e["title"]
    job = next(j for j in worker.seen if j.kind == "find")
    assert job.query == "red circle" and job.top == 3


async def test_queue_and_cancel_commands(harness, worker):
    worker.hold.clear()
    await harness.start_bot()
    fake = harness.fake
    ann = fake.user("ann")
    await run_imagine(harness, ann, "a red square")
    await run_imagine(harness, ann, "a blue square")
    inter = await fake.slash("queue", ann)
    cb = await fake.wait_call("POST", rf"/interactions/{inter.id}/")
    text = cb.json["data"]["content"]
    assert cb.json["data"]["flags"] & EPHEMERAL
    assert "imagine a red square" in text and "imagine a blue square" in text and "Workers online" in text
    mine = await harness.queue.user_jobs(ann.id)
    inter = await fake.slash("cancel", fake.user("eve"), job=mine[0].id)
    cb = await fake.wait_call("POST", rf"/interactions/{inter.id}/")
    assert "Only the member" in cb.json["data"]["content"]
    inter = await fake.slash("cancel", ann)  # default: the newest job
    cb = await fake.wait_call("POST", rf"/interactions/{inter.id}/")
    assert "Cancelling" in cb.json["data"]["content"]
    worker.hold.set()


async def test_result_after_the_interaction_token_expired_goes_to_the_channel(harness, worker):
    """Interaction tokens last 15 minutes; a later result is posted with the bot token, mentioning the member."""
    import time

    worker.hold_fast.clear()
    await harness.start_bot()
    fake = harness.fake
    ann = fake.user("ann")
    inter = await fake.slash("classify", ann, image=fake.upload(png_bytes(), "s.png", "image/png", 64, 64),
                             labels="circle, square")
    await fake.wait_call("PATCH", rf"/webhooks/\d+/{inter.token}/messages/")  # "Classifying…"
    await fake.wait_for(lambda: worker.seen)
    bot = harness.bot
    await bot.records.update(worker.seen[0].id, created=time.time() - 16 * 60)  # as if 16 minutes passed
    worker.hold_fast.set()
    post = await fake.wait_call("POST", rf"/channels/{fake.channel_id}/messages",
                                where=lambda c: "```" in (c.json or {}).get("content", ""))
    assert post.json["content"].startswith(f"<@{ann.id}>")
    assert not [c for c in fake.responses(inter) if "```" in (c.json or {}).get("content", "")]


async def test_result_edits_original_even_without_its_message_id(harness, worker):
    worker.hold_fast.clear()
    await harness.start_bot()
    fake = harness.fake
    inter = await fake.slash("find", fake.user("ann"), query="a red circle")
    await fake.wait_call("PATCH", rf"/webhooks/\d+/{inter.token}/messages/")  # "Searching…"
    await fake.wait_for(lambda: worker.seen)
    await harness.bot.records.update(worker.seen[0].id, original_message_id=None)
    worker.hold_fast.set()
    res = await fake.wait_call("PATCH", rf"/webhooks/\d+/{inter.token}/messages/@original$",
                               where=lambda c: "nothing in this server's gallery" in (c.json or {}).get("content", ""))
    assert res.status == 200


async def test_result_too_large_for_the_server_keeps_the_image(harness, worker):
    await harness.start_bot()
    fake = harness.fake
    fake.fail_next("PATCH", r"/channels/\d+/messages/\d+$", 413,
                   where=lambda c: any(f.filename == "timelapse.gif" for f in c.files))
    _, _, msg = await run_imagine(harness, fake.user("ann"), "a huge red circle")
    final = await fake.wait_call("PATCH", rf"/channels/\d+/messages/{msg['id']}$", timeout=30,
                                 where=lambda c: c.status == 200 and any(f.filename == "imagine.png" for f in c.files))
    assert [f.filename for f in final.files] == ["imagine.png"] and "too large" in final.json["content"]
    assert any(c.status == 413 for c in fake.find_calls("PATCH", rf"/channels/\d+/messages/{msg['id']}$"))
    await fake.wait_for(lambda: fake.bot_reactions(msg["id"]) == ["👍", "👎"])
