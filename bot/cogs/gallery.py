"""Message context menu "Add to gallery": index a message's images for /find."""
from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import ClipBot
from bot.cogs._attachments import fetch_image, precheck
from bot.jobstore import JobRecord
from bot.limits import Refused
from bot.replies import CommandReply
from bot.text import member_text
from jobs.schemas import Event, Failed, GalleryItem, IndexJob, Origin, Result


def render_result(record: JobRecord, event: Event) -> tuple[str, list[discord.Embed]]:
    if isinstance(event, Result):
        added = event.data.get("added", len(record.job.add))
        return f"Added {added} image(s) to this server's gallery: try `/find`.", []
    if isinstance(event, Failed):
        return f"Adding to the gallery failed: {member_text(event.reason, 1000)}", []
    return "Adding to the gallery was cancelled.", []


class Gallery(commands.Cog):
    def __init__(self, bot: ClipBot):
        self.bot = bot
        self.menu = app_commands.ContextMenu(name="Add to gallery", callback=self.add_to_gallery)
        self.menu.guild_only = True

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.menu)
        # the result is private: it can only edit the deferred answer while the token lives
        self.bot.dispatcher.register("index", CommandReply(self.bot, render_result, ephemeral=True))

    async def cog_unload(self) -> None:
        self.bot.dispatcher.unregister("index")
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type)

    async def add_to_gallery(self, interaction: discord.Interaction, message: discord.Message) -> None:
        bot, settings = self.bot, self.bot.settings
        try:
            cfg = await bot.admit(interaction, message.content or "", cooldown=False)
            images = [a for a in message.attachments if (a.content_type or "").startswith("image/")
                      or a.filename.lower().endswith((".png", ".jpg", ".jpeg", ".gif", ".webp"))]
            if not images:
                raise Refused("That message has no image attachments to add.")
            for att in images:
                precheck(att, settings)
            callback = await interaction.response.defer(ephemeral=True, thinking=True)
            items = []
            for i, att in enumerate(images):
                data = await fetch_image(att, settings)
                key = await bot.queue.put_blob(data)
                items.append(GalleryItem(item_id=f"{message.id}:{i}", image=key, message_link=message.jump_url,
                                         author=message.author.id, caption=(message.content or None) and message.content[:2000],
                                         thumbnail_url=att.url))
            job = IndexJob(user=interaction.user.id, guild=interaction.guild_id, channel=interaction.channel_id,
                           add=items, origin=Origin(source="discord", interaction_token=interaction.token),
                           safety=cfg.safety_policy(settings))
            await bot.submit(job, cfg, f"gallery +{len(items)}", interaction,
                             getattr(callback, "message_id", None), cooldown=False)
            await interaction.edit_original_response(content=f"Adding {len(items)} image(s) to the gallery…")
        except Refused as e:
            await bot.refuse(interaction, str(e))


async def setup(bot: ClipBot) -> None:
    await bot.add_cog(Gallery(bot))
