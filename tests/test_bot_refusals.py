"""Every refusal is an ephemeral answer that says why, sent before anything is queued."""
import asyncio

import pytest

from tests.bot_harness import harness, png_bytes  # noqa: F401
from tests.fake_discord import EPHEMERAL, PERM_MANAGE_GUILD, PERM_VIEW_SEND

MiB = 1024 * 1024


async def refusal(h, inter) -> str:
    """The ephemeral text the member saw for this interaction (initial answer or followup)."""
    fake = h.fake
    call = await fake.wait_for(lambda: next((c for c in fake.responses(inter) if c.method == "POST" and c.json and (
        (c.json.get("type") == 4 and c.json["data"].get("flags", 0) & EPHEMERAL)
        or (c.json.get("flags", 0) & EPHEMERAL and "/webhooks/" in c.path))), None))
    assert call.at - inter.sent_at < 3.0
    return call.json["data"]["content"] if "type" in call.json else call.json["content"]


async def assert_nothing_queued(h):
    await asyncio.sleep(0.05)
    for lane in ("fast", "imagine"):
        assert await h.queue.queue_length(lane) == 0
        assert await h.queue.redis.xlen(f"clipbot:stream:{lane}") == 0


@pytest.fixture
async def bot(harness):
    await harness.start_bot()
    return harness


def image_att(fake, data=None, ctype="image/png", name="shape.png", w=64, h=64, size=None):
    return fake.upload(png_bytes() if data is None else data, name, ctype, w, h, size=size)


