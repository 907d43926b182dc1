"""`python -m bot`: run the Discord bot.

DISCORD_TOKEN is required. With REDIS_URL unset, an embedded Redis is started under DATA_DIR and
one local worker (`python -m worker`) is spawned next to the bot, so one machine needs one command.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys

import discord

from bot.app import ClipBot, point_discord_at
from bot.connect import Connector
from jobs.queue import queue_from_url
from jobs.settings import Settings


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "invite":
        from bot.invite import main as invite_main

        return invite_main(argv[1:])
    if argv and argv[0] == "doctor":
        from bot.doctor import main as doctor_main

        return doctor_main(argv[1:])
    if argv:
        print("usage: python -m bot [invite | doctor] [--json] (no argument: run the bot)",
              file=sys.stdout if argv[0] in ("-h", "--help") else sys.stderr)
        return 0 if argv[0] in ("-h", "--help") else 2
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from jobs.settings import SettingsError, load_settings

    try:
        settings = load_settings()
    except SettingsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not (settings.discord_token or "").strip():
        print("error: DISCORD_TOKEN is not set. Create a bot at https://discord.com/developers/applications, "
              "copy its token and run: DISCORD_TOKEN=... python -m bot", file=sys.stderr)
        return 2
    from bot.shards import problem

    if (shard_problem := problem(settings)) is not None:
        print(f"error: {shard_problem}", file=sys.stderr)
        return 2
    from jobs.embedded import resolve_redis_url

    url, server = resolve_redis_url(settings)
    worker = None
    if not settings.redis_url:
        # single-machine mode: one local worker on the same embedded Redis, never two: a worker
        # left by a bot that was killed is stopped first, and this one stops when the bot is gone
        from jobs.local_worker import spawn_worker
        from jobs.processes import PidFile

        pidfile = PidFile(settings.data_dir, "local-worker")
        pidfile.stop_stale("local worker", timeout_s=settings.shutdown_grace_s + 5)
        # its metrics (if on) on the next port: the bot's own port is taken by the bot
        metrics_env = {"CLIPBOT_METRICS_PORT": str(settings.metrics_port + 1)} if settings.metrics_port else None
        worker = spawn_worker(url, metrics_env, die_with_parent=True)
        pidfile.write(worker.pid)
        logging.info("embedded Redis at %s; started local worker pid %d", url, worker.pid)
    try:
        asyncio.run(run(settings, url))
    except discord.LoginFailure:
        print("error: Discord rejected DISCORD_TOKEN (401). Check the token.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(timeout=settings.shutdown_grace_s + 5)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
            pidfile.remove(worker.pid)
        if server is not None:
            server.stop()
    return 0


async def run(settings: Settings, redis_url: str) -> None:
    point_discord_at(settings.discord_api_base, settings.discord_gateway_url)
    queue = queue_from_url(redis_url, settings)
    connector = Connector(lambda: ClipBot(settings, queue), settings.discord_token.strip(), settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # close cleanly so the worker and Redis are stopped too
        loop.add_signal_handler(sig, connector.stop)
    await connector.run()


if __name__ == "__main__":
    sys.exit(main())
