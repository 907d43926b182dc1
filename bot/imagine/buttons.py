"""The Cancel and Re-roll buttons of a generation's message.

Buttons are `DynamicItem`s: the custom_id carries the job id and the classes are registered at
start (by the imagine cog), so buttons on messages posted before a restart keep working.
"""
from __future__ import annotations

from typing import cast

import discord

from bot.app import ClipBot

# the imagine cog's name: Re-roll asks it to start the new generation (this module cannot import the cog,
# which imports this module)
COG_NAME = "Imagine"


class CancelButton(discord.ui.DynamicItem[discord.ui.Button], template=r"clipbot:cancel:(?P<job>[0-9a-zA-Z_-]{1,64})"):
    def __init__(self, job_id: str):
        super().__init__(discord.ui.Button(label="Cancel", style=discord.ButtonStyle.danger, emoji="🛑",
                                           custom_id=f"clipbot:cancel:{job_id}"))
        self.job_id = job_id

    @classmethod
    async def from_custom_id(cls, interaction, item, match):
        return cls(match["job"])

    async def callback(self, interaction: discord.Interaction) -> None:
        bot = cast(ClipBot, interaction.client)
        answer = await bot.cancel_job(self.job_id, interaction.user, interaction.permissions)
        await interaction.response.send_message(answer, ephemeral=True)


class RerollButton(discord.ui.DynamicItem[discord.ui.Button], template=r"clipbot:reroll:(?P<job>[0-9a-zA-Z_-]{1,64})"):
    def __init__(self, job_id: str):
        super().__init__(discord.ui.Button(label="Re-roll", style=discord.ButtonStyle.primary, emoji="🎲",
                                           custom_id=f"clipbot:reroll:{job_id}"))
        self.job_id = job_id

    @classmethod
    async def from_custom_id(cls, interaction, item, match):
        return cls(match["job"])

    async def callback(self, interaction: discord.Interaction) -> None:
        bot = cast(ClipBot, interaction.client)
        await bot.get_cog(COG_NAME).reroll(interaction, self.job_id)


def progress_view(job_id: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job_id))
    return view
