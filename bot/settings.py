"""Bot-only knobs (the shared ones — REDIS_URL, DISCORD_TOKEN, limits — live in jobs.settings)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields

MiB = 1024 * 1024


@dataclass(frozen=True)
class BotSettings:
    token: str = ""
    api_base: str | None = None  # DISCORD_API_BASE: a proxy or the tests' fake Discord
    gateway_url: str | None = None  # DISCORD_GATEWAY_URL
    redis_prefix: str = "clipbot:"
    user_max_jobs: int = 3  # default per-user cap of queued + running jobs; /config overrides per guild
    cooldown_s: float = 10.0  # default least time between two jobs of one user; /config overrides
    edit_interval_s: float = 3.0  # least time between two edits of one progress message
    max_attachment_bytes: int = 10 * MiB
    min_image_side: int = 16
    max_image_side: int = 4096
    hof_threshold: int = 5
    vote_up: str = "\N{THUMBS UP SIGN}"
    vote_down: str = "\N{THUMBS DOWN SIGN}"
    sync_commands: bool = True  # bulk-overwrite the global commands at start
    guild_ready_timeout_s: float = 2.0  # discord.py waits this long after the last GUILD_CREATE
    job_record_ttl_s: int = 7 * 86400
    # the bot's consumer name in the events group: keep it stable across restarts, so entries it
    # read but had not acked before dying are read again (one name per bot process if you run several)
    events_consumer: str = "bot"
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_env(cls, **overrides) -> "BotSettings":
        """DISCORD_* from their usual names, the rest from CLIPBOT_<FIELD>; overrides win."""
        env = os.environ
        values: dict = {
            "token": env.get("DISCORD_TOKEN", "").strip(),
            "api_base": env.get("DISCORD_API_BASE") or None,
            "gateway_url": env.get("DISCORD_GATEWAY_URL") or None,
        }
        for f in fields(cls):
            name = "CLIPBOT_" + f.name.upper()
            if f.name in values or f.name == "extra" or name not in env:
                continue
            raw = env[name]
            kind = type(f.default)
            values[f.name] = raw.lower() in ("1", "true", "yes") if kind is bool else kind(raw)
        values.update(overrides)
        return cls(**values)
