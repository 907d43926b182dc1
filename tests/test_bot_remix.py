"""Find by picture, Find similar, variations, Refine with lineage, Pick a frame: through the real
bot, the fake Discord, a real Redis and the scripted worker (real events in the worker's shape)."""
import asyncio

import pytest

from tests.bot_harness import PICTURE_COLOURS, ScriptedWorker, frame_colour, harness, png_bytes  # noqa: F401
from tests.fake_discord import EPHEMERAL, PERM_MANAGE_GUILD, PERM_VIEW_SEND
from tests.test_bot_flows import components_custom_ids, run_imagine
from tests.test_bot_refusals import assert_nothing_queued, refusal


@pytest.fixture
async def worker(harness):
    w = ScriptedWorker(harness.queue).start()
    yield w
    await w.stop()


def jobs_of(worker, kind):
    return [j for j in worker.seen if j.kind == kind]


async def finished(h, msg, worker, n=1):
    """The generation message once its final post (with components) is there."""
    fake = h.fake
    await fake.wait_for(lambda: any(c.startswith("clipbot:similar:") for c in
                                    components_custom_ids(fake.messages[int(msg["id"])])), timeout=30)
    await fake.wait_for(lambda: fake.bot_reactions(msg["id"]) == ["👍", "👎"])  # followed up: in /history too
    return fake._message_json(int(msg["id"]))


def pixel(data: bytes) -> tuple:
    from io import BytesIO

    from PIL import Image
    return Image.open(BytesIO(data)).convert("RGB").getpixel((5, 5))


# ---------------------------------------------------------------------------------------- find


async def test_find_by_image_and_by_text_plus_image(harness, worker):
    await harness.start_bot()
    fake = harness.fake
    ann = fake.user("ann")
    upload = png_bytes(color=(1, 2, 3))
    inter = await fake.slash("find", ann, image=fake.upload(upload, "mine.png", "image/png", 64, 64))
    final = await fake.wait_call("PATCH", rf"/webhooks/\d+/{inter.token}/messages/",
                                 where=lambda c: "your picture" in (c.json or {}).get("content", "")
                                 and "Searching" not in c.json["content"])
    assert "nothing in this server's gallery yet for your picture" in final.json["content"]
    job = jobs_of(worker, "find")[0]
    assert job.query is None and await harness.queue.get_blob(job.image) == upload
    inter = await fake.slash("find", ann, query="a red star", image=fake.upload(upload, "m.png", "image/png", 64, 64))
    await fake.wait_for(lambda: len(jobs_of(worker, "find")) == 2)
    both = jobs_of(worker, "find")[1]
    assert both.query == "a red star" and both.image is not None


async def test_find_needs_text_or_picture_and_checks_the_picture(harness, worker):
    await harness.start_bot()
    fake = harness.fake
    ann = fake.user("ann")
    assert "something to look for" in await refusal(harness, await fake.slash("find", ann))
    assert "something to look for" in await refusal(harness, await fake.slash("find", ann, query="   "))
    bad = fake.upload(b"%PDF-1.7 fake", "x.png", "image/png", 64, 64)
    assert "PDF document" in await refusal(harness, await fake.slash("find", ann, image=bad))
    await assert_nothing_queued(harness)
    assert not worker.seen


async def test_find_similar_message_menu(harness, worker):
    await harness.start_bot()
    fake = harness.fake
    ann, bob = fake.user("ann"), fake.user("bob")
    data = png_bytes(color=(9, 9, 9))
    posted = fake.post_user_message(bob, "look", [fake.upload(data, "cat.png", "image/png", 64, 64)])
    inter = await fake.message_command("Find similar", ann, posted)
    await fake.wait_for(lambda: jobs_of(worker, "find"))
    job = jobs_of(worker, "find")[0]
    assert job.query is None and await harness.queue.get_blob(job.image) == data and job.user == ann.id
    await fake.wait_call("PATCH", rf"/webhooks/\d+/{inter.token}/messages/",
                         where=lambda c: "best matches" in (c.json or {}).get("content", "")
                         or "nothing in this server" in (c.json or {}).get("content", ""))
    text_only = fake.post_user_message(bob, "no picture here", [])
    answer = await refusal(harness, await fake.message_command("Find similar", ann, text_only))
    assert "no picture" in answer
    assert len(jobs_of(worker, "find")) == 1


# ---------------------------------------------------------------------------------------- variations


