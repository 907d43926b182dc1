"""/imagine prompt:<text> [size] [steps] [seed] [init_image] — VQGAN+CLIP with live progress.

The command answers at once with the queue position; the generation itself lives in one channel
message sent with the bot token (interaction tokens die after 15 minutes), edited by
bot.delivery with previews and finally the image, its GIF, and the Re-roll button.

Buttons are `DynamicItem`s: the custom_id carries the job id and the classes are registered at
start, so buttons on messages posted before a restart keep working.
"""
from __future__ import annotations

import secrets

import discord
from discord import app_commands
from discord.ext import commands

from jobs.schemas import ImagineJob, Origin

from bot.cogs._attachments import fetch_image, precheck
from bot.limits import Refused, check_prompt, parse_size

MAX_SEED = 2**53 - 1  # Discord integers stop at 2**53


def new_seed() -> int:
    return secrets.randbelow(2**31)


class CancelButton(discord.ui.DynamicItem[discord.ui.Button], template=r"clipbot:cancel:(?P<job>[0-9a-zA-Z_-]{1,64})"):
    def __init__(self, job_id: str):
        super().__init__(discord.ui.Button(label="Cancel", style=discord.ButtonStyle.danger, emoji="🛑",
                                           custom_id=f"clipbot:cancel:{job_id}"))
        self.job_id = job_id

    @classmethod
    async def from_custom_id(cls, interaction, item, match):
        return cls(match["job"])

    async def callback(self, interaction: discord.Interaction) -> None:
        msg = await interaction.client.cancel_job(self.job_id, interaction.user, interaction.permissions)
        await interaction.response.send_message(msg, ephemeral=True)


class RerollButton(discord.ui.DynamicItem[discord.ui.Button], template=r"clipbot:reroll:(?P<job>[0-9a-zA-Z_-]{1,64})"):
    def __init__(self, job_id: str):
        super().__init__(discord.ui.Button(label="Re-roll", style=discord.ButtonStyle.primary, emoji="🎲",
                                           custom_id=f"clipbot:reroll:{job_id}"))
        self.job_id = job_id

    @classmethod
    async def from_custom_id(cls, interaction, item, match):
        return cls(match["job"])

    async def callback(self, interaction: discord.Interaction) -> None:
        bot = interaction.client
        rec = await bot.records.get(self.job_id)
        if rec is None or rec.kind != "imagine":
            await bot.refuse(interaction, "I no longer remember the options of this generation; run /imagine again.")
            return
        old: ImagineJob = rec.job  # type: ignore[assignment]
        fields = old.model_dump(exclude={"id", "created", "origin", "user", "seed", "channel"})
        await start_imagine(bot, interaction, fields, reroll_of=self.job_id)


def progress_view(job_id: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job_id))
    return view


def final_view(job_id: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(RerollButton(job_id))
    return view


async def start_imagine(bot, interaction: discord.Interaction, fields: dict, reroll_of: str | None = None) -> None:
    """Admission, queueing, the position answer and the progress message; shared by /imagine and Re-roll."""
    try:
        cfg = await bot.admit(interaction, fields["prompt"])
        job = ImagineJob(user=interaction.user.id, channel=interaction.channel_id, seed=fields.pop("seed", None) or new_seed(),
                         origin=Origin(source="discord", interaction_token=interaction.token, reroll_of=reroll_of),
                         **{**fields, "guild": interaction.guild_id})
        pos = await bot.submit(job, cfg, f"imagine {job.prompt[:40]}", interaction)
        text = (f"Queued **{job.prompt}** (seed `{job.seed}`): position {pos + 1} in the queue. "
                "Progress will appear in this channel.")
        # the acknowledgement is private: the channel gets exactly one message per generation
        if interaction.response.is_done():
            await interaction.edit_original_response(content=text)
        else:
            await interaction.response.send_message(text, ephemeral=True)
        status = "⏳ queued" if pos == 0 else f"⏳ queued · position {pos + 1}"
        try:
            await bot.delivery.ensure_progress_message(job.id, status)
        except (discord.Forbidden, discord.NotFound):
            await bot.queue.cancel(job.id, by=interaction.user.id)
            await interaction.followup.send(
                "I can't post in this channel (I need View Channel, Send Messages and Attach Files), "
                "so I cancelled the generation. Ask a moderator, or use another channel.", ephemeral=True)
    except Refused as e:
        await bot.refuse(interaction, str(e))


class Imagine(commands.Cog):
    def __init__(self, bot):
        self.bot = bot

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(CancelButton, RerollButton)

    @app_commands.command(name="imagine", description="Generate an image from text with VQGAN+CLIP")
    @app_commands.describe(prompt="What to draw; weight parts with |, e.g. a red circle | a blue star:0.5",
                           size="WIDTHxHEIGHT, e.g. 256x256", steps="Optimisation steps (more: slower, finer)",
                           seed="Random seed, to repeat a result", init_image="Start from this image instead of noise")
    @app_commands.guild_only()
    async def imagine(self, interaction: discord.Interaction, prompt: str, size: str | None = None,
                      steps: app_commands.Range[int, 1, 1000] | None = None,
                      seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
                      init_image: discord.Attachment | None = None) -> None:
        bot, s = self.bot, self.bot.settings
        try:
            msg = check_prompt(prompt)
            if msg:
                raise Refused(msg)
            w, h = parse_size(size)
            fields = {"prompt": prompt.strip(), "width": w, "height": h, "steps": steps or 0, "seed": seed}
            if init_image is not None:
                await bot.admit(interaction, prompt)  # refuse cheaply before downloading anything
                precheck(init_image, s)
                await interaction.response.defer(ephemeral=True, thinking=True)
                data = await fetch_image(init_image, s)
                fields["init_image"] = await bot.queue.put_blob(data)
                fields["init_weight"] = 0.0
        except Refused as e:
            await bot.refuse(interaction, str(e))
            return
        await start_imagine(bot, interaction, fields)


async def setup(bot) -> None:
    await bot.add_cog(Imagine(bot))
