"""Registering the slash commands with Discord, and reading back what is registered.

Global commands can take up to an hour to show up in every server; commands registered in one
server appear at once. With `CLIPBOT_DEV_GUILD` set, the tree is copied to that server and synced
there only (for testing), and the global set is left as it is.
"""
from __future__ import annotations

import logging

import discord
from discord import app_commands

log = logging.getLogger(__name__)


async def sync_commands(tree: app_commands.CommandTree, dev_guild: int | None) -> list[app_commands.AppCommand]:
    if dev_guild:
        guild = discord.Object(dev_guild)
        tree.copy_global_to(guild=guild)
        synced = await tree.sync(guild=guild)
        log.info("registered %d commands in server %d only (CLIPBOT_DEV_GUILD): they appear at once", len(synced),
                 dev_guild)
        return synced
    synced = await tree.sync()
    log.info("registered %d global commands (new ones can take up to an hour to appear in every server)",
             len(synced))
    return synced


async def registered_commands(http: discord.http.HTTPClient, app_id: int, dev_guild: int | None) -> list[dict]:
    """The commands Discord holds for this application (in the dev server when one is set)."""
    if dev_guild:
        return await http.get_guild_commands(app_id, dev_guild)
    return await http.get_global_commands(app_id)