async def test_variations_post_every_picture_grid_and_per_picture_buttons(harness, worker):
    await harness.start_bot()
    fake = harness.fake
    ann = fake.user("ann")
    _, _, msg = await run_imagine(harness, ann, "a red circle", count=4, seed=100)
    final = await finished(harness, msg, worker)
    job = jobs_of(worker, "imagine")[0]
    assert job.count == 4
    edit = [c for c in fake.find_calls("PATCH", rf"/channels/\d+/messages/{msg['id']}$") if c.status == 200][-1]
    assert [f.filename for f in edit.files] == ["grid.png", "picture_1.png", "picture_2.png", "picture_3.png",
                                                "picture_4.png", "timelapse.gif"]
    assert [pixel(f.data) for f in edit.files[1:5]] == PICTURE_COLOURS  # each picture its own PNG
    assert "4 variations" in final["content"]
    ids = components_custom_ids(final)
    assert ids == ([f"clipbot:reroll:{job.id}"] + [f"clipbot:refine:{job.id}:{k}" for k in range(1, 5)]
                   + [f"clipbot:similar:{job.id}:{k}" for k in range(1, 5)] + [f"clipbot:frame:{job.id}"])
    # votes count per message: one generation, reactions on the one message
    await fake.wait_for(lambda: fake.bot_reactions(msg["id"]) == ["👍", "👎"])
    # every picture goes to the gallery, as items "<message>:<k-1>" (queued after the vote register)
    await fake.wait_for(lambda: jobs_of(worker, "index"))
    assert await harness.bot.votes.job_for_message(int(msg["id"])) == job.id
    assert [i.item_id for i in jobs_of(worker, "index")[0].add] == [f"{msg['id']}:{k}" for k in range(4)]


async def test_similar_button_searches_with_that_picture(harness, worker):
    await harness.start_bot()
    fake = harness.fake
    ann, bob = fake.user("ann"), fake.user("bob")
    _, _, msg = await run_imagine(harness, ann, "a blue star", count=2)
    final = await finished(harness, msg, worker)
    job = jobs_of(worker, "imagine")[0]
    inter = await fake.click(final, f"clipbot:similar:{job.id}:2", bob)
    await fake.wait_for(lambda: jobs_of(worker, "find"))
    find = jobs_of(worker, "find")[0]
    assert pixel(await harness.queue.get_blob(find.image)) == PICTURE_COLOURS[1] and find.user == bob.id
    cb = await fake.wait_call("POST", rf"/interactions/{inter.id}/")
    assert cb.json["type"] == 5
    # a generation the bot no longer knows (its stored result expired): a private answer, nothing queued
    await harness.queue.redis.delete(f"clipbot:bot:result:{job.id}")
    answer = await refusal(harness, await fake.click(final, f"clipbot:similar:{job.id}:1", bob))
    assert "no longer know" in answer
    await asyncio.sleep(0.2)
    assert len(jobs_of(worker, "find")) == 1


# ---------------------------------------------------------------------------------------- refine + lineage


async def test_refine_continues_that_picture_and_records_lineage(harness, worker):
    worker.steps = 6
    await harness.start_bot(refine_steps=9)
    fake = harness.fake
    ann, bob = fake.user("ann"), fake.user("bob")
    _, _, msg = await run_imagine(harness, ann, "a green square", count=3, seed=40)
    final = await finished(harness, msg, worker)
    parent = jobs_of(worker, "imagine")[0]
    inter = await fake.click(final, f"clipbot:refine:{parent.id}:2", bob)
    cb = await fake.wait_call("POST", rf"/interactions/{inter.id}/")
    assert cb.json["data"]["flags"] & EPHEMERAL and "Queued" in cb.json["data"]["content"]
    await fake.wait_for(lambda: len(jobs_of(worker, "imagine")) == 2)
    child = jobs_of(worker, "imagine")[1]
    assert (child.prompt, child.seed, child.steps, child.count) == ("a green square", 41, 9, 1)
    assert (child.parent, child.parent_index, child.user) == (parent.id, 2, bob.id)
    assert pixel(await harness.queue.get_blob(child.init_image)) == PICTURE_COLOURS[1]
    link = f"https://discord.com/channels/{fake.guild_id}/{fake.channel_id}/{msg['id']}"
    child_msg = await fake.wait_for(lambda: next((m for m in fake.channel_messages(via="channel")
                                                  if "refines" in m["content"] and "clipbot:similar:" in
                                                  str(m["components"])), None), timeout=30)
    assert f"[picture 2 of this generation]({link})" in child_msg["content"]
    # one picture: plain custom ids
    assert f"clipbot:refine:{child.id}" in components_custom_ids(child_msg)
    # /top shows the lineage of both once they have votes
    for m in (msg, child_msg):
        await fake.wait_for(lambda m=m: fake.bot_reactions(m["id"]) == ["👍", "👎"])
        await fake.react(m, fake.user("voter"), "👍")
    await asyncio.sleep(0.3)
    inter = await fake.slash("top", ann)
    cb = await fake.wait_call("POST", rf"/interactions/{inter.id}/")
    text = cb.json["data"]["embeds"][0]["description"]
    child_link = f"https://discord.com/channels/{fake.guild_id}/{fake.channel_id}/{child_msg['id']}"
    assert f"refines [picture 2 of the parent]({link})" in text
    assert f"1 remix: [1]({child_link})" in text


