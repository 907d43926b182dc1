"""A generation's one channel message: posted when queued, edited with previews, ending as the result.

The message is sent with the bot token (interaction tokens die after 15 minutes). Previews go
through a `LatestFrameEditor` per job (one edit per interval, newest frame only). The final event
is rendered (`_final_post`), posted (`_post`: edit the message, or send a new one if it was
deleted; without the GIF if the server's upload limit refuses both files) and, for a result,
followed up (`_follow_up`: vote reactions, the vote register, the gallery index job). A deleted
channel or a missing permission is logged and settles the job.
"""
from __future__ import annotations

import asyncio
import functools
import io
import logging
import time
from dataclasses import dataclass

import discord

from bot import render
from bot.app import ClipBot
from bot.contests import render as contest_render
from bot.contests.store import Contest, ContestStore
from bot.dispatcher import Renderer
from bot.imagine.buttons import progress_view
from bot.imagine.final import result_files, result_view
from bot.jobstore import JobRecord
from bot.progress import LatestFrameEditor
from bot.replies import tell_privately
from bot.text import member_text
from bot.votes import Generation
from jobs.client import cancel_by
from jobs.remix import pictures
from jobs.schemas import (
    FINAL_EVENTS,
    Event,
    Failed,
    GalleryItem,
    IndexJob,
    Origin,
    Progress,
    Result,
    Started,
    safety_of,
)

log = logging.getLogger(__name__)

GONE = (discord.NotFound, discord.Forbidden)
GIF_TOO_LARGE = "\n(the timelapse GIF was too large for this server's upload limit)"
FLAGGED_NOTE = ("\n⚠️ This server's safety check marked this picture, so it is hidden behind a spoiler; "
                "it is kept out of /find and the hall of fame.")
# the failure of a job whose start image was checked may be that check's refusal: the reason is private
INIT_REFUSED = "❌ failed (the reason was sent to its author privately)"


@dataclass(frozen=True)
class EntryOf:
    """A generation that is a contest entry: its caption hides the author and the seed."""
    contest: Contest
    number: int


@dataclass
class Frame:
    """One progress edit: the status line and, if any, the blob key of the preview image."""
    status: str
    preview: str | None = None


@dataclass
class FinalPost:
    """What the generation's message becomes at the end."""
    content: str
    files: list[discord.File]
    view: discord.ui.View | None = None
    flagged: bool = False  # the safety check marked the picture


