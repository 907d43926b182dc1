"""/history — the member's last generations in this server, with links and lineage (private)."""
from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import ClipBot
from bot.text import member_text


def message_link(guild: int | None, channel: int | None, message: int | None) -> str | None:
    return f"https://discord.com/channels/{guild}/{channel}/{message}" if guild and channel and message else None


class History(commands.Cog):
    def __init__(self, bot: ClipBot):
        self.bot = bot

    @app_commands.command(name="history", description="Your last generations in this server, with links")
    @app_commands.guild_only()
    async def history(self, interaction: discord.Interaction) -> None:
        bot = self.bot
        lines = []
        for job_id in await bot.generations.history(interaction.guild_id, interaction.user.id):
            record = await bot.records.get(job_id)
            if record is None:
                continue
            job = record.job
            prompt = member_text(getattr(job, "prompt", ""), 80)
            link = message_link(record.guild, record.channel, record.message_id)
            line = f"[{prompt}]({link})" if link else prompt
            if getattr(job, "count", 1) > 1:
                line += f" · {job.count} variations"
            parent = await bot.generations.parent(job_id)
            if parent is not None:
                line += " · refine" if parent.how == "refine" else " · re-roll"
            children = await bot.generations.children(job_id)
            if children:
                line += f" · {len(children)} remix{'es' if len(children) > 1 else ''}"
            lines.append(f"• {line}")
        text = "\n".join(lines) if lines else "You have no finished generations in this server yet: try `/imagine`."
        await interaction.response.send_message(text[:2000], ephemeral=True,
                                                allowed_mentions=discord.AllowedMentions.none())


async def setup(bot: ClipBot) -> None:
    await bot.add_cog(History(bot))
