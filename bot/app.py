"""The bot: a discord.py `commands.Bot` wired to Redis (queue, events, votes, per-guild config).

Handlers live in one cog per feature (bot/cogs/, loaded by name: this module imports no cog); the
shared steps every command takes — the admission checks, the ephemeral refusal, queueing with the
per-user cap and cooldown — are here. Each cog registers with `dispatcher` how its jobs' events
are shown.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import discord
import yarl
from discord import app_commands
from discord.ext import commands

from bot import limits
from bot.dispatcher import EventDispatcher
from bot.guild_config import GuildConfig, GuildConfigStore
from bot.imagine.store import GenerationStore
from bot.jobstore import JobStore, record_for
from bot.limits import Cooldowns, Refused
from bot.metrics import BotMetrics
from bot.outage import QUEUE_UNAVAILABLE, REDIS_UNAVAILABLE
from bot.quota import quota_refusal
from bot.registration import sync_commands
from bot.shards import APPLIED_AS, ShardPlan
from bot.text import code_text
from bot.votes import VoteBook
from jobs.blobs import STORE_FULL
from jobs.events import EventReader
from jobs.queue import Queue
from jobs.schemas import Job
from jobs.settings import Settings

log = logging.getLogger(__name__)

COGS = ("bot.cogs.classify", "bot.cogs.find", "bot.cogs.imagine", "bot.cogs.queue", "bot.cogs.top",
        "bot.cogs.gallery", "bot.cogs.config", "bot.cogs.votes", "bot.cogs.contest", "bot.cogs.quota",
        "bot.cogs.similar", "bot.cogs.remix", "bot.cogs.labels", "bot.cogs.history",
        "bot.cogs.waiting")


def point_discord_at(api_base: str | None, gateway_url: str | None) -> None:
    """Send discord.py's REST and gateway traffic to a proxy or a test server (process-wide)."""
    if api_base:
        discord.http.Route.BASE = api_base.rstrip("/")
    if gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)