class ImagineMessages(Renderer):
    def __init__(self, bot: ClipBot):
        self.bot = bot
        self._editors: dict[str, LatestFrameEditor] = {}
        self._message_locks: dict[str, asyncio.Lock] = {}  # job id -> guards creating its one message
        self.contests = ContestStore(bot.queue.redis, bot.settings.redis_prefix)
        self._entries: dict[str, EntryOf | None] = {}  # job id -> its contest entry, looked up once

    # ------------------------------------------------------------------ Renderer

    async def render(self, job_id: str, record: JobRecord, event: Event) -> None:
        if isinstance(event, Started):
            self._editor(job_id).offer(Frame("⏳ generating…"))
        elif isinstance(event, Progress):
            self._editor(job_id).offer(Frame(render.progress_bar(event.step, event.total), event.preview))
        elif isinstance(event, FINAL_EVENTS):
            editor = self._editors.get(job_id)
            if editor is not None:
                await editor.close()  # drop frames older than the result; wait for an edit in flight
                await editor.wait_turn()
            try:
                await self._final(job_id, record, event)
            finally:
                if editor is not None:
                    editor.mark_edited()

    async def forget(self, job_id: str) -> None:
        self._message_locks.pop(job_id, None)
        self._entries.pop(job_id, None)
        editor = self._editors.pop(job_id, None)
        if editor is not None:
            await editor.close()

    async def close(self) -> None:
        for editor in list(self._editors.values()):
            await editor.close()

    # ------------------------------------------------------------------ contest entries

    async def entry_of(self, job_id: str, record: JobRecord) -> EntryOf | None:
        if job_id not in self._entries:
            found = None
            contest = await self.contests.for_thread(record.channel) if record.channel else None
            if contest is not None:
                number = await self.contests.entry_number(contest.id, job_id)
                found = None if number is None else EntryOf(contest, number)
            self._entries[job_id] = found
        return self._entries[job_id]

    async def caption(self, job_id: str, record: JobRecord, status: str, **meta) -> str:
        """The generation's text; an entry's shows neither author nor seed (the ranking reveals both),
        nor where it came from (a refine's parent link could name its author). A refine's or
        re-roll's caption says where it came from (`record.note`)."""
        entry = await self.entry_of(job_id, record)
        if entry is not None:
            return f"{contest_render.entry_caption(entry.contest, entry.number)}\n{status}"
        text = render.imagine_caption(record.job.prompt, record.user, status=status, **meta)
        return f"{text}\n{record.note}" if record.note else text

    # ------------------------------------------------------------------ progress

    async def ensure_progress_message(self, job_id: str, status: str) -> JobRecord | None:
        """The one channel message (bot token) that shows this generation; created once."""
        lock = self._message_locks.setdefault(job_id, asyncio.Lock())
        async with lock:
            record = await self.bot.records.get(job_id)
            if record is None or record.message_id is not None or record.channel is None or record.delivered:
                return record
            channel = self.bot.get_partial_messageable(record.channel, guild_id=record.guild)
            msg = await channel.send(await self.caption(job_id, record, status, seed=record.job.seed),
                                     view=progress_view(job_id), allowed_mentions=discord.AllowedMentions.none())
            return await self.bot.records.update(job_id, message_id=msg.id)

    def _editor(self, job_id: str) -> LatestFrameEditor:
        editor = self._editors.get(job_id)
        if editor is None:
            editor = self._editors[job_id] = LatestFrameEditor(self.bot.settings.edit_interval_s,
                                                               functools.partial(self._edit_progress, job_id))
        return editor

    async def _edit_progress(self, job_id: str, frame: Frame) -> None:
        record = await self.bot.records.get(job_id)
        if record is None or record.delivered:
            return
        if record.message_id is None:
            record = await self.ensure_progress_message(job_id, frame.status)
            if record is None or record.message_id is None:
                return
        content = await self.caption(job_id, record, frame.status, seed=record.job.seed)
        changes: dict = {"content": content}
        if frame.preview:
            png = await self.bot.queue.get_blob(frame.preview)
            if png:
                changes["attachments"] = [discord.File(io.BytesIO(png), filename="preview.png")]
        channel = self.bot.get_partial_messageable(record.channel, guild_id=record.guild)
        try:
            await channel.get_partial_message(record.message_id).edit(**changes)
        except discord.NotFound:  # someone deleted the progress message: the result gets a new one
            log.info("progress message of %s is gone", job_id)
            await self.bot.records.update(job_id, message_id=None)
            raise
        if "attachments" in changes:
            await self.bot.queue.delete_blobs(frame.preview)  # shown: Discord holds it now

    # ------------------------------------------------------------------ the end: render, post, follow up

    async def _final(self, job_id: str, record: JobRecord, event: Event) -> None:
        if isinstance(event, Result):  # Refine, Similar and Pick a frame read its pictures from here
            await self.bot.generations.put_result(event)
        post = await self._final_post(job_id, record, event)
        msg = await self._post(job_id, record, post)
        if msg is not None and isinstance(event, Result):
            await self.bot.generations.remember(record.guild, record.user, job_id)
            await self._follow_up(job_id, record, event, msg, post.flagged)
        elif isinstance(event, Failed) and _init_checked(record):
            await tell_privately(self.bot, record, f"Your generation failed: {member_text(event.reason, 1000)}")
        if isinstance(event, Result):
            await self._release_result(event, posted=msg is not None)
        entry = await self.entry_of(job_id, record)
        if entry is None:
            return
        if msg is not None and isinstance(event, Result):
            placed = await self.contests.entry_posted(entry.contest.id, job_id, msg.id, flagged=post.flagged)
            log.info("contest %s: entry #%d (%s) posted as %s: %s", entry.contest.id, entry.number, job_id, msg.id, placed)
        elif await self.contests.withdraw_entry(entry.contest.id, job_id):
            log.info("contest %s: entry #%d (%s) withdrawn (%s)", entry.contest.id, entry.number, job_id,
                     type(event).__name__)

    async def _release_result(self, event: Result, posted: bool) -> None:
        """Posted: Discord holds the files. Keep what buttons reuse (the pictures, for Refine and the
        gallery index job; the frames, for pick-a-frame) for result_keep_s; delete the rest (the GIF)."""
        reused: set[str] = set()
        if posted:
            try:
                for p in pictures(event):
                    reused.update([p["png"], *(f["key"] for f in p["frames"])])
            except (KeyError, TypeError):  # a result without the listing: its picture is "png"
                reused.update(k for name, k in event.blobs.items() if name == "png")
        await self.bot.queue.delete_blobs(*(k for k in event.blobs.values() if k not in reused))
        await self.bot.queue.keep_blobs(*reused, keep_s=self.bot.settings.result_keep_s)

    async def _final_post(self, job_id: str, record: JobRecord, event: Event) -> FinalPost:
        job = record.job
        if isinstance(event, Result):
            data = event.data
            size = data.get("size") or (f"{data['width']}x{data['height']}" if "width" in data else None)
            score = data.get("clip_score")
            status = "✅ done" + (f" · CLIP score {score:.3f}" if isinstance(score, (int, float)) else "")
            if data.get("count", 1) > 1:
                status += f" · {data['count']} variations (seeds from `{data.get('seed', job.seed)}`)"
            content = await self.caption(job_id, record, status, seed=data.get("seed", job.seed),
                                         steps=data.get("steps", job.steps), size=size)
            if isinstance(note := data.get("note"), str):  # the worker's word on the prompt (the demo models)
                content += "\n-# " + note[:400]
            flagged = _flagged(job_id, data)
            if flagged:
                content += FLAGGED_NOTE
            # Discord blurs attachments named SPOILER_* until a member clicks them
            files = await result_files(self.bot.queue, event, spoiler=flagged)
            return FinalPost(content, files, result_view(job_id, event), flagged=flagged)
        if isinstance(event, Failed):
            # a refused start image is the member's business: the reason goes to them privately
            status = INIT_REFUSED if _init_checked(record) else f"❌ failed: {member_text(event.reason, 1000)}"
        else:
            # the cancel flag holds the id as text; the event's number can be rounded by Redis' Lua (a double)
            by_id = cancel_by(await self.bot.queue.cancel_flag(job_id)) or getattr(event, "by", None)
            status = "🛑 cancelled" + (f" by <@{by_id}>" if by_id else "")
        return FinalPost(await self.caption(job_id, record, status, seed=job.seed), [])

    async def _post(self, job_id: str, record: JobRecord, post: FinalPost) -> discord.Message | None:
        """Edit the generation's message into `post`, or send it anew; None when the channel refuses it."""
        channel = self.bot.get_partial_messageable(record.channel, guild_id=record.guild)
        msg: discord.Message | None = None
        if record.message_id is not None:
            message = channel.get_partial_message(record.message_id)
            try:
                msg = await message.edit(attachments=post.files, view=post.view or None, content=post.content,
                                         allowed_mentions=discord.AllowedMentions.none())
            except discord.NotFound:
                msg = None  # the progress message was deleted: post a fresh one below
            except discord.Forbidden:
                log.warning("no permission to edit the message of %s; giving up", job_id)
                await self.bot.records.update(job_id, delivered=True)
                return None
            except discord.HTTPException as e:
                if e.status != 413 or len(post.files) < 2:
                    raise
                msg = await self._edit_without_gif(job_id, message, post)
        if msg is None:
            for file in post.files:
                file.reset()
            try:
                msg = await channel.send(files=post.files, view=post.view or discord.utils.MISSING,
                                         content=post.content, allowed_mentions=discord.AllowedMentions.none())
            except GONE:
                log.warning("channel %s of job %s is gone or forbidden; result not posted", record.channel, job_id)
                await self.bot.records.update(job_id, delivered=True)
                return None
        await self.bot.records.update(job_id, delivered=True, message_id=msg.id)
        return msg

    async def _edit_without_gif(self, job_id: str, message: discord.PartialMessage,
                                post: FinalPost) -> discord.Message:
        """The server's upload limit is below PNG + GIF (413): keep the image, drop the timelapse."""
        log.info("result of %s too large for this server; posting without the GIF", job_id)
        post.files = [file for file in post.files if not file.filename.endswith(".gif")]
        for file in post.files:
            file.reset()
        post.content += GIF_TOO_LARGE
        return await message.edit(attachments=post.files, view=post.view or None, content=post.content,
                                  allowed_mentions=discord.AllowedMentions.none())

    async def _follow_up(self, job_id: str, record: JobRecord, event: Result, msg: discord.Message,
                         flagged: bool = False) -> None:
        """Invite votes, register the generation for them and index it for /find. A flagged picture
        gets none of it (no votes, so never the hall of fame; not in /find), except a contest entry's
        votes, which rank it (the contest's hall of fame skips flagged entries)."""
        entry = await self.entry_of(job_id, record)
        if flagged and entry is None:
            log.info("generation %s flagged: posted as a spoiler, no votes, not indexed", job_id)
            return
        cfg = await self.bot.configs.get(record.guild)
        for emoji in cfg.emojis(self.bot.settings):
            try:
                await msg.add_reaction(emoji)
            except discord.HTTPException:
                log.info("could not add reaction %s to %s", emoji, msg.id)
        if record.guild is None:
            return
        image_url = msg.attachments[0].url if msg.attachments else ""
        if entry is not None:
            # contest votes are the contest's (bot.contests); /top and /find would name the author
            if flagged:
                log.info("contest entry %s flagged: posted as a spoiler, not indexed, never the hall of fame", job_id)
            return
        await self.bot.votes.register(Generation(job_id=job_id, guild=record.guild, channel=record.channel or 0,
                                                 message_id=msg.id, user=record.user, prompt=record.job.prompt,
                                                 created=time.time(), image_url=image_url))
        await self._add_to_gallery(job_id, record, event, msg, image_url)

    async def _add_to_gallery(self, job_id: str, record: JobRecord, event: Result, msg: discord.Message,
                              image_url: str) -> None:
        if not event.blobs.get("png"):
            return
        # picture k is gallery item "<message>:<k-1>" (Similar falls back to it once the blobs expired)
        items = [GalleryItem(item_id=f"{msg.id}:{p['index'] - 1}", image=p["png"], author=record.user,
                             caption=record.job.prompt[:2000], thumbnail_url=image_url or None,
                             message_link=f"https://discord.com/channels/{record.guild}/{record.channel}/{msg.id}")
                 for p in pictures(event)]
        index = IndexJob(user=0, guild=record.guild, channel=record.channel, add=items,
                         origin=Origin(source="discord"))
        submitted = await self.bot.queue.submit(index, user_limit=1_000_000)  # the bot's own job: no user cap
        if not submitted.accepted:
            log.warning("gallery index for %s refused: %s", job_id, submitted.reason)


def _flagged(job_id: str, data: dict) -> bool:
    try:
        verdict = safety_of(data)
    except ValueError:  # a malformed verdict: shown as unchecked, and said so in the log
        log.warning("generation %s carries an unreadable safety verdict", job_id)
        return False
    return verdict is not None and verdict.flagged


def _init_checked(record: JobRecord) -> bool:
    """The job's start image went through the safety check (a failure may be its refusal)."""
    job = record.job
    return bool(getattr(job, "init_image", None)) and getattr(job, "safety", None) is not None
