"""Per-server settings changed with /config, stored as one JSON value per guild in Redis."""
from __future__ import annotations

import time

from pydantic import BaseModel, Field

from jobs.settings import Settings


class GuildConfig(BaseModel):
    allowed_channels: list[int] = Field(default_factory=list)  # empty: every channel
    max_jobs: int | None = Field(None, ge=1, le=100)  # None: the deployment default
    cooldown_s: float | None = Field(None, ge=0, le=3600)
    banned_words: list[str] = Field(default_factory=list)
    hof_channel: int | None = None
    hof_threshold: int | None = Field(None, ge=1, le=1000)
    vote_up: str | None = None
    vote_down: str | None = None

    def user_limit(self, settings: Settings) -> int:
        return self.max_jobs or settings.user_max_jobs

    def cooldown(self, settings: Settings) -> float:
        return settings.cooldown_s if self.cooldown_s is None else self.cooldown_s

    def threshold(self, settings: Settings) -> int:
        return self.hof_threshold or settings.hof_threshold

    def emojis(self, settings: Settings) -> tuple[str, str]:
        return self.vote_up or settings.vote_up, self.vote_down or settings.vote_down


class GuildConfigStore:
    """Configs in Redis, cached in-process for `cache_s` seconds: every command reads its server's
    config before the 3-second deferral, so most reads should not wait on Redis. /config writes
    through this store (the local cache updates at once); other bot processes see it within cache_s."""

    def __init__(self, redis, prefix: str, cache_s: float = 5.0):
        self.redis, self.prefix, self.cache_s = redis, prefix, cache_s
        self._cache: dict[int, tuple[float, GuildConfig]] = {}

    def _key(self, guild: int) -> str:
        return f"{self.prefix}bot:guild:{guild}:config"

    async def get(self, guild: int | None) -> GuildConfig:
        if guild is None:
            return GuildConfig()
        hit = self._cache.get(guild)
        if hit is not None and time.monotonic() - hit[0] < self.cache_s:
            return hit[1]
        raw = await self.redis.get(self._key(guild))
        cfg = GuildConfig.model_validate_json(raw) if raw else GuildConfig()
        self._cache[guild] = (time.monotonic(), cfg)
        return cfg

    async def put(self, guild: int, cfg: GuildConfig) -> None:
        await self.redis.set(self._key(guild), cfg.model_dump_json())
        self._cache[guild] = (time.monotonic(), cfg)
