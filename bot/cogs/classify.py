"""/classify image:<attachment> labels:<comma-separated text> — zero-shot CLIP labels as a bar chart."""
from __future__ import annotations

import logging

import discord
from discord import app_commands
from discord.ext import commands

from jobs.schemas import ClassifyJob, Event, Failed, Origin, Result

from bot import render
from bot.app import ClipBot
from bot.cogs._attachments import fetch_image, precheck
from bot.jobstore import JobRecord
from bot.limits import Refused, parse_labels
from bot.replies import CommandReply, tell_privately
from bot.text import code_text, member_text

log = logging.getLogger(__name__)


def render_result(record: JobRecord, event: Event) -> tuple[str, list[discord.Embed]]:
    if isinstance(event, Result):
        scores = [(entry["label"], float(entry["score"])) for entry in event.data.get("labels", [])]
        best = max(scores, key=lambda pair: pair[1])[0] if scores else "?"
        return f"<@{record.user}> I think it is **{member_text(best, 100)}**:\n{render.bar_chart(scores)}", []
    if isinstance(event, Failed):
        return f"<@{record.user}> classification failed: {member_text(event.reason, 1000)}", []
    return f"<@{record.user}> classification cancelled.", []


class ClassifyReply(CommandReply):
    """The chart in the (public) deferred answer; a failure goes to the member privately instead:
    it may be this server's safety check refusing their upload."""

    async def render(self, job_id: str, record: JobRecord, event: Event) -> None:
        if not isinstance(event, Failed):
            await super().render(job_id, record, event)
            return
        if await tell_privately(self.bot, record, f"Classification failed: {event.reason}"):
            hook = discord.Webhook.partial(self.bot.application_id, record.interaction_token, client=self.bot)
            try:
                await hook.delete_message(record.original_message_id or "@original")
            except discord.HTTPException:
                log.info("could not remove the placeholder of %s", job_id)
        else:
            log.info("classify %s failed after its interaction expired; the member was not told: %s",
                     job_id, event.reason)
        await self.bot.records.update(job_id, delivered=True)


class Classify(commands.Cog):
    def __init__(self, bot: ClipBot):
        self.bot = bot

    async def cog_load(self) -> None:
        self.bot.dispatcher.register("classify", ClassifyReply(self.bot, render_result))

    async def cog_unload(self) -> None:
        self.bot.dispatcher.unregister("classify")

    @app_commands.command(name="classify", description="Which of your labels fits this image best?")
    @app_commands.describe(image="The image to classify", labels="Comma-separated labels, e.g. red circle, blue square")
    @app_commands.guild_only()
    async def classify(self, interaction: discord.Interaction, image: discord.Attachment, labels: str) -> None:
        bot, settings = self.bot, self.bot.settings
        try:
            cfg = await bot.admit(interaction, labels)
            label_list = parse_labels(labels)
            precheck(image, settings)
            callback = await interaction.response.defer(thinking=True)
            data = await fetch_image(image, settings)
            key = await bot.queue.put_blob(data)
            job = ClassifyJob(user=interaction.user.id, guild=interaction.guild_id, channel=interaction.channel_id,
                              image=key, labels=label_list, safety=cfg.safety_policy(settings),
                              origin=Origin(source="discord", interaction_token=interaction.token))
            position = await bot.submit(job, cfg, f"classify {image.filename}", interaction,
                                   getattr(callback, "message_id", None))
            await interaction.edit_original_response(
                content=f"Classifying `{code_text(image.filename, 100)}` against {len(label_list)} labels… (queue position {position + 1})")
        except Refused as e:
            await bot.refuse(interaction, str(e))


async def setup(bot: ClipBot) -> None:
    await bot.add_cog(Classify(bot))
