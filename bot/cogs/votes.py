"""Reaction votes on generations (raw events: no message cache, no privileged intent) + hall of fame.

A reaction on a contest entry is the contest's vote (`ContestStore.vote`: open contests only, not
on one's own entry, members old enough, one per member); anything else is an ordinary vote. A
reaction has no interaction to answer privately, so a vote that does not count is answered by a
direct message, once per member, contest and reason (the reaction itself stays: removing it
would need Manage Messages, which the bot does not ask for); members with closed DMs get nothing,
and the log says so.
"""
from __future__ import annotations

import asyncio
import logging

import discord
from discord.ext import commands

from bot.app import ClipBot
from bot.contests.render import vote_answer
from bot.contests.store import ContestStore
from bot.imagine.lineage import lineage_line
from bot.outage import REDIS_UNAVAILABLE, OutageLog
from bot.text import member_text

log = logging.getLogger(__name__)


class Votes(commands.Cog):
    def __init__(self, bot: ClipBot):
        self.bot = bot
        # discord.py runs each event handler as its own task; taking a FIFO lock before the first
        # await applies reactions in gateway order (an un-react then re-react stays in that order).
        self._lock = asyncio.Lock()
        self.contests = ContestStore(bot.queue.redis, bot.settings.redis_prefix)
        self._redis_outage = OutageLog(log, "Redis (votes: reactions meanwhile are not counted)")

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        await self._count(payload, add=True)

    @commands.Cog.listener()
    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        await self._count(payload, add=False)

    async def _count(self, payload: discord.RawReactionActionEvent, add: bool) -> None:
        try:
            await self._vote(payload, add)
        except REDIS_UNAVAILABLE as e:
            self._redis_outage.failed(e)
        else:
            self._redis_outage.ok()

    async def _vote(self, payload: discord.RawReactionActionEvent, add: bool) -> None:
        bot = self.bot
        if payload.guild_id is None or payload.user_id == bot.user.id:
            return  # the bot's own 👍/👎 are there to invite votes, not votes
        famous = False
        async with self._lock:
            cfg = await bot.configs.get(payload.guild_id)
            up, down = cfg.emojis(bot.settings)
            name = str(payload.emoji)
            if name not in (up, down):
                return
            joined = payload.member.joined_at if payload.member is not None else None
            ballot = await self.contests.vote(payload.message_id, payload.user_id, up=name == up, add=add,
                                              joined_at=joined)
            if ballot.status == "not_entry":
                tally = await bot.votes.vote(payload.message_id, payload.guild_id, payload.user_id, up=name == up,
                                             add=add, self_votes=cfg.self_votes)
                famous = bool(tally is not None and tally.changed and add and name == up and cfg.hof_channel
                              and tally.up >= cfg.threshold(bot.settings)
                              and await bot.votes.claim_hall_of_fame(tally.job_id))
        if famous:
            await self._hall_of_fame(tally.job_id, cfg.hof_channel)
        if ballot.status == "not_entry":
            return
        log.info("contest %s: %s on entry %s by %s: %s (%d up, %d down)", ballot.contest_id,
                 "vote" if add else "unvote", ballot.job_id, payload.user_id, ballot.status, ballot.up, ballot.down)
        answer = vote_answer(await self.contests.get(ballot.contest_id), ballot) if add else None
        if answer:
            await self._tell(payload.user_id, ballot.contest_id, ballot.status, answer)

    async def _tell(self, user_id: int, contest_id: str, reason: str, text: str) -> None:
        """A direct message to a member whose reaction did not count, once per contest and reason."""
        key = f"{self.bot.settings.redis_prefix}bot:contest:told:{contest_id}:{user_id}:{reason}"
        if not await self.bot.queue.redis.set(key, b"1", nx=True, ex=7 * 86400):
            return
        try:
            dm = await self.bot.create_dm(discord.Object(user_id))
            await dm.send(text, allowed_mentions=discord.AllowedMentions.none())
        except discord.HTTPException:
            log.info("could not tell %s why their contest vote did not count (%s)", user_id, reason)

    async def _hall_of_fame(self, job_id: str, channel_id: int) -> None:
        gen = await self.bot.votes.get(job_id)
        if gen is None:
            return
        embed = discord.Embed(title="🏆 Hall of fame",
                              description=f"**{member_text(gen.prompt, 1000)}** by <@{gen.user}>\n[original]({gen.link})")
        embed.add_field(name="votes", value=f"{gen.up}👍 {gen.down}👎")
        lineage = await lineage_line(self.bot, job_id)
        if lineage:
            embed.add_field(name="lineage", value=lineage[:1024], inline=False)
        if gen.image_url:
            embed.set_image(url=gen.image_url)
        try:
            await self.bot.get_partial_messageable(channel_id, guild_id=gen.guild).send(
                embed=embed, allowed_mentions=discord.AllowedMentions.none())
        except discord.HTTPException:
            log.warning("hall of fame post for %s failed", job_id, exc_info=True)


async def setup(bot: ClipBot) -> None:
    await bot.add_cog(Votes(bot))
