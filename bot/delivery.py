"""Events -> Discord messages.

One consumer loop reads the events stream through the bot's consumer group (`EventReader`), so
results produced while the bot was down are delivered when it comes back, and each (job, seq) is
applied once. Events are handed to one small task per job: a job's events stay in order while a
slow Discord call for one job (a 429 sleep, a 5xx retry) never holds up the others.

Imagine progress goes through a `LatestFrameEditor` (one edit per interval, newest frame only).
A deleted message, a deleted channel or a missing permission is logged and the job is settled:
it never stops delivery of other jobs.
"""
from __future__ import annotations

import asyncio
import io
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import discord

from jobs.schemas import Event, Failed, FINAL_EVENTS, GalleryItem, IndexJob, Origin, Progress, Result, Started
from jobs.client import cancel_by
from jobs.events import EventEntry, EventReader

from bot import render
from bot.jobstore import JobRecord
from bot.progress import LatestFrameEditor
from bot.votes import Generation

if TYPE_CHECKING:
    from bot.app import ClipBot

log = logging.getLogger(__name__)

_GONE = (discord.NotFound, discord.Forbidden)


@dataclass
class Frame:
    status: str
    preview: str | None = None


class _JobTrack:
    def __init__(self) -> None:
        self.inbox: asyncio.Queue[EventEntry] = asyncio.Queue()
        self.task: asyncio.Task | None = None
        self.editor: LatestFrameEditor | None = None


