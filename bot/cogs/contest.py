"""/contest start | status | end — a themed /imagine round in a thread of its own, and its close.

The contest itself (entries, votes, the close claimed exactly once) is `bot.contests`; this cog
translates commands into store calls, opens the thread, and is the closer's Discord side
(`ContestPoster`: the ranking in the thread, the winner in the hall-of-fame channel). One
`ContestCloser` runs per bot process, from cog_load until the bot closes; `/contest end` also asks
it to close at once rather than at its next wake-up.
"""
from __future__ import annotations

import asyncio
import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import ClipBot
from bot.contests import render
from bot.contests.closer import ContestCloser
from bot.contests.ranking import Entry
from bot.contests.rules import ContestRefused, validate_request
from bot.contests.store import Contest, ContestStore
from bot.limits import Refused

log = logging.getLogger(__name__)

THREAD_ARCHIVE_MIN = 10080  # a week, the longest a contest runs: the thread stays open while it does
NO_THREAD = ("I could not open a thread for the contest here: I need Create Public Threads and Send Messages "
             "in Threads in this channel. Ask a moderator, or start it in another channel.")


class ContestPoster:
    """Posts a contest's close for `ContestCloser` and returns the message ids."""

    def __init__(self, bot: ClipBot):
        self.bot = bot

    async def _emojis(self, contest: Contest) -> tuple[str, str]:
        return (await self.bot.configs.get(contest.guild)).emojis(self.bot.settings)

    async def post_ranking(self, contest: Contest, ranked: list[Entry]) -> int:
        up, down = await self._emojis(contest)
        text = render.ranking(contest, ranked, up, down)
        # the ranking tells each author where they placed: their mentions ping, nothing else does
        mentions = discord.AllowedMentions(everyone=False, roles=False,
                                           users=[discord.Object(e.author) for e in ranked[:render.RANKING_LINES]])
        for where in dict.fromkeys(c for c in (contest.thread, contest.channel) if c):
            try:
                msg = await self.bot.get_partial_messageable(where, guild_id=contest.guild).send(
                    text, allowed_mentions=mentions)
                return msg.id
            except (discord.NotFound, discord.Forbidden):
                log.warning("contest %s: cannot post the ranking in %s", contest.id, where)
        return 0  # the thread and its channel are gone: nothing to post to, and nothing to retry

    async def post_hall_of_fame(self, contest: Contest, entry: Entry) -> int | None:
        cfg = await self.bot.configs.get(contest.guild)
        if not cfg.hof_channel:
            return None
        up, down = cfg.emojis(self.bot.settings)
        embed = discord.Embed(title="🏆 Hall of fame", description=render.hall_of_fame(contest, entry, up, down))
        try:
            source = self.bot.get_partial_messageable(contest.thread or contest.channel, guild_id=contest.guild)
            original = await source.fetch_message(entry.message_id)
            if original.attachments:
                embed.set_image(url=original.attachments[0].url)
        except discord.HTTPException:
            log.info("contest %s: winning entry message %s not found; reposting without the picture",
                     contest.id, entry.message_id)
        try:
            msg = await self.bot.get_partial_messageable(cfg.hof_channel, guild_id=contest.guild).send(
                embed=embed, allowed_mentions=discord.AllowedMentions.none())
        except (discord.NotFound, discord.Forbidden):
            log.warning("contest %s: cannot post in the hall-of-fame channel %s", contest.id, cfg.hof_channel)
            return None
        return msg.id


