"""Results of deferred commands (/classify, /find, "Add to gallery") as the answer to that command.

The result edits the deferred answer through the interaction webhook while its token is fresh;
after that (tokens die after 15 minutes) it is posted in the channel with a mention, unless it
was private, which then has nowhere to go.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

import discord

from bot.app import ClipBot
from bot.dispatcher import Renderer
from bot.jobstore import JobRecord
from bot.text import user_mentions
from jobs.schemas import FINAL_EVENTS, Event

log = logging.getLogger(__name__)

GONE = (discord.NotFound, discord.Forbidden)

# a cog's pure function from a job's record and final event to (content, embeds)
ResultText = Callable[[JobRecord, Event], tuple[str, list[discord.Embed]]]


class CommandReply(Renderer):
    """Renders the final event of one command's jobs with `result_text`; earlier events show nothing."""

    def __init__(self, bot: ClipBot, result_text: ResultText, *, ephemeral: bool = False):
        self.bot = bot
        self.result_text = result_text
        self.ephemeral = ephemeral

    async def render(self, job_id: str, record: JobRecord, event: Event) -> None:
        if not isinstance(event, FINAL_EVENTS):
            return
        content, embeds = self.result_text(record, event)
        await reply(self.bot, record, content, embeds, ephemeral=self.ephemeral)
        await self.bot.records.update(job_id, delivered=True)


async def reply(bot: ClipBot, record: JobRecord, content: str, embeds: list[discord.Embed],
                ephemeral: bool = False) -> None:
    """Answer a command: edit its deferred reply while the interaction token lives, else a channel message."""
    mentions = user_mentions(record.user)  # the member asked: ping them, and only them
    if record.token_fresh() and bot.application_id:
        hook = discord.Webhook.partial(bot.application_id, record.interaction_token, client=bot)
        try:
            if record.original_message_id:  # the deferred answer (public or ephemeral) becomes the result
                await hook.edit_message(record.original_message_id, content=content, embeds=embeds,
                                        allowed_mentions=mentions)
                return
            # no message id from the deferral: edit "@original" by its literal route
            route = discord.http.Route("PATCH", "/webhooks/{webhook_id}/{webhook_token}/messages/@original",
                                       webhook_id=bot.application_id, webhook_token=record.interaction_token)
            await bot.http.request(route, json={"content": content, "embeds": [e.to_dict() for e in embeds],
                                                "allowed_mentions": mentions.to_dict()})
            return
        except GONE:
            log.info("interaction reply for %s failed; falling back to a channel message", record.user)
    if ephemeral or record.channel is None:
        return  # private notices die with the token; nothing public to say
    channel = bot.get_partial_messageable(record.channel, guild_id=record.guild)
    try:
        await channel.send(content=f"<@{record.user}> {content}", embeds=embeds, allowed_mentions=mentions)
    except GONE:
        log.warning("channel %s is gone or forbidden; reply to %s dropped", record.channel, record.user)


async def tell_privately(bot: ClipBot, record: JobRecord, content: str) -> bool:
    """An ephemeral follow-up to the command that queued the job, while its token lives. False when
    it could not be sent (then nothing is said in public: a private notice stays private)."""
    if not (record.token_fresh() and bot.application_id):
        return False
    route = discord.http.Route("POST", "/webhooks/{webhook_id}/{webhook_token}",
                               webhook_id=bot.application_id, webhook_token=record.interaction_token)
    try:
        await bot.http.request(route, json={"content": content, "flags": discord.MessageFlags(ephemeral=True).value,
                                            "allowed_mentions": {"parse": []}})
        return True
    except discord.HTTPException:
        log.info("private notice to %s failed", record.user, exc_info=True)
        return False
