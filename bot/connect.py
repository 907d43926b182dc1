"""Start the bot when Discord can be reached: one line per outage, retries with backoff.

discord.py's `start()` lets a DNS failure or a refused connection at login escape as a raw
aiohttp traceback, and a container restart loop is no retry policy. So before each start the
token is tried with one plain `GET /users/@me` (the call discord.py's login makes first): a
network failure or a Discord 5xx is said once, in one line, and retried with a doubling wait
(`CLIPBOT_DISCORD_RETRY_MIN_S` .. `CLIPBOT_DISCORD_RETRY_MAX_S`); a 401 raises
`discord.LoginFailure` at once, as before. Once running, discord.py reconnects by itself, but
logs every attempt with a full traceback; `ReconnectLog` keeps one line per outage of those.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import aiohttp
import discord

log = logging.getLogger(__name__)

NETWORK_ERRORS = (aiohttp.ClientError, OSError, asyncio.TimeoutError, discord.GatewayNotFound,
                  discord.DiscordServerError)


class DiscordDown(Exception):
    """Discord answered, but with a server error: worth retrying."""


def describe(exc: BaseException) -> str:
    """One line saying what failed, without a traceback."""
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"DNS lookup of {exc.host} failed ({exc.os_error.strerror or exc.os_error})"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port} ({exc.os_error.strerror or exc.os_error})"
    if isinstance(exc, asyncio.TimeoutError):
        return "no answer in time"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def check_token(token: str, timeout_s: float = 15.0) -> dict:
    """GET /users/@me with the token: the bot user, or LoginFailure (401), DiscordDown (5xx),
    or a network error."""
    url = discord.http.Route.BASE + "/users/@me"
    headers = {"Authorization": f"Bot {token}", "User-Agent": f"DiscordBot (clipbot, discord.py {discord.__version__})"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        async with session.get(url, headers=headers) as resp:
            if resp.status == 401:
                raise discord.LoginFailure("Discord rejected DISCORD_TOKEN (401)")
            if resp.status >= 500 or resp.status == 429:
                raise DiscordDown(f"Discord answered {resp.status}")
            resp.raise_for_status()
            return await resp.json(content_type=None)


class ReconnectLog(logging.Filter):
    """On discord.client: the first "Attempting a reconnect" of an outage becomes one line without
    a traceback, the next ones are dropped; `connected()` ends the outage."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Attempting a reconnect"):
            return True
        self.failures += 1
        if self.failures > 1:
            return False
        exc = record.exc_info[1] if record.exc_info else None
        record.msg = "lost the connection to Discord (%s); reconnecting with backoff, quiet until it is back"
        record.args = (describe(exc) if exc is not None else "no reason given",)
        record.exc_info, record.exc_text = None, None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True

    async def connected(self, *_) -> None:
        if self.failures:
            log.info("connected to Discord again after %d failed reconnect attempts", self.failures)
        self.failures = 0


class Backoff:
    def __init__(self, first_s: float, most_s: float):
        self.first_s, self.most_s, self.tries = first_s, most_s, 0

    def next(self) -> float:
        delay = min(self.most_s, self.first_s * 2 ** self.tries)
        self.tries += 1
        return delay


class Connector:
    """Runs bots made by `make_bot` until stopped: waits for Discord, starts, and starts afresh
    (a new bot object: discord.py's login is not re-entrant) if the connection fails at start."""

    def __init__(self, make_bot: Callable[[], discord.Client], token: str, settings):
        self.make_bot, self.token = make_bot, token
        self.first_s, self.most_s = settings.discord_retry_min_s, settings.discord_retry_max_s
        self.bot: discord.Client | None = None
        self._stop = asyncio.Event()
        self._down_since: float | None = None
        self._failures = 0
        self.reconnect_log = ReconnectLog()

    def stop(self) -> None:
        self._stop.set()
        if self.bot is not None:
            asyncio.ensure_future(self.bot.close())

    def _failed(self, exc: BaseException, delay: float) -> None:
        self._failures += 1
        if self._down_since is None:  # once per outage
            self._down_since = time.monotonic()
            log.warning("cannot reach Discord at %s: %s; retrying in %.3g s, then with backoff up to %.3g s",
                        discord.http.Route.BASE, describe(exc), delay, self.most_s)
        else:
            log.debug("Discord still unreachable (%s); next try in %.3g s", describe(exc), delay)

    def _reached(self) -> None:
        if self._down_since is not None:
            log.info("Discord reachable again after %d failed attempts (%.0f s)", self._failures,
                     time.monotonic() - self._down_since)
        self._down_since, self._failures = None, 0

    async def _sleep(self, delay: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), delay)
        except TimeoutError:
            pass

    async def run(self) -> None:
        backoff = Backoff(self.first_s, self.most_s)
        while not self._stop.is_set():
            try:
                await check_token(self.token)
            except (DiscordDown, *NETWORK_ERRORS) as e:
                delay = backoff.next()
                self._failed(e, delay)
                await self._sleep(delay)
                continue
            self._reached()
            self.bot = self.make_bot()
            self.bot.add_listener(self.reconnect_log.connected, "on_connect")
            # discord.client logs a lone connection's reconnects, discord.shard those of each shard
            discord_logs = [logging.getLogger("discord.client"), logging.getLogger("discord.shard")]
            for discord_log in discord_logs:
                discord_log.addFilter(self.reconnect_log)
            try:
                async with self.bot:
                    await self.bot.start(self.token)
                return
            except NETWORK_ERRORS as e:  # lost between the check and the gateway: start afresh
                delay = backoff.next()
                self._failed(e, delay)
                await self._sleep(delay)
            finally:
                for discord_log in discord_logs:
                    discord_log.removeFilter(self.reconnect_log)
                self.bot = None