async def test_refine_refusals_queue_nothing(harness, worker):
    await harness.start_bot()
    fake = harness.fake
    ann = fake.user("ann")
    _, _, msg = await run_imagine(harness, ann, "a red star")
    final = await finished(harness, msg, worker)
    job = jobs_of(worker, "imagine")[0]
    result = await harness.bot.generations.result(job.id)
    await harness.queue.redis.delete(harness.queue.keys.blob(result.blobs["png"]))  # the picture expired
    answer = await refusal(harness, await fake.click(final, f"clipbot:refine:{job.id}", ann))
    assert "no longer stored" in answer
    await harness.queue.redis.delete(f"clipbot:bot:result:{job.id}")  # the bot forgot the generation
    answer = await refusal(harness, await fake.click(final, f"clipbot:refine:{job.id}", ann))
    assert "no longer know this generation" in answer
    await asyncio.sleep(0.2)
    assert len(jobs_of(worker, "imagine")) == 1


# ---------------------------------------------------------------------------------------- pick a frame


async def test_author_picks_an_earlier_frame(harness, worker):
    worker.steps = 12
    await harness.start_bot()
    fake = harness.fake
    ann, bob = fake.user("ann"), fake.user("bob")
    _, _, msg = await run_imagine(harness, ann, "a purple circle", count=2)
    final = await finished(harness, msg, worker)
    job = jobs_of(worker, "imagine")[0]
    menu = next(c for row in final["components"] for c in row["components"] if c["custom_id"] == f"clipbot:frame:{job.id}")
    assert [o["value"] for o in menu["options"]] == ["1:4", "1:8", "2:4", "2:8"]
    answer = await refusal(harness, await fake.select(final, f"clipbot:frame:{job.id}", ["2:4"], bob))
    assert "Only the member who made" in answer
    inter = await fake.select(final, f"clipbot:frame:{job.id}", ["2:4"], ann)
    cb = await fake.wait_call("POST", rf"/interactions/{inter.id}/")
    assert cb.json["type"] == 7  # the generation's message itself is updated
    stored = fake.messages[int(msg["id"])]
    names = [a["filename"] for a in stored["attachments"]]
    assert sorted(names) == sorted(["grid.png", "picture_1.png", "picture_2.png", "timelapse.gif"])
    replaced = next(a for a in stored["attachments"] if a["filename"] == "picture_2.png")
    path = replaced["url"].split("/cdn/", 1)[1]
    assert pixel(fake.blobs[path][0]) == frame_colour(2, 4)
    kept = next(a for a in stored["attachments"] if a["filename"] == "picture_1.png")
    assert kept["id"] == next(a["id"] for a in final["attachments"] if a["filename"] == "picture_1.png")
    assert "picture 2 shows step 4" in stored["content"]
    # a value that is no frame of this generation
    answer = await refusal(harness, await fake.select(final, f"clipbot:frame:{job.id}", ["2:5"], ann))
    assert "kept no frame at step 5" in answer


# ---------------------------------------------------------------------------------------- history


async def test_history_lists_the_members_generations_privately(harness, worker):
    await harness.start_bot()
    fake = harness.fake
    ann, bob = fake.user("ann"), fake.user("bob")
    inter = await fake.slash("history", ann)
    cb = await fake.wait_call("POST", rf"/interactions/{inter.id}/")
    assert "no finished generations" in cb.json["data"]["content"]
    _, _, first = await run_imagine(harness, ann, "a *bold* circle")
    await finished(harness, first, worker)
    _, _, second = await run_imagine(harness, ann, "a yellow star", count=2)
    await finished(harness, second, worker)
    inter = await fake.slash("history", ann)
    cb = await fake.wait_call("POST", rf"/interactions/{inter.id}/")
    data = cb.json["data"]
    assert data["flags"] & EPHEMERAL
    lines = data["content"].split("\n")
    base = f"https://discord.com/channels/{fake.guild_id}/{fake.channel_id}"
    assert lines[0] == f"• [a yellow star]({base}/{second['id']}) · 2 variations"
    assert lines[1] == f"• [a \\*bold\\* circle]({base}/{first['id']})"
    inter = await fake.slash("history", bob)
    cb = await fake.wait_call("POST", rf"/interactions/{inter.id}/")
    assert "no finished generations" in cb.json["data"]["content"]


