"""The bot's pure logic without Discord: checks, rendering, the throttled editor, votes (real Redis)."""
import asyncio
import time

import pytest
import redis.asyncio as aioredis

from bot import limits, render
from bot.guild_config import GuildConfig
from bot.limits import AttachmentMeta, Refused
from bot.progress import LatestFrameEditor
from bot.votes import Generation, VoteBook
from jobs.settings import Settings
from tests.bot_harness import png_bytes

S = Settings()


def test_attachment_meta_checks():
    ok = AttachmentMeta("a.png", 1000, "image/png", 64, 64)
    assert limits.check_attachment_meta(ok, S) is None
    assert limits.check_attachment_meta(AttachmentMeta("a.png", 1000, None, None, None), S) is None  # by extension
    assert "not an image" in limits.check_attachment_meta(AttachmentMeta("a.pdf", 10, "application/pdf", None, None), S)
    assert "10.0 MB" in limits.check_attachment_meta(AttachmentMeta("a.png", 11 << 20, "image/png", 64, 64), S)
    assert "at least 16x16" in limits.check_attachment_meta(AttachmentMeta("a.png", 10, "image/png", 8, 64), S)
    assert "largest side" in limits.check_attachment_meta(AttachmentMeta("a.png", 10, "image/png", 4097, 64), S)


def test_image_bytes_checks():
    assert limits.check_image_bytes("a.png", png_bytes(), S) is None
    assert "PDF document" in limits.check_image_bytes("a.png", b"%PDF-1.4 ...", S)
    assert "corrupt" in limits.check_image_bytes("a.png", png_bytes()[:50], S)
    assert "at least 16x16" in limits.check_image_bytes("a.png", png_bytes((8, 8)), S)


def test_banned_words_are_whole_words_case_insensitive():
    cfg = GuildConfig(banned_words=["gore", "bad word"])
    assert limits.find_banned(cfg, "a GORE scene")
    assert limits.find_banned(cfg, "x", "a Bad Word here")
    assert limits.find_banned(cfg, "a gorgeous sunset") is None
    assert limits.find_banned(GuildConfig(), "anything") is None


def test_channel_allow_list():
    assert limits.check_channel(GuildConfig(), 5) is None
    assert limits.check_channel(GuildConfig(allowed_channels=[5]), 5) is None
    assert "<#5>" in limits.check_channel(GuildConfig(allowed_channels=[5]), 6)


def test_labels_prompt_size_query():
    assert limits.parse_labels(" red circle ,blue square,, Red Circle") == ["red circle", "blue square"]
    with pytest.raises(Refused, match="at least 2"):
        limits.parse_labels("one")
    assert limits.check_prompt("a red circle | a blue star:0.5") is None
    assert "sum to zero" in limits.check_prompt("a:1 | b:-1")
    assert limits.parse_size(None) == (0, 0)
    assert limits.parse_size("64x48") == (64, 48) and limits.parse_size("96") == (96, 96)
    with pytest.raises(Refused):
        limits.parse_size("2000x2000")
    assert "empty" in limits.check_query("   ")


def test_render():
    assert render.progress_bar(5, 10, width=10).startswith("`█████░░░░░`  50%")
    chart = render.bar_chart([("b", 0.25), ("a", 0.75)], width=4)
    lines = chart.strip("`\n").split("\n")
    assert lines[0].startswith("a ███") and lines[0].endswith("75.0%") and lines[1].startswith("b █ ")


async def test_editor_coalesces_and_spaces_edits():
    seen = []

    async def edit(frame):
        seen.append((time.monotonic(), frame))
        await asyncio.sleep(0.01)

    ed = LatestFrameEditor(0.2, edit)
    for i in range(50):  # 50 frames over ~0.5 s
        ed.offer(i)
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)
    await ed.close()
    frames = [f for _, f in seen]
    assert frames[0] == 0 and frames[-1] == 49  # first at once, the newest last
    assert len(frames) <= 5  # ~0.5 s / 0.2 s, never one per frame
    gaps = [b - a for (a, _), (b, _) in zip(seen, seen[1:])]
    assert min(gaps) >= 0.2


async def test_editor_survives_a_failing_edit():
    calls = []

    async def edit(frame):
        calls.append(frame)
        if frame == 0:
            raise RuntimeError("boom")

    ed = LatestFrameEditor(0.05, edit)
    ed.offer(0)
    await asyncio.sleep(0.02)
    ed.offer(1)
    await asyncio.sleep(0.15)
    await ed.close()
    assert calls == [0, 1]


async def test_votes_atomic_repeat_proof_and_leaderboard(redis_url):
    r = aioredis.from_url(redis_url)
    book = VoteBook(r, "t:")
    now = time.time()
    await book.register(Generation("j1", 7, 1, 100, 42, "old one", now - 10 * 86400))
    await book.register(Generation("j2", 7, 1, 200, 42, "new one", now))
    assert await book.vote(999, 7, 1, up=True, add=True) is None  # not a generation
    res = await book.vote(100, 7, 1, up=True, add=True)
    assert (res.changed, res.up, res.down) == (True, 1, 0)
    res = await book.vote(100, 7, 1, up=True, add=True)
    assert (res.changed, res.up) == (False, 1)  # repeat
    await book.vote(100, 7, 2, up=True, add=True)
    await book.vote(200, 7, 3, up=True, add=True)
    await book.vote(200, 7, 4, up=False, add=True)
    await book.vote(200, 7, 4, up=False, add=False)
    await book.register(Generation("j2", 7, 1, 200, 42, "new one", now))  # re-register keeps counts
    top = await book.top(7, "all")
    assert [(g.job_id, g.up, g.down) for g in top] == [("j1", 2, 0), ("j2", 1, 0)]
    assert [g.job_id for g in await book.top(7, "week")] == ["j2"]
    assert await book.claim_hall_of_fame("j1") and not await book.claim_hall_of_fame("j1")
    await r.aclose()


async def test_bot_redis_pool_waits_for_a_connection_instead_of_failing(redis_url):
    """A burst of commands must queue for connections (redis-py's default pool raises MaxConnectionsError)."""
    from jobs.queue import queue_from_url

    q = queue_from_url(redis_url, max_connections=3)
    await asyncio.gather(*(q.redis.blpop([f"nothing-{i}"], timeout=0.05) for i in range(12)))  # each holds one
    await q.redis.aclose()
