"""`python -m bot` when Discord cannot be reached at start, or rejects the token; CLIPBOT_DEV_GUILD."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

from jobs.embedded import free_port
from tests.bot_harness import harness  # noqa: F401
from tests.fake_discord import FakeDiscord


def bot_process(port: int, redis_url: str, log_path, token: str = "test-token") -> subprocess.Popen:
    env = {**os.environ, "REDIS_URL": redis_url, "DISCORD_TOKEN": token,
           "DISCORD_API_BASE": f"http://127.0.0.1:{port}/api/v10", "DISCORD_GATEWAY_URL": f"ws://127.0.0.1:{port}/gateway",
           "CLIPBOT_DISCORD_RETRY_MIN_S": "0.2", "CLIPBOT_DISCORD_RETRY_MAX_S": "0.4",
           "CLIPBOT_GUILD_READY_TIMEOUT_S": "0.05", "LOG_LEVEL": "DEBUG", "PYTHONUNBUFFERED": "1"}
    with open(log_path, "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "bot"], env=env, stdout=log, stderr=subprocess.STDOUT)


async def wait_log(path, pred, proc, timeout: float = 30.0) -> str:
    for _ in range(int(timeout / 0.1)):
        text = path.read_text(errors="replace")
        if pred(text):
            return text
        if proc.poll() is not None:
            raise AssertionError(f"bot exited with {proc.returncode}:\n{text[-3000:]}")
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out; log:\n{path.read_text(errors='replace')[-3000:]}")


async def test_bot_retries_until_discord_comes_up(redis_server, tmp_path):
    port = free_port()  # nothing listens here yet: connection refused
    log_path = tmp_path / "bot.log"
    proc = bot_process(port, redis_server.url, log_path)
    fake = None
    try:
        await wait_log(log_path, lambda t: t.count("Discord still unreachable") >= 2, proc)
        fake = await FakeDiscord().start(port=port)
        await fake.wait_ready(timeout=30)
        text = await wait_log(log_path, lambda t: "Discord reachable again" in t, proc)
        warnings = [ln for ln in text.splitlines() if "cannot reach Discord" in ln]
        assert len(warnings) == 1, warnings  # once per outage, however many attempts
        assert f"cannot connect to 127.0.0.1:{port}" in warnings[0] and "retrying" in warnings[0]
        assert "Traceback" not in text
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if fake is not None:
            await fake.stop()


async def test_an_outage_while_running_is_one_line(redis_server, tmp_path):
    fake = await FakeDiscord().start()
    port = fake.port
    log_path = tmp_path / "bot.log"
    proc = bot_process(port, redis_server.url, log_path)
    try:
        await fake.wait_ready(timeout=30)
        await wait_log(log_path, lambda t: "registered" in t and "commands" in t, proc)
        await fake.stop()  # the gateway and REST go away: discord.py reconnects by itself
        await wait_log(log_path, lambda t: "lost the connection to Discord" in t, proc)
        fake = await FakeDiscord().start(port=port)
        await fake.wait_for(lambda: fake.identifies, timeout=30)
        text = await wait_log(log_path, lambda t: "connected to Discord again" in t, proc)
        lost = [ln for ln in text.splitlines() if "lost the connection to Discord" in ln]
        assert len(lost) == 1 and "cannot connect to 127.0.0.1" in lost[0], lost
        assert "Attempting a reconnect" not in text and "Traceback" not in text
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(proc.wait, 20)
        await fake.stop()


async def test_rejected_token_exits_non_zero(redis_server, tmp_path):
    fake = await FakeDiscord().start()
    fake.token = "the-right-one"
    log_path = tmp_path / "bot.log"
    proc = bot_process(fake.port, redis_server.url, log_path, token="a-wrong-one")
    try:
        rc = await asyncio.to_thread(proc.wait, 30)
    finally:
        if proc.poll() is None:
            proc.kill()
        await fake.stop()
    text = log_path.read_text()
    assert rc == 2, text[-2000:]
    assert "Discord rejected DISCORD_TOKEN" in text and "Traceback" not in text
    assert not fake.identifies  # never tried the gateway


async def test_dev_guild_registers_commands_in_that_server_only(harness):
    fake = harness.fake
    await harness.start_bot(dev_guild=fake.guild_id)
    puts = fake.find_calls("PUT", r"/commands$")
    assert [c.path for c in puts] == [f"/applications/{fake.app_id}/guilds/{fake.guild_id}/commands"]
    assert {c["name"] for c in puts[0].json} >= {"classify", "find", "imagine", "queue", "config"}
