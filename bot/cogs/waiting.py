"""Queued generations' messages show their position and an ETA while they wait.

Every `CLIPBOT_QUEUE_UPDATE_S` (never more often than `CLIPBOT_EDIT_INTERVAL_S`) the imagine queue
is read once; each queued generation of this bot's servers whose shown status changed gets one
edit. Once a worker starts a job, its renderer (bot.imagine.messages) owns the message: the job's
state is checked right before each edit.
"""
from __future__ import annotations

import asyncio
import logging

import discord
from discord.ext import commands

from bot.app import ClipBot
from bot.eta import describe, queue_etas
from bot.imagine.buttons import COG_NAME
from bot.outage import REDIS_UNAVAILABLE, OutageLog

log = logging.getLogger(__name__)


def queued_status(position: int, eta: float | None) -> str:
    text = describe(eta)
    return f"⏳ queued · position {position + 1}" + (f" · done in {text}" if text else "")


class Waiting(commands.Cog):
    def __init__(self, bot: ClipBot):
        self.bot = bot
        self._shown: dict[str, str] = {}  # job id -> the status its message shows
        self._task: asyncio.Task | None = None

    async def cog_load(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="clipbot-waiting")

    async def cog_unload(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _loop(self) -> None:
        await self.bot.wait_until_ready()
        settings = self.bot.settings
        outage = OutageLog(log, "Redis (queued generations' positions are not updated)")
        while True:
            await asyncio.sleep(max(settings.queue_update_s, settings.edit_interval_s))
            try:
                await self.update_once()
                outage.ok()
            except asyncio.CancelledError:
                raise
            except REDIS_UNAVAILABLE as e:  # an outage, not a bug: one line per outage, no traceback
                outage.failed(e)
            except Exception:  # one failed round must not end the updates
                log.warning("updating queued generations failed", exc_info=True)

    async def update_once(self) -> None:
        bot = self.bot
        imagine = bot.get_cog(COG_NAME)  # its ImagineMessages writes captions (a contest entry's is anonymous)
        if imagine is None:
            return
        etas = await queue_etas(bot.queue, bot.settings.imagine.steps)
        for position, (job_id, eta) in enumerate(etas.items()):
            record = await bot.records.get(job_id)
            if (record is None or record.kind != "imagine" or record.message_id is None or record.delivered
                    or record.guild is None or bot.get_guild(record.guild) is None):
                continue
            status = queued_status(position, eta)
            if self._shown.get(job_id) == status:
                continue
            state = await bot.queue.status(job_id)
            if state is None or state.state != "queued":
                continue
            channel = bot.get_partial_messageable(record.channel, guild_id=record.guild)
            try:
                await channel.get_partial_message(record.message_id).edit(
                    content=await imagine.messages.caption(job_id, record, status, seed=record.job.seed),
                    allowed_mentions=discord.AllowedMentions.none())
            except discord.HTTPException as e:
                log.info("could not update the queued message of %s: %s", job_id, e)
            self._shown[job_id] = status
        for job_id in [j for j in self._shown if j not in etas]:
            del self._shown[job_id]


async def setup(bot: ClipBot) -> None:
    await bot.add_cog(Waiting(bot))