async def test_hall_of_fame_shows_the_lineage(harness, worker):
    await harness.start_bot()
    fake = harness.fake
    admin = fake.user("admin", PERM_VIEW_SEND | PERM_MANAGE_GUILD)
    hof = await fake.create_channel("hall-of-fame")
    inter = await fake.slash("config", admin, hall_of_fame_channel=hof, hall_of_fame_threshold=1)
    await fake.wait_call("POST", rf"/interactions/{inter.id}/")
    ann = fake.user("ann")
    _, _, msg = await run_imagine(harness, ann, "an orange star")
    final = await finished(harness, msg, worker)
    parent = jobs_of(worker, "imagine")[0]
    await fake.click(final, f"clipbot:refine:{parent.id}", ann)
    child_msg = await fake.wait_for(lambda: next((m for m in fake.channel_messages(via="channel")
                                                  if "refines" in m["content"]), None))
    await finished(harness, child_msg, worker)
    await fake.react(child_msg, fake.user("bob"), "👍")
    post = await fake.wait_call("POST", rf"/channels/{hof}/messages")
    fields = {f["name"]: f["value"] for f in post.json["embeds"][0]["fields"]}
    link = f"https://discord.com/channels/{fake.guild_id}/{fake.channel_id}/{msg['id']}"
    assert fields["lineage"] == f"refines [the parent]({link})"


class FlaggingWorker(ScriptedWorker):
    """Every generation comes back flagged by the safety check (as a checked worker reports it)."""

    async def _imagine_result(self, job, total: int):
        from jobs.schemas import SafetyVerdict
        result = await super()._imagine_result(job, total)
        verdict = SafetyVerdict(flagged=True, top_label="gore", top_score=0.9, threshold=0.5, scores={"gore": 0.9})
        result.data["safety"] = verdict.model_dump()
        return result


async def test_flagged_variations_stay_spoilers_and_keep_pictures_and_frames_for_the_buttons(harness):
    w = FlaggingWorker(harness.queue, steps=12).start()
    try:
        await harness.start_bot()
        fake = harness.fake
        ann = fake.user("ann")
        _, _, msg = await run_imagine(harness, ann, "a flagged pair", count=2)
        await fake.wait_for(lambda: any(c.startswith("clipbot:similar:") for c in
                                        components_custom_ids(fake.messages[int(msg["id"])])), timeout=30)
        final = fake._message_json(int(msg["id"]))
        assert sorted(a["filename"] for a in final["attachments"]) == sorted(
            ["SPOILER_grid.png", "SPOILER_picture_1.png", "SPOILER_picture_2.png", "SPOILER_timelapse.gif"])
        job = jobs_of(w, "imagine")[0]
        result = await harness.bot.generations.result(job.id)
        # posted: what Refine, Similar and the frame menu reuse is kept, the rest (grid, timelapses) deleted
        from jobs.remix import pictures
        kept = [k for p in pictures(result) for k in [p["png"], *(f["key"] for f in p["frames"])]]
        for _ in range(200):  # the release follows the post
            if await harness.queue.get_blob(result.blobs["grid"]) is None:
                break
            await asyncio.sleep(0.05)
        assert await harness.queue.get_blob(result.blobs["grid"]) is None
        for key in kept:
            assert await harness.queue.get_blob(key) is not None
        # the author's picked frame replaces the hidden picture and stays hidden
        inter = await fake.select(final, f"clipbot:frame:{job.id}", ["2:4"], ann)
        await fake.wait_call("POST", rf"/interactions/{inter.id}/")
        await fake.wait_for(lambda: "picture 2 shows step 4" in fake.messages[int(msg["id"])]["content"])
        names = [a["filename"] for a in fake.messages[int(msg["id"])]["attachments"]]
        assert sorted(names) == sorted(["SPOILER_grid.png", "SPOILER_picture_1.png", "SPOILER_picture_2.png",
                                        "SPOILER_timelapse.gif"])
    finally:
        await w.stop()
