"""Find similar: the message context menu on any message with a picture, and the Similar button of
a finished generation. Both queue a FindJob by picture (`bot.cogs.find.start_search`), whose
result is rendered by the find cog.
"""
from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import ClipBot
from bot.cogs._attachments import fetch_image, precheck
from bot.cogs.find import start_search
from bot.imagine.remix_buttons import SIMILAR_COG
from bot.limits import Refused
from jobs.remix import picture
from jobs.validation import JobError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp")
FORGOTTEN = "I no longer know the pictures of this generation, so I cannot search for similar ones."


def images_of(message: discord.Message) -> list[discord.Attachment]:
    return [a for a in message.attachments if (a.content_type or "").startswith("image/")
            or a.filename.lower().endswith(IMAGE_SUFFIXES)]


class Similar(commands.Cog, name=SIMILAR_COG):
    def __init__(self, bot: ClipBot):
        self.bot = bot
        self.menu = app_commands.ContextMenu(name="Find similar", callback=self.find_similar)
        self.menu.guild_only = True

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type)

    async def find_similar(self, interaction: discord.Interaction, message: discord.Message) -> None:
        """The message's first picture is the query."""
        bot, settings = self.bot, self.bot.settings
        async with bot.answering(interaction, "find similar"):
            cfg = await bot.admit(interaction)
            images = images_of(message)
            if not images:
                raise Refused("That message has no picture to search with: use *Find similar* on a message with an image.")
            precheck(images[0], settings)
            callback = await interaction.response.defer(thinking=True)
            key = await bot.queue.put_blob(await fetch_image(images[0], settings))
            await start_search(bot, interaction, cfg, callback, image=key)

    async def similar_to_generation(self, interaction: discord.Interaction, job_id: str, k: int) -> None:
        """The Similar button: picture k of a generation, by its blob while it lives, else by its gallery item."""
        bot = self.bot
        async with bot.answering(interaction, "similar"):
            cfg = await bot.admit(interaction)
            result = await bot.generations.result(job_id)
            if result is None:
                raise Refused(FORGOTTEN)
            try:
                key = picture(result, k)["png"]
            except JobError as e:
                raise Refused(str(e)) from None
            callback = await interaction.response.defer(thinking=True)
            if await bot.queue.get_blob(key) is not None:
                await start_search(bot, interaction, cfg, callback, image=key)
            else:  # the picture's blob expired; the gallery kept its embedding
                await start_search(bot, interaction, cfg, callback, item=f"{interaction.message.id}:{k - 1}")


async def setup(bot: ClipBot) -> None:
    await bot.add_cog(Similar(bot))
