"""Per-server quota and safety settings through the real bot, the fake Discord and a scripted worker.

The worker side of the safety check is tests/test_clip_safety.py; here the worker answers as the
checked worker does (a flagged upload fails with the reason, a flagged generation carries the
verdict) and the bot's side is checked: jobs carry the server's policy, a refusal is private, a
flagged picture is a spoiler kept out of /find, votes and the hall of fame.
"""
import asyncio

import pytest

from jobs.quota import DailyQuota
from jobs.schemas import Failed, Result, SafetyVerdict
from tests.bot_harness import ScriptedWorker, harness, png_bytes  # noqa: F401
from tests.fake_discord import EPHEMERAL, PERM_MANAGE_GUILD, PERM_VIEW_SEND

ADMIN = PERM_VIEW_SEND | PERM_MANAGE_GUILD
REFUSAL = "This image was refused by this server's safety check (it looks like 'gore')."


class CheckingWorker(ScriptedWorker):
    """Answers like a worker whose safety check flags: uploads of jobs with a policy fail with the
    refusal, and generations whose prompt says "flag" carry a flagged verdict."""

    async def _handle(self, d) -> None:
        job, q = d.job, self.queue
        if getattr(job, "safety", None) is not None and (job.kind in ("classify", "index")
                                                        or getattr(job, "init_image", None)):
            self.seen.append(job)
            await q.finish(d, Failed(job_id=job.id, seq=0, reason=REFUSAL))
            return
        if job.kind == "imagine" and "flag" in job.prompt:
            self.seen.append(job)
            verdict = SafetyVerdict(flagged=True, top_label="gore", top_score=0.9, threshold=0.5,
                                    scores={"gore": 0.9, "a photo": 0.1})
            png = await q.put_blob(png_bytes((64, 64), (200, 0, 0)))
            gif = await q.put_blob(b"GIF89a" + b"\x00" * 32)
            await q.finish(d, Result(job_id=job.id, seq=0, data={"seed": job.seed, "steps": 3,
                                                                 "safety": verdict.model_dump()},
                                     blobs={"png": png, "gif": gif}))
            return
        await super()._handle(d)


@pytest.fixture
async def worker(harness):
    w = CheckingWorker(harness.queue, steps=2, step_delay=0.02).start()
    yield w
    await w.stop()


async def private_text(fake, inter) -> str:
    def found():
        for c in fake.responses(inter):
            data = c.json.get("data", c.json) if isinstance(c.json, dict) else {}
            if data.get("flags", 0) & EPHEMERAL and data.get("content"):
                return data["content"]
        return None
    return await fake.wait_for(found)


async def test_quota_settings_and_the_quota_command(harness, worker):
    fake = harness.fake
    helpers = fake.add_role("helpers")
    bot = await harness.start_bot()
    admin, ann = fake.user("admin", ADMIN), fake.user("ann")
    assert "no daily generation limit" in await private_text(fake, await fake.slash("quota", ann))
    text = await private_text(fake, await fake.slash("config", admin, daily_quota=2, quota_exempt_role=helpers))
    assert "**Daily generations per member:** 2" in text and f"<@&{helpers}>" in text
    cfg = await bot.configs.get(fake.guild_id)
    assert (cfg.daily_quota, cfg.quota_exempt_role) == (2, helpers)
    assert "**2** of 2 generations left today" in await private_text(fake, await fake.slash("quota", ann))
    await DailyQuota(harness.queue.redis).reserve(fake.guild_id, ann.id, "job-1", 2)
    text = await private_text(fake, await fake.slash("quota", ann))
    assert "**1** of 2 generation left today" in text and "resets at midnight UTC, in" in text
    ann.roles = [helpers]
    assert "exempt" in await private_text(fake, await fake.slash("quota", ann))
    text = await private_text(fake, await fake.slash("config", admin, daily_quota=0, clear_quota_exempt_role=True))
    assert "**Daily generations per member:** unlimited" in text
    assert (await bot.configs.get(fake.guild_id)).quota_exempt_role is None


