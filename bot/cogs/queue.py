"""/queue (your jobs, positions, workers online) and /cancel [job]."""
from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands


class QueueCog(commands.Cog):
    def __init__(self, bot):
        self.bot = bot

    @app_commands.command(name="queue", description="Your queued and running jobs, and the workers online")
    async def queue(self, interaction: discord.Interaction) -> None:
        bot = self.bot
        jobs = await bot.queue.user_jobs(interaction.user.id)
        workers = await bot.queue.workers()
        lines = []
        for st in jobs:
            rec = await bot.records.get(st.id)
            label = rec.label if rec else st.kind
            where = f"position {st.position + 1}" if st.state == "queued" and st.position is not None else st.state
            if st.state == "running" and st.worker:
                where = f"running on `{st.worker}`"
            lines.append(f"`{st.id[:12]}` {label} — {where}")
        body = "\n".join(lines) if lines else "You have no queued or running jobs."
        busy = sum(1 for w in workers if w.current)
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
            mine = [st.id for st in await bot.queue.user_jobs(interaction.user.id) if st.id.startswith(job_id)]
            if len(mine) == 1:
                job_id = mine[0]
        msg = await bot.cancel_job(job_id, interaction.user, interaction.permissions)
        await interaction.response.send_message(msg, ephemeral=True)

    @cancel.autocomplete("job")
    async def _jobs(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        out = []
        for st in await self.bot.queue.user_jobs(interaction.user.id):
            if st.id.startswith(current):
                rec = await self.bot.records.get(st.id)
                out.append(app_commands.Choice(name=f"{st.id[:12]} {rec.label if rec else st.kind}"[:100], value=st.id))
        return out[:25]


async def setup(bot) -> None:
    await bot.add_cog(QueueCog(bot))
