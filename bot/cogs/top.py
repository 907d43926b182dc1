"""/top [period] — the server's most-voted generations, with links."""
from __future__ import annotations

from typing import Literal

import discord
from discord import app_commands
from discord.ext import commands


class Top(commands.Cog):
    def __init__(self, bot):
        self.bot = bot

    @app_commands.command(name="top", description="This server's most-voted generations")
    @app_commands.describe(period="Time window (default: all time)")
    @app_commands.guild_only()
    async def top(self, interaction: discord.Interaction, period: Literal["day", "week", "month", "all"] = "all") -> None:
        gens = await self.bot.votes.top(interaction.guild_id, period, n=10)
        title = {"day": "today", "week": "this week", "month": "this month", "all": "of all time"}[period]
        if not gens:
            await interaction.response.send_message(f"No votes on generations {title} yet: react to one with 👍!",
                                                    ephemeral=True)
            return
        lines = [f"**{i}.** [{g.prompt[:80]}]({g.link}) by <@{g.user}> — **{g.score:+d}** ({g.up}👍 {g.down}👎)"
                 for i, g in enumerate(gens, 1)]
        embed = discord.Embed(title=f"Top generations {title}", description="\n".join(lines))
        if gens[0].image_url:
            embed.set_thumbnail(url=gens[0].image_url)
        await interaction.response.send_message(embed=embed, allowed_mentions=discord.AllowedMentions.none())


async def setup(bot) -> None:
    await bot.add_cog(Top(bot))
