"""/queue (your jobs, positions, workers online) and /cancel [job]."""
from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import ClipBot
from bot.eta import describe, queue_etas
from bot.text import member_text


class QueueCog(commands.Cog):
    def __init__(self, bot: ClipBot):
        self.bot = bot

    @app_commands.command(name="queue", description="Your queued and running jobs, and the workers online")
    async def queue(self, interaction: discord.Interaction) -> None:
        bot = self.bot
        jobs = await bot.queue.user_jobs(interaction.user.id)
        workers = await bot.queue.workers()
        etas = await queue_etas(bot.queue, bot.settings.imagine.steps, workers) if jobs else {}
        lines = []
        for status in jobs:
            record = await bot.records.get(status.id)
            label = member_text(record.label, 60) if record else status.kind
            where = (f"position {status.position + 1}" if status.state == "queued" and status.position is not None
                     else status.state)
            if status.state == "running" and status.worker:
                where = f"running on `{status.worker}`"
            if describe(etas.get(status.id)):
                where += f" · done in {describe(etas.get(status.id))}"
            lines.append(f"`{status.id[:12]}` {label} — {where}")
        body = "\n".join(lines) if lines else "You have no queued or running jobs."
        busy = sum(1 for worker in workers if worker.current)
        body += f"\n\nWorkers online: **{len(workers)}** ({busy} busy)."
        await interaction.response.send_message(body, ephemeral=True)

    @app_commands.command(name="cancel", description="Cancel one of your jobs (moderators: anyone's)")
    @app_commands.describe(job="Job id (from /queue); default: your newest job")
    async def cancel(self, interaction: discord.Interaction, job: str | None = None) -> None:
        bot = self.bot
        job_id = (job or "").strip()
        if not job_id:
            mine = await bot.queue.user_jobs(interaction.user.id)
            if not mine:
                await bot.refuse(interaction, "You have no queued or running jobs to cancel.")
                return
            job_id = mine[-1].id
        elif len(job_id) < 32:  # a prefix as shown by /queue
            mine = [status.id for status in await bot.queue.user_jobs(interaction.user.id)
                    if status.id.startswith(job_id)]
            if len(mine) == 1:
                job_id = mine[0]
        answer = await bot.cancel_job(job_id, interaction.user, interaction.permissions)
        await interaction.response.send_message(answer, ephemeral=True)

    @cancel.autocomplete("job")
    async def _jobs(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        choices = []
        for status in await self.bot.queue.user_jobs(interaction.user.id):
            if status.id.startswith(current):
                record = await self.bot.records.get(status.id)
                name = f"{status.id[:12]} {record.label if record else status.kind}"[:100]
                choices.append(app_commands.Choice(name=name, value=status.id))
        return choices[:25]


async def setup(bot: ClipBot) -> None:
    await bot.add_cog(QueueCog(bot))