class ClipBot(commands.AutoShardedBot):
    def __init__(self, settings: Settings, queue: Queue, *, consumer: str | None = None):
        intents = discord.Intents.none()
        intents.guilds = True
        intents.guild_reactions = True  # on_raw_reaction_add/remove: not privileged
        self.shard_plan = ShardPlan.from_settings(settings)  # bot/shards.py: which jobs this process shows
        super().__init__(command_prefix=commands.when_mentioned, intents=intents, help_command=None,
                         max_messages=None, guild_ready_timeout=settings.guild_ready_timeout_s,
                         shard_count=self.shard_plan.count,
                         shard_ids=list(self.shard_plan.ids) if self.shard_plan.ids is not None else None)
        self.settings = settings
        # nothing the bot sends pings anyone unless that call names the members (bot.text.user_mentions)
        self.allowed_mentions = discord.AllowedMentions.none()
        self.queue = queue
        redis = queue.redis
        prefix = settings.redis_prefix
        self.configs = GuildConfigStore(redis, prefix)
        self.cooldowns = Cooldowns(redis, prefix)
        self.votes = VoteBook(redis, prefix)
        self.records = JobStore(redis, prefix, settings.job_ttl_s)
        self.generations = GenerationStore(redis, prefix, settings.job_ttl_s)  # results and lineage
        reader = EventReader(redis, group=self.shard_plan.events_group, consumer=consumer or settings.events_consumer,
                             prefix=prefix, applied_as=APPLIED_AS)
        self.dispatcher = EventDispatcher(reader, self.records, self.wait_until_ready, owns=self.shard_plan.owns)
        self.tree.on_error = self._on_tree_error
        self.metrics = None  # bot.metrics.BotMetrics while CLIPBOT_METRICS_PORT is served

    async def setup_hook(self) -> None:
        log.info("running %s", self.shard_plan.describe())
        # open a few pool connections now, so the first burst of commands does not pay for them
        await asyncio.gather(*(self.queue.redis.ping() for _ in range(32)))
        for ext in COGS:
            await self.load_extension(ext)
        if self.settings.sync_commands:
            await sync_commands(self.tree, self.settings.dev_guild)
        self.dispatcher.start()
        if self.settings.metrics_port:
            self._serve_metrics(self.settings.metrics_port)

    def _serve_metrics(self, port: int) -> None:
        self.metrics = BotMetrics(self.queue, asyncio.get_running_loop())
        try:
            self.metrics.serve(port)
        except OSError as e:  # a port in use must not keep the bot from serving members
            log.error("metrics: cannot serve on port %d (%s); running without metrics", port, e)

    async def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
        await self.dispatcher.stop()
        await super().close()

    # ------------------------------------------------------------------ shared command steps

    async def admit(self, interaction: discord.Interaction, *texts: str, cooldown: bool = True) -> GuildConfig:
        """Channel allow-list, banned words and cooldown; raises Refused. Cheap: Redis only."""
        cfg = await self.configs.get(interaction.guild_id)
        # a thread (a contest's) is allowed where its channel is
        channel_id = getattr(interaction.channel, "parent_id", None) or interaction.channel_id
        for problem in (limits.check_channel(cfg, channel_id), limits.find_banned(cfg, *texts)):
            if problem:
                raise Refused(problem)
        if cooldown:
            left = await self.cooldowns.left(interaction.guild_id, interaction.user.id)
            if left > 0:
                raise Refused(f"Slow down: you can start another job in {left:.0f} s.")
        if await self.queue.blob_store_full():  # before any upload is downloaded and stored
            raise Refused(STORE_FULL)
        return cfg

    async def submit(self, job: Job, cfg: GuildConfig, label: str, interaction: discord.Interaction | None = None,
                     original_message_id: int | None = None, cooldown: bool = True) -> int:
        """Queue a job under the user's cap, cooldown and daily quota (one atomic step in Redis);
        returns its queue position. Raises Refused.

        The lane is ordered by the interaction's id (Discord's creation time), not by when this
        coroutine reaches Redis: the awaits before it (config, cooldown pre-check, job record)
        resume in no fixed order under a burst."""
        token = interaction.token if interaction is not None else None
        await self.records.put(record_for(job, label, token, original_message_id), job.id)
        roles = [role.id for role in getattr(interaction.user, "roles", ())] if interaction is not None else []
        quota = cfg.quota(self.settings, roles)
        submitted = await self.queue.submit(
            job, user_limit=cfg.user_limit(self.settings), cooldown_s=cfg.cooldown(self.settings) if cooldown else 0,
            daily_quota=quota, arrival=interaction.id if interaction is not None else None)
        if not submitted.accepted:
            await self.records.delete(job.id)
            if submitted.refusal == "quota":
                raise Refused(quota_refusal(quota, time.time()))
            raise Refused(submitted.reason or "The queue refused this job.")
        return submitted.position

    async def refuse(self, interaction: discord.Interaction, message: str) -> None:
        """Every refusal is ephemeral; a public 'thinking…' placeholder is removed first."""
        try:
            if not interaction.response.is_done():
                await interaction.response.send_message(message, ephemeral=True)
                return
            try:
                await interaction.delete_original_response()
            except discord.HTTPException:
                pass
            await interaction.followup.send(message, ephemeral=True)
        except discord.HTTPException:
            log.warning("could not send refusal to %s", interaction.user.id, exc_info=True)

    @contextlib.asynccontextmanager
    async def answering(self, interaction: discord.Interaction, what: str):
        """Around a button's or a menu's handler, which no command error handler covers: a Refused
        becomes the member's private answer; a Redis outage says the queue is unavailable (one log line)."""
        try:
            yield
        except Refused as e:
            await self.refuse(interaction, str(e))
        except REDIS_UNAVAILABLE as e:
            log.warning("%s from %s: Redis unavailable (%s)", what, interaction.user.id, e)
            await self.refuse(interaction, QUEUE_UNAVAILABLE)

    async def cancel_job(self, job_id: str, member: discord.abc.User, permissions: discord.Permissions) -> str:
        """Cancel for its author or a moderator (Manage Messages); returns what to tell the member."""
        try:
            return await self._cancel_job(job_id, member, permissions)
        except REDIS_UNAVAILABLE as e:  # the Cancel button has no command error handler to say so
            log.warning("cancel from %s: Redis unavailable (%s)", member.id, e)
            return QUEUE_UNAVAILABLE

    async def _cancel_job(self, job_id: str, member: discord.abc.User, permissions: discord.Permissions) -> str:
        status = await self.queue.status(job_id)
        if status is None:
            return f"There is no job `{code_text(job_id, 64)}`."
        if status.user != member.id and not permissions.manage_messages:
            return "Only the member who started this job, or a moderator, can cancel it."
        if status.state not in ("queued", "running"):
            return f"Job `{job_id}` already ended ({status.state})."
        ok = await self.queue.cancel(job_id, by=member.id)
        return f"Cancelling job `{job_id}`." if ok else f"Job `{job_id}` already ended."

    async def _on_tree_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        cause = getattr(error, "original", error)
        if isinstance(error, app_commands.CheckFailure):
            msg = str(error) or "You are not allowed to use this command."
            if isinstance(error, app_commands.MissingPermissions):
                msg = "You need the Manage Server permission to use this command."
        elif isinstance(cause, REDIS_UNAVAILABLE):  # an outage, not a bug: one line, no traceback
            name = interaction.command.name if interaction.command else "?"
            log.warning("/%s from %s: Redis unavailable (%s)", name, interaction.user.id, cause)
            msg = QUEUE_UNAVAILABLE
        else:
            log.error("command failed", exc_info=error)
            msg = "Something went wrong on my side; nothing was queued. Please try again."
        await self.refuse(interaction, msg)
