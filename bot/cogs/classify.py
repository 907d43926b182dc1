"""/classify image:<attachment> [labels | labelset] — zero-shot CLIP labels as a bar chart.

`labels` (a Discord option: up to 25) or `labelset` (a server's saved set: up to 1,000; see
bot/cogs/labels.py); with neither, the server's default set. The message menu "Classify" runs a
message's first picture against the default set.
"""
from __future__ import annotations

import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot import render
from bot.app import ClipBot
from bot.cogs._attachments import fetch_image, precheck
from bot.cogs.labels import set_names
from bot.cogs.similar import images_of
from bot.jobstore import JobRecord
from bot.labelsets import LabelSets
from bot.limits import Refused, parse_labels
from bot.replies import CommandReply, tell_privately
from bot.text import code_text, member_text
from jobs.schemas import ClassifyJob, Event, Failed, Origin, Result

log = logging.getLogger(__name__)

SHOWN = 10  # a 1,000-label answer shows the best ones only (Discord messages hold 2,000 characters)
NO_DEFAULT = "This server has no label set yet: give `labels`, or save one with `/labels save` (Manage Server)."


def render_result(record: JobRecord, event: Event) -> tuple[str, list[discord.Embed]]:
    if isinstance(event, Result):
        scores = [(entry["label"], float(entry["score"])) for entry in event.data.get("labels", [])]
        best = max(scores, key=lambda pair: pair[1])[0] if scores else "?"
        shown = sorted(scores, key=lambda pair: -pair[1])[:SHOWN]
        more = f"\n(best {SHOWN} of {len(scores)} labels)" if len(scores) > SHOWN else ""
        best = member_text(best, 100)
        return f"<@{record.user}> I think it is **{best}**:\n{render.bar_chart(shown)}{more}", []
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
        if await tell_privately(self.bot, record, f"Classification failed: {member_text(event.reason, 1000)}"):
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
        self.sets = LabelSets(bot.queue.redis, bot.settings.redis_prefix)
        self.menu = app_commands.ContextMenu(name="Classify", callback=self.classify_message)
        self.menu.guild_only = True

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.menu)
        self.bot.dispatcher.register("classify", ClassifyReply(self.bot, render_result))

    async def cog_unload(self) -> None:
        self.bot.dispatcher.unregister("classify")
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type)

    @app_commands.command(name="classify", description="Which of your labels fits this image best?")
    @app_commands.describe(image="The image to classify", labels="Comma-separated labels, e.g. red circle, blue square",
                           labelset="A label set this server saved (/labels list); default: the server's default set")
    @app_commands.guild_only()
    async def classify(self, interaction: discord.Interaction, image: discord.Attachment, labels: str | None = None,
                       labelset: str | None = None) -> None:
        try:
            if labels is not None and labelset is not None:
                raise Refused("Give either `labels` or a `labelset`, not both.")
            if labels is not None:
                label_list, what = parse_labels(labels), None
            else:
                found = await (self.sets.get(interaction.guild_id, labelset) if labelset is not None
                               else self.sets.default(interaction.guild_id))
                if found is None:
                    raise Refused(NO_DEFAULT if labelset is None else
                                  f"This server has no label set named **{member_text(labelset, 100)}**; "
                                  "see `/labels list`.")
                label_list, what = found.labels, found.name
            await self.start(interaction, image, label_list, what, labels or "")
        except Refused as e:
            await self.bot.refuse(interaction, str(e))

    @classify.autocomplete("labelset")
    async def _sets(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await set_names(self.sets, interaction, current)

    async def classify_message(self, interaction: discord.Interaction, message: discord.Message) -> None:
        """The "Classify" message menu: the message's first picture against the server's default set."""
        try:
            images = images_of(message)
            if not images:
                raise Refused("That message has no picture to classify.")
            found = await self.sets.default(interaction.guild_id)
            if found is None:
                raise Refused(NO_DEFAULT.replace("give `labels`, or ", ""))
            await self.start(interaction, images[0], found.labels, found.name, "")
        except Refused as e:
            await self.bot.refuse(interaction, str(e))

    async def start(self, interaction: discord.Interaction, image: discord.Attachment, label_list: list[str],
                    set_name: str | None, text: str) -> None:
        """Admission, download, queueing and the 'classifying…' answer. Raises Refused."""
        bot, settings = self.bot, self.bot.settings
        cfg = await bot.admit(interaction, text)
        precheck(image, settings)
        callback = await interaction.response.defer(thinking=True)
        key = await bot.queue.put_blob(await fetch_image(image, settings))
        job = ClassifyJob(user=interaction.user.id, guild=interaction.guild_id, channel=interaction.channel_id,
                          image=key, labels=label_list, safety=cfg.safety_policy(settings),
                          origin=Origin(source="discord", interaction_token=interaction.token))
        position = await bot.submit(job, cfg, f"classify {image.filename}", interaction,
                                    getattr(callback, "message_id", None))
        against = f"the set **{member_text(set_name, 100)}** ({len(label_list)} labels)" if set_name \
            else f"{len(label_list)} labels"
        await interaction.edit_original_response(
            content=f"Classifying `{code_text(image.filename, 100)}` against {against}… (queue position {position + 1})",
            allowed_mentions=discord.AllowedMentions.none())


async def setup(bot: ClipBot) -> None:
    await bot.add_cog(Classify(bot))
