"""/imagine prompt:<text> [size] [steps] [seed] [init_image] — VQGAN+CLIP with live progress.

The command answers at once, privately, with the queue position; the generation itself lives in
one channel message, posted here and then edited by `bot.imagine.messages.ImagineMessages` (this
cog registers it as the renderer of imagine jobs) with previews and finally the image, its GIF,
and the Re-roll button (`bot.imagine.buttons`).
"""
from __future__ import annotations

import logging
import secrets

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import ClipBot
from bot.capacity import check_size
from bot.cogs._attachments import fetch_image, precheck
from bot.contests import render as contest_render
from bot.contests.store import Admission, Contest, ContestStore
from bot.imagine.buttons import COG_NAME, CancelButton, RerollButton
from bot.imagine.messages import ImagineMessages
from bot.imagine.store import Link, lineage_note
from bot.limits import Refused, check_prompt, parse_size
from bot.outage import QUEUE_UNAVAILABLE, REDIS_UNAVAILABLE
from bot.text import member_text
from jobs.blobs import reused_inputs
from jobs.schemas import MAX_COUNT, ImagineJob, Origin

log = logging.getLogger(__name__)

MAX_SEED = 2**53 - 1  # Discord integers stop at 2**53


def new_seed() -> int:
    return secrets.randbelow(2**31)


