"""/classify image:<attachment> labels:<comma-separated text> — zero-shot CLIP labels as a bar chart."""
from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from jobs.schemas import ClassifyJob, Event, Failed, Origin, Result

from bot import render
from bot.cogs._attachments import fetch_image, precheck
from bot.jobstore import JobRecord
from bot.limits import Refused, parse_labels


def render_result(rec: JobRecord, ev: Event) -> tuple[str, list[discord.Embed]]:
    if isinstance(ev, Result):
        scores = [(x["label"], float(x["score"])) for x in ev.data.get("labels", [])]
        best = max(scores, key=lambda x: x[1])[0] if scores else "?"
        return f"<@{rec.user}> I think it is **{best}**:\n{render.bar_chart(scores)}", []
    if isinstance(ev, Failed):
        return f"<@{rec.user}> classification failed: {ev.reason}", []
    return f"<@{rec.user}> classification cancelled.", []


class Classify(commands.Cog):
    def __init__(self, bot):
        self.bot = bot

    @app_commands.command(name="classify", description="Which of your labels fits this image best?")
    @app_commands.describe(image="The image to classify", labels="Comma-separated labels, e.g. red circle, blue square")
    @app_commands.guild_only()
    async def classify(self, interaction: discord.Interaction, image: discord.Attachment, labels: str) -> None:
        bot, s = self.bot, self.bot.settings
        try:
            cfg = await bot.admit(interaction, labels)
            label_list = parse_labels(labels)
            precheck(image, s)
            callback = await interaction.response.defer(thinking=True)
            data = await fetch_image(image, s)
            key = await bot.queue.put_blob(data)
            job = ClassifyJob(user=interaction.user.id, guild=interaction.guild_id, channel=interaction.channel_id,
                              image=key, labels=label_list,
                              origin=Origin(source="discord", interaction_token=interaction.token))
            pos = await bot.submit(job, cfg, f"classify {image.filename}", interaction,
                                   getattr(callback, "message_id", None))
            await interaction.edit_original_response(
                content=f"Classifying `{image.filename}` against {len(label_list)} labels… (queue position {pos + 1})")
        except Refused as e:
            await bot.refuse(interaction, str(e))


async def setup(bot) -> None:
    await bot.add_cog(Classify(bot))
