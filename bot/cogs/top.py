"""/top [period] — the server's most-voted generations, with links."""
from __future__ import annotations

from typing import Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import ClipBot
from bot.imagine.lineage import lineage_line
from bot.text import member_text


class Top(commands.Cog):
    def __init__(self, bot: ClipBot):
        self.bot = bot

    @app_commands.command(name="top", description="This server's most-voted generations")
    @app_commands.describe(period="Time window (default: all time)")
    @app_commands.guild_only()
    async def top(self, interaction: discord.Interaction, period: Literal["day", "week", "month", "all"] = "all") -> None:
        generations = await self.bot.votes.top(interaction.guild_id, period, n=10)
        title = {"day": "today", "week": "this week", "month": "this month", "all": "of all time"}[period]
        if not generations:
            await interaction.response.send_message(f"No votes on generations {title} yet: react to one with 👍!",
                                                    ephemeral=True)
            return
        # the link is built from ids (Generation.link); the prompt is only its escaped label
        lines = [f"**{rank}.** [{member_text(gen.prompt, 80)}]({gen.link}) by <@{gen.user}> — **{gen.score:+d}** "
                 f"({gen.up}👍 {gen.down}👎)" for rank, gen in enumerate(generations, 1)]
        for i, gen in enumerate(generations):  # where each came from and what came from it
            lineage = await lineage_line(self.bot, gen.job_id)
            if lineage:
                lines[i] += f"\n  ↳ {lineage}"
        embed = discord.Embed(title=f"Top generations {title}", description="\n".join(lines))
        if generations[0].image_url:
            embed.set_thumbnail(url=generations[0].image_url)
        await interaction.response.send_message(embed=embed, allowed_mentions=discord.AllowedMentions.none())


async def setup(bot: ClipBot) -> None:
    await bot.add_cog(Top(bot))
