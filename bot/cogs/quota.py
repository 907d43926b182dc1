"""/quota — how many generations a member has left today on this server, and when the count resets."""
from __future__ import annotations

import time

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import ClipBot
from bot.quota import quota_status
from jobs.quota import DailyQuota


def role_ids(member: discord.abc.User) -> list[int]:
    return [r.id for r in getattr(member, "roles", [])]


class Quota(commands.Cog):
    def __init__(self, bot: ClipBot):
        self.bot = bot
        self.counts = DailyQuota(bot.queue.redis, bot.settings.redis_prefix)

    @app_commands.command(name="quota", description="Your generations left today on this server")
    @app_commands.guild_only()
    async def quota(self, interaction: discord.Interaction) -> None:
        cfg = await self.bot.configs.get(interaction.guild_id)
        roles = role_ids(interaction.user)
        limit = cfg.quota(self.bot.settings, roles)
        exempt = cfg.quota_exempt_role is not None and cfg.quota_exempt_role in roles
        now = time.time()
        used = 0 if limit <= 0 else await self.counts.used(interaction.guild_id, interaction.user.id, now)
        await interaction.response.send_message(quota_status(used, limit, now, exempt=exempt), ephemeral=True)


async def setup(bot: ClipBot) -> None:
    await bot.add_cog(Quota(bot))
