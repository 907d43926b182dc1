"""Refine a picture of a finished generation, and let its author pick an earlier frame.

Refine: the same prompt, size and seed, starting from that picture, `CLIPBOT_REFINE_STEPS` steps
(default: the parent's), queued as a new generation through the imagine cog (`Imagine.start`),
which records the lineage. Pick a frame: the author swaps a picture of the post for an earlier
frame the worker kept; the message (and what /top and the hall of fame show) updates in place.
"""
from __future__ import annotations

import io

import discord
from discord.ext import commands

from bot.app import ClipBot
from bot.imagine.buttons import COG_NAME as IMAGINE_COG
from bot.imagine.final import picture_filename
from bot.imagine.remix_buttons import DYNAMIC_ITEMS, REMIX_COG
from bot.imagine.store import Link
from bot.limits import Refused
from jobs.remix import frame_key, refine_job
from jobs.validation import JobError

FORGOTTEN = "I no longer know this generation (it is too old, or was never finished), so I cannot refine it; run /imagine again."
EXPIRED = "The picture's file is no longer stored, so I cannot start from it; run /imagine again."


class Remix(commands.Cog, name=REMIX_COG):
    def __init__(self, bot: ClipBot):
        self.bot = bot

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(*DYNAMIC_ITEMS)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(*DYNAMIC_ITEMS)

    async def refine(self, interaction: discord.Interaction, job_id: str, k: int) -> None:
        bot = self.bot
        job = None
        async with bot.answering(interaction, "refine"):
            job = await self._refine_job(interaction, job_id, k)
        if job is None:
            return
        fields = job.model_dump(exclude={"id", "created", "origin", "user", "channel", "guild"})
        index = k if job.parent_index is not None else None
        await bot.get_cog(IMAGINE_COG).start(interaction, fields, parent=Link("", job_id, "refine", index))

    async def _refine_job(self, interaction: discord.Interaction, job_id: str, k: int):
        """Picture k of the generation as a refine job whose start picture is still stored; raises Refused."""
        bot = self.bot
        result = await bot.generations.result(job_id)
        if result is None or await bot.records.get(job_id) is None:
            raise Refused(FORGOTTEN)
        try:
            job = refine_job(result, k, steps=bot.settings.refine_steps, user=interaction.user.id)
        except JobError as e:
            raise Refused(str(e)) from None
        if await bot.queue.get_blob(job.init_image) is None:
            raise Refused(EXPIRED)
        return job

    async def pick_frame(self, interaction: discord.Interaction, job_id: str, values: list[str]) -> None:
        bot = self.bot
        picked = None
        async with bot.answering(interaction, "pick a frame"):
            picked = await self._picked_frame(interaction, job_id, values)
        if picked is None:
            return
        result, k, step, payload = picked
        name = picture_filename(k, result.data.get("count", 1))
        # a flagged generation's files are SPOILER_*: the frame replacing one stays hidden too
        spoiler = any(a.is_spoiler() for a in interaction.message.attachments)
        kept = [a for a in interaction.message.attachments if a.filename.removeprefix("SPOILER_") != name]
        files = [discord.File(io.BytesIO(payload), filename=name, spoiler=spoiler)]
        status = f"🎞️ picture {k} shows step {step}" if result.data.get("count", 1) > 1 else f"🎞️ shows step {step}"
        lines = [line for line in interaction.message.content.split("\n") if not line.startswith("🎞️")
                 or f"picture {k} " not in line and result.data.get("count", 1) > 1]
        content = "\n".join(lines + [status])
        response = await interaction.response.edit_message(attachments=[*kept, *files], content=content,
                                                           allowed_mentions=discord.AllowedMentions.none())
        message = getattr(response, "resource", None)
        if isinstance(message, discord.Message) and message.attachments:
            await bot.votes.set_image(job_id, message.attachments[0].url)


    async def _picked_frame(self, interaction: discord.Interaction, job_id: str, values: list[str]):
        """(result, picture, step, PNG bytes) of the chosen frame, for its author only; raises Refused."""
        bot = self.bot
        record = await bot.records.get(job_id)
        result = await bot.generations.result(job_id)
        if record is None or result is None:
            raise Refused("I no longer know this generation's frames.")
        if record.user != interaction.user.id:
            raise Refused("Only the member who made this generation can pick its frame.")
        try:
            k, step = (int(part) for part in (values or ["x"])[0].split(":"))
            key = frame_key(result, k, step)
        except (ValueError, JobError) as e:
            raise Refused(str(e) if isinstance(e, JobError) else "That is not a frame of this generation.") from None
        payload = await bot.queue.get_blob(key)
        if payload is None:
            raise Refused("That frame's file is no longer stored.")
        return result, k, step, payload

async def setup(bot: ClipBot) -> None:
    await bot.add_cog(Remix(bot))
