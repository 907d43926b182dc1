"""Shared set-up for the bot tests (no tests here): a real Redis, the fake Discord, the real bot, a worker.

`Harness` starts, stops and restarts the real `ClipBot` against a `FakeDiscord`; the `harness`
fixture gives one per test (import it into the test module); `ScriptedWorker` serves jobs on the
real transport with timing the test controls; `png_bytes` makes a small real PNG.
"""
from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from PIL import Image

from bot.app import ClipBot, point_discord_at
from jobs.client import cancel_by
from jobs.keys import FAST, IMAGINE
from jobs.queue import Queue, queue_from_url
from jobs.schemas import Cancelled, Progress, Result, Started
from jobs.settings import Settings
from tests.fake_discord import FakeDiscord


def png_bytes(size=(64, 64), color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


class Harness:
    """One fake Discord + one Redis; the bot can be started, stopped and restarted."""

    def __init__(self, fake: FakeDiscord, redis_url: str, tmp: Path):
        self.fake = fake
        self.redis_url = redis_url
        self.tmp = tmp
        self.bot: ClipBot | None = None
        self._task: asyncio.Task | None = None
        self.queue: Queue = queue_from_url(redis_url)  # the tests' own handle (inspection, in-test worker)
        self.settings_overrides: dict = {}

    async def start_bot(self, **overrides) -> ClipBot:
        s = dict(discord_token="test-token", discord_api_base=self.fake.api_base, discord_gateway_url=self.fake.gateway_url,
                 edit_interval_s=0.5, cooldown_s=0.0, user_max_jobs=3,
                 guild_ready_timeout_s=0.05)
        s.update(self.settings_overrides)
        s.update(overrides)
        settings = Settings(**s)
        point_discord_at(settings.discord_api_base, settings.discord_gateway_url)
        self.fake.identifies.clear()
        self.bot = ClipBot(settings, queue_from_url(self.redis_url), consumer="bot-test")
        self._task = asyncio.create_task(self.bot.start(settings.discord_token))
        await self.fake.wait_ready()
        await asyncio.wait_for(self.bot.wait_until_ready(), 20)
        return self.bot

    async def stop_bot(self) -> None:
        if self.bot is not None:
            await asyncio.wait_for(self.bot.close(), 10)
            try:
                await asyncio.wait_for(self._task, 10)
            except Exception:
                pass
            await self.bot.queue.redis.aclose()
            self.bot = None

    async def close(self) -> None:
        """Stop the bot, then the tests' own Redis handle and the fake Discord."""
        await self.stop_bot()
        await self.queue.redis.aclose()
        await self.fake.stop()


@pytest.fixture
async def harness(redis_server, tmp_path):  # redis_server: tests/conftest.py (a real redis-server)
    fake = await FakeDiscord().start()
    h = Harness(fake, redis_server.url, tmp_path)
    try:
        yield h
    finally:
        await h.close()
    assert not fake.errors, fake.errors


class ScriptedWorker:
    """An in-test worker on the real transport: takes real jobs from Redis and publishes real
    events, with timing the test controls (how many progress frames, how fast, a pause button).
    The engines are not the point here (the end-to-end tests run the real worker); the bot's
    handling of the event stream is."""

    def __init__(self, queue: Queue, steps: int = 6, step_delay: float = 0.05):
        self.queue = queue
        self.steps = steps
        self.step_delay = step_delay
        self.gallery: dict[int, list[dict]] = {}
        self.seen: list = []
        self.hold = asyncio.Event()
        self.hold.set()  # clear() to keep imagine jobs running until set()
        self.hold_fast = asyncio.Event()
        self.hold_fast.set()  # the same for classify / find / index
        self._task: asyncio.Task | None = None

    def start(self) -> ScriptedWorker:
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        # a flag, not only cancel(): redis-py can swallow a CancelledError mid-command
        self._stopping = True
        if self._task:
            await asyncio.wait([self._task], timeout=5)

    async def _run(self) -> None:
        tasks = set()
        self._stopping = False
        while not self._stopping:
            for lane in (FAST, IMAGINE):
                for d in await self.queue.take(lane, "scripted", count=5, block_ms=None):
                    self.seen.append(d.job)
                    t = asyncio.create_task(self._handle(d))
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)
            await asyncio.sleep(0.02)

    async def _handle(self, d) -> None:
        job, q = d.job, self.queue
        await q.publish(d, Started(job_id=job.id, seq=0, worker="scripted"))
        if job.kind != "imagine":
            await self.hold_fast.wait()
        if job.kind == "classify":
            n = len(job.labels)
            scores = [2.0 ** -(i + 1) for i in range(n)]
            scores[-1] += 1 - sum(scores)
            data = {"labels": [{"label": label, "score": s} for label, s in zip(job.labels, scores)]}
            await q.finish(d, Result(job_id=job.id, seq=0, data=data))
        elif job.kind == "index":
            items = self.gallery.setdefault(job.guild, [])
            items.extend(i.model_dump(exclude={"image"}) for i in job.add)
            await q.finish(d, Result(job_id=job.id, seq=0, data={"added": len(job.add)}))
        elif job.kind == "find":
            hits = [{**i, "score": 0.9 - 0.1 * k} for k, i in enumerate(self.gallery.get(job.guild, [])[: job.top])]
            await q.finish(d, Result(job_id=job.id, seq=0, data={"hits": hits}))
        elif job.kind == "imagine":
            total = self.steps
            for step in range(1, total + 1):
                await self.hold.wait()
                flag = await q.cancel_flag(job.id)
                if flag:
                    await q.finish(d, Cancelled(job_id=job.id, seq=0, by=cancel_by(flag)))
                    return
                key = await q.put_blob(png_bytes((32, 32), (step * 30 % 256, 80, 160)))
                await q.publish(d, Progress(job_id=job.id, seq=0, step=step, total=total, preview=key))
                await asyncio.sleep(self.step_delay)
            await q.finish(d, await self._imagine_result(job, total))

    async def _imagine_result(self, job, total: int) -> Result:
        """A Result in the worker's shape: picture i (1-based) is `png` / `png_<i>`, its timelapse `gif` /
        `gif_<i>`, its kept earlier frames `frame_<j>` / `frame_<j>_<i>` (at steps total//3 and
        2*total//3, each a PNG of its own colour), a `grid` when count > 1; `data.frames` of picture 1
        and `data.pictures` as the engine reports them."""
        q, count = self.queue, job.count
        blobs: dict[str, str] = {}
        pictures = []
        for i in range(1, count + 1):
            tail = "" if i == 1 else f"_{i}"
            blobs[f"png{tail}"] = await q.put_blob(png_bytes((64, 64), PICTURE_COLOURS[i - 1]))
            blobs[f"gif{tail}"] = await q.put_blob(b"GIF89a" + bytes([i]) * 32)
            frames = []
            for j, step in enumerate((total // 3, 2 * total // 3), 1):
                if step <= 0:
                    continue
                blobs[f"frame_{j}{tail}"] = await q.put_blob(png_bytes((64, 64), frame_colour(i, step)))
                frames.append({"step": step, "blob": f"frame_{j}{tail}"})
            frames.append({"step": total, "blob": f"png{tail}"})
            pictures.append({"index": i, "seed": (job.seed or 0) + i - 1, "clip_score": 0.31, "loss": 1.0,
                             "png": f"png{tail}", "gif": f"gif{tail}", "frames": frames})
        data = {"prompt": job.prompt, "seed": job.seed, "steps": total, "clip_score": 0.31,
                "width": job.width or 64, "height": job.height or 64, "frames": pictures[0]["frames"]}
        if job.parent:
            data.update(parent=job.parent, parent_index=job.parent_index)
        if count > 1:
            blobs["grid"] = await q.put_blob(png_bytes((130, 130), (250, 250, 250)))
            data.update(count=count, grid="grid", pictures=pictures)
        return Result(job_id=job.id, seq=0, data=data, blobs=blobs)


PICTURE_COLOURS = [(10, 200, 10), (200, 10, 10), (10, 10, 200), (200, 200, 10)]


def frame_colour(index: int, step: int) -> tuple[int, int, int]:
    """The colour of picture `index`'s frame at `step` in ScriptedWorker results."""
    return (step * 7 % 256, index * 40, 99)
