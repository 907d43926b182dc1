"""/find [query] [image] [top:1-10] — search this server's gallery with CLIP, by text, by picture or both.

"Find similar" (a message's picture) and the Similar button of a generation (bot.cogs.similar)
queue the same FindJob through `start_search`; all of them are rendered here.
"""
from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import ClipBot
from bot.cogs._attachments import fetch_image, precheck
from bot.guild_config import GuildConfig
from bot.jobstore import JobRecord
from bot.limits import Refused, check_query
from bot.replies import CommandReply
from bot.text import member_text, message_link
from jobs.schemas import MAX_TOP, Event, Failed, FindJob, Origin, Result

NOTHING_TO_FIND = ("Give me something to look for: a text (`query`), a picture (`image`), or both "
                   "(then I look for pictures that match the two together).")


def describe_query(job: FindJob) -> str:
    """What was searched, for the answer: the text (escaped) and/or 'your picture'."""
    parts = []
    if job.query:
        parts.append(f"**{member_text(job.query, 200)}**")
    if job.image or job.item:
        parts.append("your picture" if job.query is None and job.image else "that picture" if job.item else "the picture")
    return " + ".join(parts)


def render_result(record: JobRecord, event: Event) -> tuple[str, list[discord.Embed]]:
    if isinstance(event, Failed):
        return f"<@{record.user}> search failed: {member_text(event.reason, 1000)}", []
    if not isinstance(event, Result):
        return f"<@{record.user}> search cancelled.", []
    hits = event.data.get("hits", [])
    what = describe_query(record.job)
    if not hits:
        return f"<@{record.user}> nothing in this server's gallery yet for {what}. Add images with the message menu *Apps → Add to gallery*.", []
    embeds = []
    for rank, hit in enumerate(hits[:10], 1):
        link = message_link(hit.get("message_link"))  # shown as a link only in the shape the bot stores
        embed = discord.Embed(title=f"#{rank} · score {float(hit.get('score', 0)):.3f}", url=link,
                              description=member_text(hit.get("caption"), 200) or None)
        if hit.get("thumbnail_url"):
            embed.set_thumbnail(url=hit["thumbnail_url"])
        if link:
            embed.add_field(name="original", value=f"[jump to message]({link})")
        embeds.append(embed)
    return f"<@{record.user}> best matches for {what}:", embeds


async def start_search(bot: ClipBot, interaction: discord.Interaction, cfg: GuildConfig, callback, **fields) -> None:
    """Queue a FindJob for a deferred interaction and say so; raises Refused."""
    job = FindJob(user=interaction.user.id, guild=interaction.guild_id, channel=interaction.channel_id,
                  origin=Origin(source="discord", interaction_token=interaction.token), **fields)
    label = f"find {job.query[:40]}" if job.query else "find similar"
    position = await bot.submit(job, cfg, label, interaction, getattr(callback, "message_id", None))
    await interaction.edit_original_response(
        content=f"Searching the gallery for {describe_query(job)}… (queue position {position + 1})",
        allowed_mentions=discord.AllowedMentions.none())


class Find(commands.Cog):
    def __init__(self, bot: ClipBot):
        self.bot = bot

    async def cog_load(self) -> None:
        self.bot.dispatcher.register("find", CommandReply(self.bot, render_result))

    async def cog_unload(self) -> None:
        self.bot.dispatcher.unregister("find")

    @app_commands.command(name="find", description="Search this server's gallery by description, by picture, or both")
    @app_commands.describe(query="What to look for, e.g. a red star", image="Find pictures like this one",
                           top="How many results (1-10)")
    @app_commands.guild_only()
    async def find(self, interaction: discord.Interaction, query: str | None = None,
                   image: discord.Attachment | None = None,
                   top: app_commands.Range[int, 1, MAX_TOP] = 5) -> None:
        bot, settings = self.bot, self.bot.settings
        text = (query or "").strip()
        try:
            cfg = await bot.admit(interaction, text)
            if not text and image is None:
                raise Refused(NOTHING_TO_FIND)
            problem = check_query(text) if text else None
            if problem:
                raise Refused(problem)
            if image is not None:
                precheck(image, settings)
            callback = await interaction.response.defer(thinking=True)
            key = await bot.queue.put_blob(await fetch_image(image, settings)) if image is not None else None
            await start_search(bot, interaction, cfg, callback, query=text or None, image=key, top=top)
        except Refused as e:
            await bot.refuse(interaction, str(e))


async def setup(bot: ClipBot) -> None:
    await bot.add_cog(Find(bot))
