"""/find query:<text> [top:1-10] — search this server's gallery with CLIP."""
from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from jobs.schemas import MAX_TOP, Event, Failed, FindJob, Origin, Result

from bot.app import ClipBot
from bot.jobstore import JobRecord
from bot.limits import Refused, check_query
from bot.replies import CommandReply
from bot.text import member_text, message_link


def render_result(record: JobRecord, event: Event) -> tuple[str, list[discord.Embed]]:
    if isinstance(event, Failed):
        return f"<@{record.user}> search failed: {member_text(event.reason, 1000)}", []
    if not isinstance(event, Result):
        return f"<@{record.user}> search cancelled.", []
    hits = event.data.get("hits", [])
    query = member_text(record.job.query, 200)
    if not hits:
        return f"<@{record.user}> nothing in this server's gallery yet for **{query}**. Add images with the message menu *Apps → Add to gallery*.", []
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
    return f"<@{record.user}> best matches for **{query}**:", embeds


class Find(commands.Cog):
    def __init__(self, bot: ClipBot):
        self.bot = bot

    async def cog_load(self) -> None:
        self.bot.dispatcher.register("find", CommandReply(self.bot, render_result))

    async def cog_unload(self) -> None:
        self.bot.dispatcher.unregister("find")

    @app_commands.command(name="find", description="Search this server's gallery by description")
    @app_commands.describe(query="What to look for, e.g. a red star", top="How many results (1-10)")
    @app_commands.guild_only()
    async def find(self, interaction: discord.Interaction, query: str,
                   top: app_commands.Range[int, 1, MAX_TOP] = 5) -> None:
        bot = self.bot
        try:
            cfg = await bot.admit(interaction, query)
            problem = check_query(query)
            if problem:
                raise Refused(problem)
            job = FindJob(user=interaction.user.id, guild=interaction.guild_id, channel=interaction.channel_id,
                          query=query.strip(), top=top, origin=Origin(source="discord", interaction_token=interaction.token))
            callback = await interaction.response.defer(thinking=True)
            position = await bot.submit(job, cfg, f"find {query[:40]}", interaction, getattr(callback, "message_id", None))
            await interaction.edit_original_response(content=f"Searching the gallery for **{member_text(query, 200)}**… (queue position {position + 1})")
        except Refused as e:
            await bot.refuse(interaction, str(e))


async def setup(bot: ClipBot) -> None:
    await bot.add_cog(Find(bot))