class Contests(commands.Cog):
    contest = app_commands.Group(name="contest", description="Themed /imagine contests", guild_only=True)

    def __init__(self, bot: ClipBot):
        self.bot = bot
        self.store = ContestStore(bot.queue.redis, bot.settings.redis_prefix)
        self.closer = ContestCloser(self.store, ContestPoster(bot), owner=bot.settings.events_consumer,
                                    lease_s=bot.settings.contest_close_lease_s)
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()

    async def cog_load(self) -> None:
        self._spawn(self._run_closer())

    async def cog_unload(self) -> None:
        self._stop.set()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=10)
            for task in pending:
                task.cancel()

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_closer(self) -> None:
        await self.bot.wait_until_ready()
        await self.closer.run(self._stop)

    async def _close_now(self) -> None:
        try:
            await self.closer.close_due()
        except Exception:
            log.warning("closing contests now failed; the closer retries", exc_info=True)

    # ------------------------------------------------------------------ commands

    @contest.command(name="start", description="Start a contest in a new thread of this channel (Manage Server)")
    @app_commands.describe(theme="What the entries should show", minutes="How long entries and votes stay open",
                           entries="Entries per member (default 1)",
                           min_member_days="Only members who joined at least this many days ago can vote (default 0)")
    @app_commands.checks.has_permissions(manage_guild=True)
    async def start(self, interaction: discord.Interaction, theme: str, minutes: int, entries: int = 1,
                    min_member_days: int = 0) -> None:
        bot, s = self.bot, self.bot.settings
        try:
            if isinstance(interaction.channel, discord.Thread):
                raise Refused("Start a contest in a text channel: it opens a thread of its own.")
            cfg = await bot.admit(interaction, theme, cooldown=False)
            req = validate_request(theme, minutes, entries, min_member_days)
        except (Refused, ContestRefused) as e:
            await bot.refuse(interaction, str(e))
            return
        created = await self.store.create(req, guild=interaction.guild_id, channel=interaction.channel_id,
                                          created_by=interaction.user.id, steps=s.imagine.steps,
                                          width=s.imagine.width, height=s.imagine.height)
        if not created.ok:
            running = await self.store.get(created.contest_id)
            await bot.refuse(interaction, render.already_running(running) if running else
                             "A contest is already starting in this channel; try /contest status.")
            return
        await interaction.response.defer(thinking=True)
        contest = await self.store.get(created.contest_id)
        try:
            thread = await bot.http.start_thread_without_message(
                interaction.channel_id, name=render.thread_name(contest), auto_archive_duration=THREAD_ARCHIVE_MIN,
                type=discord.ChannelType.public_thread.value)
        except discord.HTTPException:
            log.warning("contest %s: thread creation failed; abandoned", contest.id, exc_info=True)
            await self.store.abandon(contest.id)
            await bot.refuse(interaction, NO_THREAD)
            return
        thread_id = int(thread["id"])
        await self.store.set_thread(contest.id, thread_id)
        contest = await self.store.get(contest.id)
        up, down = cfg.emojis(s)
        try:
            await bot.get_partial_messageable(thread_id, guild_id=contest.guild).send(
                render.announcement(contest, up, down), allowed_mentions=discord.AllowedMentions.none())
        except discord.HTTPException:
            log.warning("contest %s: announcement in thread %s failed", contest.id, thread_id, exc_info=True)
        log.info("contest %s started by %s in %s (thread %s), closes at %.0f", contest.id, interaction.user.id,
                 contest.channel, thread_id, contest.closes_at)
        await interaction.edit_original_response(
            content=f"🏁 A contest is open in <#{thread_id}>: **{render.safe(contest.theme)}**. "
                    f"It closes <t:{int(contest.closes_at)}:R>.",
            allowed_mentions=discord.AllowedMentions.none())

    @contest.command(name="status", description="The contest of this channel or thread: time left, entries")
    async def status(self, interaction: discord.Interaction) -> None:
        contest = await self.store.for_channel(interaction.channel_id)
        if contest is None:
            await self.bot.refuse(interaction, "There is no contest in this channel. "
                                               "A moderator can start one with /contest start.")
            return
        posted = sum(1 for e in await self.store.entries(contest.id) if e.posted)
        mine = await self.store.entry_count(contest.id, interaction.user.id)
        await interaction.response.send_message(render.status(contest, posted, mine), ephemeral=True,
                                                allowed_mentions=discord.AllowedMentions.none())

    @contest.command(name="end", description="Close this channel's contest now (Manage Server)")
    @app_commands.checks.has_permissions(manage_guild=True)
    async def end(self, interaction: discord.Interaction) -> None:
        contest = await self.store.for_channel(interaction.channel_id)
        outcome = "missing" if contest is None else await self.store.end_now(contest.id)
        if outcome == "missing":
            await self.bot.refuse(interaction, "There is no contest in this channel to end.")
            return
        if outcome == "closed":
            await self.bot.refuse(interaction, "This contest is already closed or closing.")
            return
        log.info("contest %s ended early by %s", contest.id, interaction.user.id)
        await interaction.response.send_message(
            f"Closing the contest now: the ranking will be posted in <#{contest.thread or contest.channel}>.",
            ephemeral=True)
        self._spawn(self._close_now())


async def setup(bot: ClipBot) -> None:
    await bot.add_cog(Contests(bot))