class Imagine(commands.Cog, name=COG_NAME):
    def __init__(self, bot: ClipBot):
        self.bot = bot
        self.messages = ImagineMessages(bot)
        self.contests = ContestStore(bot.queue.redis, bot.settings.redis_prefix)

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(CancelButton, RerollButton)
        self.bot.dispatcher.register("imagine", self.messages)

    async def cog_unload(self) -> None:
        self.bot.dispatcher.unregister("imagine")
        self.bot.remove_dynamic_items(CancelButton, RerollButton)

    @app_commands.command(name="imagine", description="Generate an image from text with VQGAN+CLIP")
    @app_commands.describe(prompt="What to draw; weight parts with |, e.g. a red circle | a blue star:0.5",
                           size="WIDTHxHEIGHT, e.g. 256x256", steps="Optimisation steps (more: slower, finer)",
                           seed="Random seed, to repeat a result", init_image="Start from this image instead of noise",
                           count="How many variations (seeds) of the prompt, made together (1-4)")
    @app_commands.guild_only()
    async def imagine(self, interaction: discord.Interaction, prompt: str, size: str | None = None,
                      steps: app_commands.Range[int, 1, 1000] | None = None,
                      seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
                      init_image: discord.Attachment | None = None,
                      count: app_commands.Range[int, 1, MAX_COUNT] = 1) -> None:
        bot, settings = self.bot, self.bot.settings
        try:
            problem = check_prompt(prompt)
            if problem:
                raise Refused(problem)
            width, height = parse_size(size)
            fields = {"prompt": prompt.strip(), "width": width, "height": height, "steps": steps or 0, "seed": seed,
                      "count": count}
            if init_image is not None:
                await bot.admit(interaction, prompt)  # refuse cheaply before downloading anything
                precheck(init_image, settings)
                await interaction.response.defer(ephemeral=True, thinking=True)
                data = await fetch_image(init_image, settings)
                fields["init_image"] = await bot.queue.put_blob(data)
                fields["init_weight"] = 0.0
        except Refused as e:
            await bot.refuse(interaction, str(e))
            return
        await self.start(interaction, fields)

    async def start(self, interaction: discord.Interaction, fields: dict, reroll_of: str | None = None,
                    parent: Link | None = None) -> None:
        """Admission, queueing, the position answer and the progress message; shared by /imagine, Re-roll
        and Refine. `parent`: the generation this one comes from (its `job` is filled in here).
        In a contest's thread the run is an entry: admitted first, with the contest's steps and size."""
        bot = self.bot
        contest: Contest | None = None
        try:
            cfg = await bot.admit(interaction, fields["prompt"])
            contest = await self.contest_of(interaction.channel_id)
            if contest is not None:
                fields = {**fields, "steps": contest.steps, "width": contest.width, "height": contest.height,
                          "count": 1}
            fields["safety"] = cfg.safety_policy(bot.settings)
            if too_big := await check_size(bot.queue, fields.get("width", 0), fields.get("height", 0)):
                raise Refused(too_big)
            job = ImagineJob(user=interaction.user.id, channel=interaction.channel_id, seed=fields.pop("seed", None) or new_seed(),
                             origin=Origin(source="discord", interaction_token=interaction.token, reroll_of=reroll_of),
                             **{**fields, "guild": interaction.guild_id})
            entry = None
            if contest is not None:
                admission = await self.contests.admit_entry(contest.id, job.id, interaction.user.id, job.seed)
                if not admission.ok:
                    raise Refused(contest_render.admission_refusal(contest, admission))
                entry = contest_render.entry_label(admission.number)
            try:
                position = await bot.submit(job, cfg, f"imagine {job.prompt[:40]}", interaction)
            except Refused:
                if contest is not None:
                    await self.contests.withdraw_entry(contest.id, job.id)
                raise
            # a contest entry records no lineage: /top and the hall of fame would link it to a named generation
            if parent is not None and contest is None:
                await self._record_lineage(job.id, parent)
            text = (f"Queued **{member_text(job.prompt, 400)}** (seed `{job.seed}`): position {position + 1} in the queue. "
                    "Progress will appear in this channel.")
            if entry:
                text = f"{entry} of the contest, shown without your name until it closes. " + text
            # the acknowledgement is private: the channel gets exactly one message per generation
            if interaction.response.is_done():
                await interaction.edit_original_response(content=text)
            else:
                await interaction.response.send_message(text, ephemeral=True)
            status = "⏳ queued" if position == 0 else f"⏳ queued · position {position + 1}"
            try:
                await self.messages.ensure_progress_message(job.id, status)
            except REDIS_UNAVAILABLE as e:  # queued already: the renderer posts the message when events flow
                log.warning("progress message of %s: Redis unavailable (%s)", job.id, e)
            except (discord.Forbidden, discord.NotFound):
                await bot.queue.cancel(job.id, by=interaction.user.id)
                await interaction.followup.send(
                    "I can't post in this channel (I need View Channel, Send Messages and Attach Files), "
                    "so I cancelled the generation. Ask a moderator, or use another channel.", ephemeral=True)
        except Refused as e:
            await bot.refuse(interaction, str(e))
        except REDIS_UNAVAILABLE as e:  # Re-roll is a button: no command error handler answers for it
            log.warning("imagine from %s: Redis unavailable (%s)", interaction.user.id, e)
            await bot.refuse(interaction, QUEUE_UNAVAILABLE)

    async def contest_of(self, channel_id: int | None) -> Contest | None:
        """The open contest whose thread this is (None: an ordinary generation). Raises Refused in
        the thread of a closed contest: it takes no more entries."""
        contest = None if channel_id is None else await self.contests.for_thread(channel_id)
        if contest is not None and not contest.is_open:
            raise Refused(contest_render.admission_refusal(contest, Admission(False, "closed", 0)))
        return contest

    async def reroll(self, interaction: discord.Interaction, job_id: str) -> None:
        """The Re-roll button: the same options as `job_id`, a new seed."""
        try:
            record = await self.bot.records.get(job_id)
        except REDIS_UNAVAILABLE as e:
            log.warning("re-roll from %s: Redis unavailable (%s)", interaction.user.id, e)
            await self.bot.refuse(interaction, QUEUE_UNAVAILABLE)
            return
        if record is None or record.kind != "imagine":
            await self.bot.refuse(interaction, "I no longer remember the options of this generation; run /imagine again.")
            return
        old: ImagineJob = record.job  # type: ignore[assignment]
        if not await self.bot.queue.blobs_exist(*reused_inputs(old)):
            await self.bot.refuse(interaction, "The image this generation started from is no longer stored; "
                                               "run /imagine again with it.")
            return
        fields = old.model_dump(exclude={"id", "created", "origin", "user", "seed", "channel"})
        await self.start(interaction, fields, reroll_of=job_id, parent=Link("", job_id, "reroll"))

    async def _record_lineage(self, job_id: str, parent: Link) -> None:
        """Remember where the new generation came from and say so under its caption."""
        bot = self.bot
        await bot.generations.link(Link(job_id, parent.parent, parent.how, parent.index))
        parent_record = await bot.records.get(parent.parent)
        if parent_record is not None:
            await bot.records.update(job_id, note=lineage_note(parent_record, parent.how, parent.index))


async def setup(bot: ClipBot) -> None:
    await bot.add_cog(Imagine(bot))