class Delivery:
    def __init__(self, bot: "ClipBot", reader: EventReader):
        self.bot = bot
        self.reader = reader
        self._tracks: dict[str, _JobTrack] = {}
        self._message_locks: dict[str, asyncio.Lock] = {}  # job id -> guards creating its one message
        self._task: asyncio.Task | None = None
        self._stopping = False

    # ------------------------------------------------------------------ loop

    def start(self) -> None:
        self._task = asyncio.create_task(self._consume(), name="clipbot-delivery")

    async def stop(self) -> None:
        self._stopping = True
        tasks = [t.task for t in self._tracks.values() if t.task] + ([self._task] if self._task else [])
        for t in tasks:
            t.cancel()
        if tasks:  # bounded: redis-py may swallow a CancelledError mid-command; the flag ends the loop
            await asyncio.wait(tasks, timeout=5)
        for t in self._tracks.values():
            if t.editor:
                await t.editor.close()

    async def _consume(self) -> None:
        await self.bot.wait_until_ready()
        while not self._stopping:
            try:
                batch = await self.reader.read(count=100, block_ms=1000)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reading events failed; retrying")
                await asyncio.sleep(1.0)
                continue
            for d in batch:
                track = self._track(d.event.job_id)
                track.inbox.put_nowait(d)

    def _track(self, job_id: str) -> _JobTrack:
        track = self._tracks.get(job_id)
        if track is None:
            track = self._tracks[job_id] = _JobTrack()
        if track.task is None or track.task.done():
            track.task = asyncio.create_task(self._run_job(job_id, track), name=f"clipbot-job-{job_id}")
        return track

    async def _run_job(self, job_id: str, track: _JobTrack) -> None:
        idle = 0
        while not self._stopping:  # the flag as well as cancel(): redis-py can swallow a CancelledError
            try:
                d = await asyncio.wait_for(track.inbox.get(), timeout=1.0)
            except asyncio.TimeoutError:
                idle += 1
                if idle >= 600:  # a job that went quiet; its next event starts a new task
                    break
                continue
            idle = 0
            final = isinstance(d.event, FINAL_EVENTS)
            await self._apply(job_id, track, d)
            if final:
                break
        if track.inbox.empty():
            self._tracks.pop(job_id, None)
            self._message_locks.pop(job_id, None)
            if track.editor:
                await track.editor.close()

    async def _apply(self, job_id: str, track: _JobTrack, d: EventEntry) -> None:
        for attempt in range(5):
            try:
                await self.reader.apply_once(d, lambda ev: self._handle(job_id, track, ev))
                return
            except asyncio.CancelledError:
                raise
            except discord.DiscordServerError:  # discord.py already retried; try again a little later
                log.warning("Discord 5xx while delivering %s (attempt %d)", job_id, attempt + 1)
                await asyncio.sleep(2.0 * (attempt + 1))
            except Exception:
                log.exception("delivering event %s of job %s failed", d.event.seq, job_id)
                break
        await self.reader.ack(d)  # settled: a poison event must not block the stream forever

    # ------------------------------------------------------------------ dispatch

    async def _handle(self, job_id: str, track: _JobTrack, ev: Event) -> None:
        rec = await self.bot.records.get(job_id)
        if rec is None:  # not ours (CLI, bench) or expired
            return
        if rec.kind == "imagine":
            await self._imagine(job_id, rec, track, ev)
        elif isinstance(ev, FINAL_EVENTS):
            await self._reply_final(job_id, rec, ev)

    # ------------------------------------------------------------------ imagine

    async def ensure_progress_message(self, job_id: str, status: str) -> JobRecord | None:
        """The one channel message (bot token) that shows this generation; created once."""
        lock = self._message_locks.setdefault(job_id, asyncio.Lock())
        async with lock:
            rec = await self.bot.records.get(job_id)
            if rec is None or rec.message_id is not None or rec.channel is None or rec.delivered:
                return rec
            job = rec.job
            from bot.cogs.imagine import progress_view  # the Cancel button lives with /imagine

            channel = self.bot.get_partial_messageable(rec.channel, guild_id=rec.guild)
            msg = await channel.send(render.imagine_caption(job.prompt, rec.user, seed=job.seed, status=status),
                                     view=progress_view(job_id), allowed_mentions=discord.AllowedMentions.none())
            return await self.bot.records.update(job_id, message_id=msg.id)

    def _editor(self, job_id: str, track: _JobTrack) -> LatestFrameEditor:
        if track.editor is None:
            track.editor = LatestFrameEditor(self.bot.settings.edit_interval_s,
                                             lambda frame: self._edit_progress(job_id, frame))
        return track.editor

    async def _edit_progress(self, job_id: str, frame: Frame) -> None:
        rec = await self.bot.records.get(job_id)
        if rec is None or rec.delivered:
            return
        if rec.message_id is None:
            rec = await self.ensure_progress_message(job_id, frame.status)
            if rec is None or rec.message_id is None:
                return
        job = rec.job
        content = render.imagine_caption(job.prompt, rec.user, seed=job.seed, status=frame.status)
        kwargs: dict = {"content": content}
        if frame.preview:
            png = await self.bot.queue.get_blob(frame.preview)
            if png:
                kwargs["attachments"] = [discord.File(io.BytesIO(png), filename="preview.png")]
        msg = self.bot.get_partial_messageable(rec.channel, guild_id=rec.guild).get_partial_message(rec.message_id)
        try:
            await msg.edit(**kwargs)
        except discord.NotFound:  # someone deleted the progress message: the result gets a new one
            log.info("progress message of %s is gone", job_id)
            await self.bot.records.update(job_id, message_id=None)
            raise

    async def _imagine(self, job_id: str, rec: JobRecord, track: _JobTrack, ev: Event) -> None:
        if isinstance(ev, Started):
            self._editor(job_id, track).offer(Frame("⏳ generating…"))
        elif isinstance(ev, Progress):
            self._editor(job_id, track).offer(Frame(render.progress_bar(ev.step, ev.total), ev.preview))
        elif isinstance(ev, FINAL_EVENTS):
            editor = track.editor
            if editor is not None:
                await editor.close()  # drop frames older than the result; wait for an edit in flight
                await editor.wait_turn()
            try:
                await self._imagine_final(job_id, rec, ev)
            finally:
                if editor is not None:
                    editor.mark_edited()

    async def _imagine_final(self, job_id: str, rec: JobRecord, ev: Event) -> None:
        job = rec.job
        channel = self.bot.get_partial_messageable(rec.channel, guild_id=rec.guild)
        files: list[discord.File] = []
        view = None
        if isinstance(ev, Result):
            seed, steps = ev.data.get("seed", job.seed), ev.data.get("steps", job.steps)
            size = ev.data.get("size") or (f"{ev.data['width']}x{ev.data['height']}" if "width" in ev.data else None)
            status = "✅ done" + (f" · CLIP score {ev.data['clip_score']:.3f}" if isinstance(ev.data.get("clip_score"), (int, float)) else "")
            content = render.imagine_caption(job.prompt, rec.user, seed=seed, steps=steps, size=size, status=status)
            for name, filename in (("png", "imagine.png"), ("gif", "timelapse.gif")):
                key = ev.blobs.get(name)
                data = await self.bot.queue.get_blob(key) if key else None
                if data:
                    files.append(discord.File(io.BytesIO(data), filename=filename))
            from bot.cogs.imagine import final_view

            view = final_view(job_id)
        elif isinstance(ev, Failed):
            content = render.imagine_caption(job.prompt, rec.user, seed=job.seed, status=f"❌ failed: {ev.reason}")
        else:
            # the cancel flag holds the id as text; the event's number can be rounded by Redis' Lua (a double)
            by_id = cancel_by(await self.bot.queue.cancel_flag(job_id)) or getattr(ev, "by", None)
            by = f" by <@{by_id}>" if by_id else ""
            content = render.imagine_caption(job.prompt, rec.user, seed=job.seed, status=f"🛑 cancelled{by}")
        kwargs = {"content": content, "allowed_mentions": discord.AllowedMentions.none()}
        msg: discord.Message | None = None
        if rec.message_id is not None:
            try:
                msg = await channel.get_partial_message(rec.message_id).edit(
                    attachments=files, view=view or None, **kwargs)
            except discord.NotFound:
                msg = None  # the progress message was deleted: post a fresh one below
            except discord.Forbidden:
                log.warning("no permission to edit the message of %s; giving up", job_id)
                await self.bot.records.update(job_id, delivered=True)
                return
            except discord.HTTPException as e:
                if e.status != 413 or len(files) < 2:
                    raise
                # the server's upload limit is below PNG + GIF: keep the image, drop the timelapse
                log.info("result of %s too large for this server; posting without the GIF", job_id)
                files = files[:1]
                files[0].reset()
                kwargs["content"] += "\n(the timelapse GIF was too large for this server's upload limit)"
                msg = await channel.get_partial_message(rec.message_id).edit(
                    attachments=files, view=view or None, **kwargs)
        if msg is None:
            for f in files:
                f.reset()
            try:
                msg = await channel.send(files=files, view=view or discord.utils.MISSING, **kwargs)
            except _GONE:
                log.warning("channel %s of job %s is gone or forbidden; result not posted", rec.channel, job_id)
                await self.bot.records.update(job_id, delivered=True)
                return
        await self.bot.records.update(job_id, delivered=True, message_id=msg.id)
        if not isinstance(ev, Result):
            return
        cfg = await self.bot.configs.get(rec.guild)
        for emoji in cfg.emojis(self.bot.settings):
            try:
                await msg.add_reaction(emoji)
            except discord.HTTPException:
                log.info("could not add reaction %s to %s", emoji, msg.id)
        image_url = msg.attachments[0].url if msg.attachments else ""
        if rec.guild is not None:
            await self.bot.votes.register(Generation(job_id=job_id, guild=rec.guild, channel=rec.channel or 0,
                                                     message_id=msg.id, user=rec.user, prompt=job.prompt,
                                                     created=time.time(), image_url=image_url))
            await self._add_to_gallery(job_id, rec, ev, msg, image_url)

    async def _add_to_gallery(self, job_id: str, rec: JobRecord, ev: Result, msg: discord.Message, url: str) -> None:
        key = ev.blobs.get("png")
        if not key:
            return
        job = rec.job
        item = GalleryItem(item_id=f"{msg.id}:0", image=key, author=rec.user, caption=job.prompt[:2000],
                           message_link=f"https://discord.com/channels/{rec.guild}/{rec.channel}/{msg.id}",
                           thumbnail_url=url or None)
        index = IndexJob(user=0, guild=rec.guild, channel=rec.channel, add=[item], origin=Origin(source="discord"))
        res = await self.bot.queue.submit(index, user_limit=1_000_000)  # the bot's own job: no user cap
        if not res.accepted:
            log.warning("gallery index for %s refused: %s", job_id, res.reason)

    # ------------------------------------------------------------------ classify / find / index

    async def _reply_final(self, job_id: str, rec: JobRecord, ev: Event) -> None:
        from bot.cogs import classify, find, gallery

        renderers = {"classify": classify.render_result, "find": find.render_result, "index": gallery.render_result}
        render_fn = renderers.get(rec.kind)
        if render_fn is None:
            return
        content, embeds = render_fn(rec, ev)
        ephemeral = rec.kind == "index"
        await self.reply(rec, content, embeds, ephemeral=ephemeral)
        await self.bot.records.update(job_id, delivered=True)

    async def reply(self, rec: JobRecord, content: str, embeds: list[discord.Embed], ephemeral: bool = False) -> None:
        """Answer a command: edit its deferred reply while the interaction token lives, else a channel message."""
        mentions = discord.AllowedMentions(users=[discord.Object(rec.user)])
        if rec.token_fresh() and self.bot.application_id:
            hook = discord.Webhook.partial(self.bot.application_id, rec.interaction_token, client=self.bot)
            try:
                if rec.original_message_id:  # the deferred answer (public or ephemeral) becomes the result
                    await hook.edit_message(rec.original_message_id, content=content, embeds=embeds,
                                            allowed_mentions=mentions)
                    return
                # no message id from the deferral: edit "@original" by its literal route
                route = discord.http.Route("PATCH", "/webhooks/{webhook_id}/{webhook_token}/messages/@original",
                                           webhook_id=self.bot.application_id, webhook_token=rec.interaction_token)
                await self.bot.http.request(route, json={"content": content, "embeds": [e.to_dict() for e in embeds],
                                                         "allowed_mentions": mentions.to_dict()})
                return
            except _GONE:
                log.info("interaction reply for %s failed; falling back to a channel message", rec.user)
        if ephemeral or rec.channel is None:
            return  # private notices die with the token; nothing public to say
        channel = self.bot.get_partial_messageable(rec.channel, guild_id=rec.guild)
        try:
            await channel.send(content=f"<@{rec.user}> {content}", embeds=embeds, allowed_mentions=mentions)
        except _GONE:
            log.warning("channel %s is gone or forbidden; reply to %s dropped", rec.channel, rec.user)
