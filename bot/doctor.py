"""`python -m bot doctor [--json]`: what works and what does not for the bot, line by line, with fixes.

Redis (and AOF) and the workers online come from `jobs.checks`; then Discord over REST only (no
gateway session, so it runs next to a live bot): reachable, token valid, commands registered,
and for every server the bot is in, whether it has the permissions it needs in the channels the
server's /config names (allowed channels, hall of fame), or in every text channel when none are
named. Exit status 1 when something is broken.
"""
from __future__ import annotations

import argparse
import asyncio
import sys

import discord

from bot.app import COGS, ClipBot, point_discord_at
from bot.connect import NETWORK_ERRORS, DiscordDown, check_token, describe
from bot.guild_config import GuildConfig, GuildConfigStore
from bot.permissions import CHANNEL_NEEDS, invite_url, missing
from bot.registration import registered_commands
from jobs.checks import Report, check_redis, check_workers
from jobs.queue import queue_from_url
from jobs.settings import SettingsError, load_settings

PERMISSIONS_FIX = ("give the bot's role these permissions in that channel (Edit Channel > Permissions), "
                   "or invite it again with the link from `python -m bot invite`")


async def expected_commands(settings, url: str | None) -> list[str]:
    """The names the bot registers: its own command tree, built without logging in."""
    bot = ClipBot(settings, queue_from_url(url or "redis://127.0.0.1:1/0", settings, max_connections=1))
    try:
        for ext in COGS:
            await bot.load_extension(ext)
        return sorted(c.name for c in bot.tree.get_commands())
    finally:
        await bot.queue.redis.aclose()


async def check_discord(report: Report, settings) -> discord.Client | None:
    """Reachable and token valid; returns a logged-in REST client (caller closes it)."""
    token = (settings.discord_token or "").strip()
    if not token:
        report.add("Discord token", "fail", "DISCORD_TOKEN is not set",
                   "create a bot at https://discord.com/developers/applications (Bot > Reset Token) and set DISCORD_TOKEN")
        return None
    try:
        await check_token(token)
    except discord.LoginFailure:
        report.add("Discord", "ok", f"{discord.http.Route.BASE} answers")
        report.add("Discord token", "fail", "Discord rejected DISCORD_TOKEN (401)",
                   "copy the token again from the developer portal (Bot > Reset Token)")
        return None
    except (DiscordDown, *NETWORK_ERRORS) as e:
        report.add("Discord", "fail", f"cannot reach {discord.http.Route.BASE}: {describe(e)}",
                   "check DNS, the network or proxy (DISCORD_API_BASE); `python -m bot` waits and retries")
        return None
    client = discord.Client(intents=discord.Intents.none())
    try:
        await client.login(token)
    except (discord.HTTPException, *NETWORK_ERRORS) as e:
        await client.close()
        report.add("Discord", "fail", f"login failed: {describe(e)}", "run the doctor again; see the message")
        return None
    report.add("Discord", "ok", f"{discord.http.Route.BASE} answers")
    report.add("Discord token", "ok", f"valid: bot user {client.user} (application {client.application_id})")
    return client


async def check_commands(report: Report, client: discord.Client, settings, expected: list[str]) -> None:
    where = f"in server {settings.dev_guild} (CLIPBOT_DEV_GUILD)" if settings.dev_guild else "globally"
    try:
        registered = {c["name"] for c in await registered_commands(client.http, client.application_id,
                                                                   settings.dev_guild)}
    except discord.HTTPException as e:
        report.add("commands", "fail", f"cannot list the registered commands: {e}", "see the message")
        return
    lacking = [n for n in expected if n not in registered]
    if lacking:
        report.add("commands", "fail", f"not registered {where}: {', '.join(lacking)}",
                   "start the bot once (it registers its commands at start unless CLIPBOT_SYNC_COMMANDS=false); "
                   "global commands can take up to an hour to appear, CLIPBOT_DEV_GUILD=<server id> makes them "
                   "appear at once in that server")
    else:
        report.add("commands", "ok", f"{len(expected)} registered {where}")


def _channel_line(report: Report, guild, me, channel, role: str) -> None:
    lacks = missing(channel.permissions_for(me), CHANNEL_NEEDS[role])
    name = f"{guild.name}: #{channel.name} ({role})"
    if lacks:
        report.add(name, "fail", f"the bot lacks {', '.join(lacks)}", PERMISSIONS_FIX)
    else:
        report.add(name, "ok", "the bot has every permission it needs")


async def check_guild(report: Report, client: discord.Client, guild_id: int, cfg: GuildConfig | None) -> None:
    guild = await client.fetch_guild(guild_id)
    me = await guild.fetch_member(client.user.id)
    channels = {c.id: c for c in await guild.fetch_channels()}
    if cfg is None:
        report.add(f"{guild.name}: channels", "skip", "no Redis to read this server's /config from")
        return
    named = [(cid, "commands") for cid in cfg.allowed_channels]
    if cfg.hof_channel:
        named.append((cfg.hof_channel, "hall of fame"))
    for cid, role in named:
        channel = channels.get(cid)
        if channel is None:
            report.add(f"{guild.name}: channel {cid} ({role})", "fail", "no longer exists (or the bot cannot see it)",
                       "pick another with /config")
        else:
            _channel_line(report, guild, me, channel, role)
    if cfg.allowed_channels:
        return
    texts = [c for c in channels.values() if isinstance(c, discord.TextChannel)]
    short = {c.name: missing(c.permissions_for(me), CHANNEL_NEEDS["commands"]) for c in texts}
    short = {name: lacks for name, lacks in short.items() if lacks}
    if short:
        where = "; ".join(f"#{n}: {', '.join(lacks)}" for n, lacks in sorted(short.items()))
        report.add(f"{guild.name}: channels", "warn",
                   f"commands are allowed everywhere, but in {len(short)} of {len(texts)} text channels the bot "
                   f"lacks permissions ({where})",
                   "limit the commands to channels where it can post (/config allowed channels), or " + PERMISSIONS_FIX)
    else:
        report.add(f"{guild.name}: channels", "ok", f"the bot can post in all {len(texts)} text channels")


async def diagnose(settings) -> Report:
    point_discord_at(settings.discord_api_base, settings.discord_gateway_url)
    report = Report("clipbot doctor: the bot")
    url = await check_redis(report, settings)
    await check_workers(report, url, settings)
    client = await check_discord(report, settings)
    if client is None:
        for name in ("commands", "servers"):
            report.add(name, "skip", "needs Discord and a valid token")
        return report
    try:
        await check_commands(report, client, settings, await expected_commands(settings, url))
        guilds = [g async for g in client.fetch_guilds(limit=None)]
        if not guilds:
            report.add("servers", "fail", "the bot is in no server yet",
                       f"invite it: {invite_url(client.application_id)}")
            return report
        report.add("servers", "ok", f"in {len(guilds)}: " + ", ".join(g.name for g in guilds))
        store = None
        if url is not None:
            store = GuildConfigStore(queue_from_url(url, settings, max_connections=2).redis, settings.redis_prefix)
        try:
            for g in guilds:
                cfg = await store.get(g.id) if store is not None else None
                try:
                    await check_guild(report, client, g.id, cfg)
                except discord.HTTPException as e:
                    report.add(f"{g.name}: channels", "fail", f"cannot read the server: {e}", PERMISSIONS_FIX)
        finally:
            if store is not None:
                await store.redis.aclose()
    finally:
        await client.close()
    return report


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bot doctor", description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print JSON on stdout and nothing else")
    args = ap.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return asyncio.run(diagnose(settings)).print(args.json)
