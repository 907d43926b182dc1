"""/labels save|list|delete — a server's label sets for /classify (up to 1,000 labels each).

A set's labels come from the `labels` option (comma-separated; a Discord option holds up to 6,000
characters) or a text file (`file`: one label per line, or comma-separated). Saving and deleting
need Manage Server; listing does not.
"""
from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import ClipBot
from bot.labelsets import LabelSets, check_name
from bot.limits import Refused
from bot.text import code_text, member_text
from jobs.schemas import MAX_JOB_LABELS
from jobs.validation import JobError
from jobs.validation.labels import validate_labels

MAX_FILE_BYTES = 256 * 1024  # 1,000 labels of 100 characters, with room to spare


def split_labels(text: str) -> list[str]:
    """One label per line when the text has several lines, else comma-separated."""
    lines = [line for line in text.splitlines() if line.strip()]
    return lines if len(lines) > 1 else text.split(",")


async def read_label_file(att: discord.Attachment) -> str:
    if att.size > MAX_FILE_BYTES:
        raise Refused(f"`{code_text(att.filename, 100)}` is {att.size // 1024} KiB; a label file may have at most "
                      f"{MAX_FILE_BYTES // 1024} KiB.")
    try:
        data = await att.read()
    except discord.HTTPException as e:
        raise Refused(f"I could not download `{code_text(att.filename, 100)}` ({e.status}); try again.") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise Refused(f"`{code_text(att.filename, 100)}` is not UTF-8 text: give one label per line.") from None


async def set_names(store: LabelSets, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    if interaction.guild_id is None:
        return []
    return [app_commands.Choice(name=f"{s.name} ({len(s.labels)} labels){' · default' if s.default else ''}"[:100],
                                value=s.name)
            for s in await store.all(interaction.guild_id) if s.name.casefold().startswith(current.casefold())][:25]


class Labels(commands.GroupCog, group_name="labels", group_description="This server's label sets for /classify"):
    def __init__(self, bot: ClipBot):
        self.bot = bot
        self.store = LabelSets(bot.queue.redis, bot.settings.redis_prefix)
        super().__init__()

    @app_commands.command(name="save", description="Save (or replace) a label set (Manage Server)")
    @app_commands.describe(name="The set's name, e.g. animals", labels="Comma-separated labels",
                           file="A text file: one label per line (up to 1,000)",
                           default="Use this set for the Classify menu and a /classify without labels")
    @app_commands.checks.has_permissions(manage_guild=True)
    @app_commands.guild_only()
    async def save(self, interaction: discord.Interaction, name: str, labels: str | None = None,
                   file: discord.Attachment | None = None, default: bool = False) -> None:
        try:
            problem = check_name(name)
            if problem:
                raise Refused(problem)
            if (labels is None) == (file is None):
                raise Refused("Give the labels either as text (`labels`) or as a file (`file`), not both.")
            text = labels if labels is not None else await read_label_file(file)  # type: ignore[arg-type]
            try:
                cleaned = validate_labels(split_labels(text), max_labels=MAX_JOB_LABELS)
            except JobError as e:
                raise Refused(str(e)) from None
            await self.bot.admit(interaction, *cleaned, cooldown=False)
            try:
                saved = await self.store.save(interaction.guild_id, name, cleaned, make_default=default)
            except ValueError as e:
                raise Refused(str(e)) from None
        except Refused as e:
            await self.bot.refuse(interaction, str(e))
            return
        note = " It is this server's default set." if saved.default else ""
        await interaction.response.send_message(
            f"Saved the label set **{member_text(saved.name)}** ({len(saved.labels)} labels).{note} "
            f"Use it with `/classify labelset:{code_text(saved.name, 100)}`.", ephemeral=True,
            allowed_mentions=discord.AllowedMentions.none())

    @app_commands.command(name="list", description="This server's label sets")
    @app_commands.guild_only()
    async def list_sets(self, interaction: discord.Interaction) -> None:
        sets = await self.store.all(interaction.guild_id)
        if not sets:
            text = "This server has no label sets yet: `/labels save name labels` (Manage Server)."
        else:
            rows = []
            for s in sets:
                preview = ", ".join(s.labels[:5]) + (", …" if len(s.labels) > 5 else "")
                rows.append(f"**{member_text(s.name)}**{' (default)' if s.default else ''} — {len(s.labels)} labels: "
                            f"{member_text(preview)}")
            text = "\n".join(rows)
        await interaction.response.send_message(text[:2000], ephemeral=True,
                                                allowed_mentions=discord.AllowedMentions.none())

    @app_commands.command(name="delete", description="Delete a label set (Manage Server)")
    @app_commands.describe(name="The set to delete")
    @app_commands.checks.has_permissions(manage_guild=True)
    @app_commands.guild_only()
    async def delete(self, interaction: discord.Interaction, name: str) -> None:
        found = await self.store.delete(interaction.guild_id, name)
        if found is None:
            await self.bot.refuse(interaction, f"There is no label set named **{member_text(name)}**; see `/labels list`.")
            return
        now = await self.store.default(interaction.guild_id)
        after = f" The default set is now **{member_text(now.name)}**." if now else ""
        await interaction.response.send_message(f"Deleted the label set **{member_text(found.name)}**.{after}",
                                                ephemeral=True, allowed_mentions=discord.AllowedMentions.none())

    @delete.autocomplete("name")
    async def _names(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await set_names(self.store, interaction, current)


async def setup(bot: ClipBot) -> None:
    await bot.add_cog(Labels(bot))