CASES = {
    "not an image (type)": (lambda f: dict(image=image_att(f, b"hello", "text/plain", "notes.txt", None, None),
                                           labels="a, b"), "not an image"),
    "too large": (lambda f: dict(image=image_att(f, size=11 * MiB), labels="a, b"), "the limit is 10.0 MB"),
    "image too big in pixels": (lambda f: dict(image=image_att(f, w=5000, h=300), labels="a, b"), "largest side"),
    "image too small": (lambda f: dict(image=image_att(f, w=4, h=4), labels="a, b"), "at least 16x16"),
    "lies about its type": (lambda f: dict(image=image_att(f, b"%PDF-1.7 fake", "image/png", "x.png"), labels="a, b"),
                            "PDF document"),
    "corrupt image": (lambda f: dict(image=image_att(f, png_bytes()[:60]), labels="a, b"), "corrupt or truncated"),
    "one label": (lambda f: dict(image=image_att(f), labels="cat"), "at least 2 different labels"),
    "label too long": (lambda f: dict(image=image_att(f), labels="a, " + "b" * 101), "at most 100"),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_classify_refusals(bot, case):
    make, expected = CASES[case]
    fake = bot.fake
    inter = await fake.slash("classify", fake.user("ann"), **make(fake))
    assert expected in await refusal(bot, inter)
    await assert_nothing_queued(bot)
    # a deferred "thinking…" placeholder (for checks after the download) is removed, not left hanging
    for c in fake.responses(inter):
        if c.method == "POST" and c.json.get("type") == 5:
            assert any(d.method == "DELETE" for d in fake.responses(inter))


@pytest.mark.parametrize("prompt,opts,expected", [
    ("a red circle:1 | a blue star:-1", {}, "sum to zero"),
    ("x" * 301, {}, "the limit is 300"),
    ("a red circle", {"size": "big"}, "not WIDTHxHEIGHT"),
    ("a red circle", {"size": "4000x16"}, "out of range"),
])
async def test_imagine_refusals(bot, prompt, opts, expected):
    fake = bot.fake
    inter = await fake.slash("imagine", fake.user("ann"), prompt=prompt, **opts)
    assert expected in await refusal(bot, inter)
    await assert_nothing_queued(bot)


async def test_imagine_init_image_checked(bot):
    fake = bot.fake
    att = image_att(fake, b"GIF89a-not-really", "image/gif", "a.gif")
    inter = await fake.slash("imagine", fake.user("ann"), prompt="a red circle", init_image=att)
    assert "corrupt or truncated" in await refusal(bot, inter)
    await assert_nothing_queued(bot)


async def set_config(bot, **opts):
    fake = bot.fake
    admin = fake.user("admin", PERM_VIEW_SEND | PERM_MANAGE_GUILD)
    inter = await fake.slash("config", admin, **opts)
    call = await fake.wait_call("POST", rf"/interactions/{inter.id}/")
    assert call.json["data"]["flags"] & EPHEMERAL
    return call.json["data"]["content"]


async def test_banned_word_channel_allow_list_and_config_permission(bot):
    fake = bot.fake
    ann = fake.user("ann")
    inter = await fake.slash("config", ann, ban_word="ugly")
    assert "Manage Server" in await refusal(bot, inter)
    text = await set_config(bot, ban_word="Ugly")
    assert "`Ugly`" in text
    inter = await fake.slash("imagine", ann, prompt="an UGLY red circle")
    assert "does not allow ('Ugly')" in await refusal(bot, inter)
    inter = await fake.slash("find", ann, query="ugly things")
    assert "does not allow" in await refusal(bot, inter)
    inter = await fake.slash("imagine", ann, prompt="an uglyish circle")  # whole words only
    await fake.wait_call("POST", rf"/interactions/{inter.id}/", where=lambda c: "Queued" in c.json["data"]["content"])
    art2 = await fake.create_channel("art-2")
    text = await set_config(bot, allow_channel=art2)
    assert f"<#{art2}>" in text
    inter = await fake.slash("find", ann, query="red circle")  # in the default channel: not allowed
    msg = await refusal(bot, inter)
    assert "this channel" in msg and f"<#{art2}>" in msg
    inter = await fake.slash("find", ann, channel=art2, query="red circle")
    cb = await fake.wait_call("POST", rf"/interactions/{inter.id}/")
    assert cb.json["type"] == 5


async def test_user_limit_and_cooldown(harness):
    await harness.start_bot(cooldown_s=0.0, user_max_jobs=2)
    fake = harness.fake
    ann = fake.user("ann")
    for i in range(2):  # no worker runs: both stay queued
        inter = await fake.slash("imagine", ann, prompt=f"a red circle {i}")
        cb = await fake.wait_call("POST", rf"/interactions/{inter.id}/")
        assert f"position {i + 1}" in cb.json["data"]["content"]
    inter = await fake.slash("imagine", ann, prompt="a third one")
    assert "You already have 2 jobs queued or running (limit 2)" in await refusal(harness, inter)
    assert await harness.queue.queue_length("imagine") == 2
    await set_config(harness, cooldown=30, max_jobs=5)
    bob = fake.user("bob")
    inter = await fake.slash("imagine", bob, prompt="a blue star")
    await fake.wait_call("POST", rf"/interactions/{inter.id}/", where=lambda c: "Queued" in c.json["data"]["content"])
    inter = await fake.slash("imagine", bob, prompt="another blue star")
    msg = await refusal(harness, inter)
    assert "Slow down" in msg and ("30 s" in msg or "29 s" in msg)


async def test_cancel_refusals(bot):
    fake = bot.fake
    inter = await fake.slash("cancel", fake.user("ann"))
    assert "no queued or running jobs" in await refusal(bot, inter)
    inter = await fake.slash("cancel", fake.user("ann"), job="0123456789abcdef0123456789abcdef")
    assert "There is no job" in await refusal(bot, inter)


async def test_add_to_gallery_without_images(bot):
    fake = bot.fake
    ann = fake.user("ann")
    post = fake.post_user_message(ann, "just words", [])
    inter = await fake.message_command("Add to gallery", ann, post)
    assert "no image attachments" in await refusal(bot, inter)


async def test_imagine_in_a_channel_the_bot_cannot_post_in(bot):
    fake = bot.fake
    locked = await fake.create_channel("locked")
    fake.forbid_channel(locked)
    ann = fake.user("ann")
    inter = await fake.slash("imagine", ann, channel=locked, prompt="a red circle")
    note = await fake.wait_call("POST", rf"/webhooks/\d+/{inter.token}$")
    assert note.json["flags"] & EPHEMERAL and "can't post in this channel" in note.json["content"]
    for _ in range(50):
        if not await bot.queue.user_jobs(ann.id):
            break
        await asyncio.sleep(0.05)
    assert not await bot.queue.user_jobs(ann.id)  # cancelled: it does not hold the member's slot
