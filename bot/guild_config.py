"""Per-server settings changed with /config, stored as one JSON value per guild in Redis."""
from __future__ import annotations

import time

from pydantic import BaseModel, Field

from jobs.schemas import MAX_LABEL_CHARS, MAX_SAFETY_LABELS, SafetyPolicy
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
    daily_quota: int | None = Field(None, ge=0, le=100_000)  # None: the deployment default; 0: unlimited
    quota_exempt_role: int | None = None  # members with this role have no daily quota
    safety_labels: list[str] | None = Field(None, max_length=MAX_SAFETY_LABELS)  # None: the deployment's; []: off
    safety_threshold: float | None = Field(None, gt=0, le=1)
    self_votes: bool = False  # off: a member's reaction on their own generation is no vote

    def user_limit(self, settings: Settings) -> int:
        return self.max_jobs or settings.user_max_jobs

    def cooldown(self, settings: Settings) -> float:
        return settings.cooldown_s if self.cooldown_s is None else self.cooldown_s

    def threshold(self, settings: Settings) -> int:
        return self.hof_threshold or settings.hof_threshold

    def emojis(self, settings: Settings) -> tuple[str, str]:
        return self.vote_up or settings.vote_up, self.vote_down or settings.vote_down

    def quota(self, s: Settings, role_ids=()) -> int:
        """Generations per UTC day for a member with these roles; 0 = unlimited."""
        if self.quota_exempt_role is not None and self.quota_exempt_role in set(role_ids):
            return 0
        return s.daily_quota if self.daily_quota is None else self.daily_quota

    def safety_policy(self, s: Settings) -> SafetyPolicy | None:
        """What jobs of this server carry as `safety`; None: no check."""
        labels = parse_safety_labels(s.safety_labels) if self.safety_labels is None else self.safety_labels
        if not labels:
            return None
        threshold = s.safety_threshold if self.safety_threshold is None else self.safety_threshold
        return SafetyPolicy(labels=labels, threshold=threshold)


def parse_safety_labels(raw: str) -> list[str]:
    """'gore, graphic violence' -> labels (deduplicated, case-insensitively). Raises ValueError
    with a message for the member when a label is too long or there are too many."""
    out: list[str] = []
    seen: set[str] = set()
    for part in raw.replace("\n", ",").split(","):
        label = " ".join(part.split())
        if not label or label.casefold() in seen:
            continue
        if len(label) > MAX_LABEL_CHARS:
            raise ValueError(f"The safety label {label[:40]!r}... is {len(label)} characters; the limit is {MAX_LABEL_CHARS}.")
        seen.add(label.casefold())
        out.append(label)
    if len(out) > MAX_SAFETY_LABELS:
        raise ValueError(f"That is {len(out)} safety labels; the limit is {MAX_SAFETY_LABELS}.")
    return out


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
