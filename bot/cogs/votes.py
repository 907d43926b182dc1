"""Reaction votes on generations (raw events: no message cache, no privileged intent) + hall of fame."""
from __future__ import annotations

import asyncio
import logging

import discord
from discord.ext import commands

from bot.app import ClipBot
from bot.imagine.lineage import lineage_line

log = logging.getLogger(__name__)


class Votes(commands.Cog):
    def __init__(self, bot: ClipBot):
        self.bot = bot
        # discord.py runs each event handler as its own task; taking a FIFO lock before the first
        # await applies reactions in gateway order (an un-react then re-react stays in that order).
        self._lock = asyncio.Lock()

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        await self._vote(payload, add=True)

    @commands.Cog.listener()
    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        await self._vote(payload, add=False)

    async def _vote(self, payload: discord.RawReactionActionEvent, add: bool) -> None:
        bot = self.bot
        if payload.guild_id is None or payload.user_id == bot.user.id:
            return  # the bot's own 👍/👎 are there to invite votes, not votes
        async with self._lock:
            cfg = await bot.configs.get(payload.guild_id)
            up, down = cfg.emojis(bot.settings)
            name = str(payload.emoji)
            if name not in (up, down):
                return
            tally = await bot.votes.vote(payload.message_id, payload.guild_id, payload.user_id, up=name == up, add=add)
            if tally is None or not tally.changed or not add or name != up:
                return
            famous = (cfg.hof_channel and tally.up >= cfg.threshold(bot.settings)
                      and await bot.votes.claim_hall_of_fame(tally.job_id))
        if famous:
            await self._hall_of_fame(tally.job_id, cfg.hof_channel)

    async def _hall_of_fame(self, job_id: str, channel_id: int) -> None:
        gen = await self.bot.votes.get(job_id)
        if gen is None:
            return
        embed = discord.Embed(title="🏆 Hall of fame",
                              description=f"**{gen.prompt}** by <@{gen.user}>\n[original]({gen.link})")
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