async def test_safety_settings_reach_every_job_and_refusals_are_private(harness, worker):
    await harness.start_bot()
    fake = harness.fake
    admin, ann = fake.user("admin", ADMIN), fake.user("ann")
    text = await private_text(fake, await fake.slash("config", admin, safety_labels="x" * 101))
    assert "characters; the limit is" in text and "Nothing was changed" in text
    text = await private_text(fake, await fake.slash("config", admin, safety_labels="gore, gore , blood",
                                                     safety_threshold=0.4))
    assert "**Safety check:** `gore`, `blood` at 0.4" in text
    # /classify: the refusal replaces the public placeholder with a private answer
    att = fake.upload(png_bytes(), "shape.png", "image/png", 64, 64)
    inter = await fake.slash("classify", ann, image=att, labels="red circle, blue square")
    assert REFUSAL in await private_text(fake, inter)
    await fake.wait_call("DELETE", rf"/webhooks/\d+/{inter.token}/messages/")
    job = next(j for j in worker.seen if j.kind == "classify")
    assert job.safety.labels == ["gore", "blood"] and job.safety.threshold == 0.4
    public = [m for m in fake.channel_messages() if REFUSAL in m["content"] and not m["flags"] & EPHEMERAL]
    assert public == []
    # /imagine with a start image: the generation's message says it failed, the reason goes privately
    init = fake.upload(png_bytes(), "start.png", "image/png", 64, 64)
    inter = await fake.slash("imagine", ann, prompt="a red circle", init_image=init)
    final = await fake.wait_call("PATCH", r"/channels/\d+/messages/\d+$",
                                 where=lambda c: "failed" in ((c.json or {}).get("content") or ""))
    assert REFUSAL not in final.json["content"] and "failed (the reason was sent to its author privately)" in final.json["content"]
    note = await fake.wait_call("POST", rf"/webhooks/\d+/{inter.token}$",
                                where=lambda c: REFUSAL in ((c.json or {}).get("content") or ""))
    assert note.json["flags"] & EPHEMERAL
    # "Add to gallery" carries the policy too
    msg = fake.post_user_message(ann, "mine", [fake.upload(png_bytes(), "g.png", "image/png", 64, 64)])
    inter = await fake.message_command("Add to gallery", ann, msg)
    cb = await fake.wait_call("POST", rf"/interactions/{inter.id}/")
    assert cb.json["data"]["flags"] & EPHEMERAL  # the deferred answer it edits is private
    await fake.wait_call("PATCH", rf"/webhooks/\d+/{inter.token}/messages/",
                         where=lambda c: REFUSAL in ((c.json or {}).get("content") or ""))
    assert next(j for j in worker.seen if j.kind == "index").safety.labels == ["gore", "blood"]
    # off again: jobs carry no policy
    await private_text(fake, await fake.slash("config", admin, safety_labels="off"))
    inter = await fake.slash("imagine", ann, prompt="a blue star")
    await fake.wait_for(lambda: any(j.kind == "imagine" and j.prompt == "a blue star" for j in worker.seen))
    assert next(j for j in worker.seen if j.kind == "imagine" and j.prompt == "a blue star").safety is None


async def test_a_flagged_generation_is_a_spoiler_kept_out_of_find_votes_and_hall_of_fame(harness, worker):
    await harness.start_bot()
    fake = harness.fake
    admin, ann, bob = fake.user("admin", ADMIN), fake.user("ann"), fake.user("bob")
    hof = await fake.create_channel("hall-of-fame")
    await private_text(fake, await fake.slash("config", admin, safety_labels="gore", hall_of_fame_channel=hof,
                                              hall_of_fame_threshold=1))
    await fake.slash("imagine", ann, prompt="flag me")
    final = await fake.wait_call("PATCH", r"/channels/\d+/messages/\d+$",
                                 where=lambda c: any(f.filename.endswith("imagine.png") for f in c.files))
    assert sorted(f.filename for f in final.files) == ["SPOILER_imagine.png", "SPOILER_timelapse.gif"]
    assert "safety check marked this picture" in final.json["content"]
    # Refine and Similar stay: what they queue goes through the server's safety check again
    ids = [c["custom_id"] for row in final.json.get("components", []) for c in row.get("components", [])]
    assert any(i.startswith("clipbot:refine:") for i in ids) and any(i.startswith("clipbot:similar:") for i in ids)
    mid = final.path.rsplit("/", 1)[1]
    msg = fake._message_json(int(mid))
    await fake.react(msg, bob, "👍")  # no votes: never the hall of fame
    await fake.slash("imagine", ann, prompt="a fine circle")  # an ordinary one still gets all of it
    await fake.wait_for(lambda: any(j.kind == "index" for j in worker.seen), timeout=30)
    await asyncio.sleep(0.3)
    assert [j.add[0].caption for j in worker.seen if j.kind == "index"] == ["a fine circle"]
    assert fake.bot_reactions(mid) == [] and not fake.find_calls("POST", rf"/channels/{hof}/messages")
    assert await harness.queue.redis.get(f"clipbot:bot:genmsg:{mid}") is None
