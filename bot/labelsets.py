"""A server's saved label sets for /classify: name -> labels (up to 1,000), JSON in one Redis hash.

The default set (what the "Classify" message menu and a /classify without labels use) is the one
saved with `default:true`, else the first one saved; when it is deleted, the oldest remaining set
takes over.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass

MAX_SETS = 25  # what one autocomplete answer can list
MAX_NAME_CHARS = 32
NAME = re.compile(r"[\w][\w .-]{0,31}")


@dataclass(frozen=True)
class LabelSet:
    name: str
    labels: list[str]
    saved: float
    default: bool = False


def check_name(raw: str) -> str | None:
    """A problem with a set's name, for the member; None when fine."""
    if not NAME.fullmatch(raw.strip()):
        return (f"A label set's name is 1 to {MAX_NAME_CHARS} letters, digits, spaces, dots, dashes or "
                "underscores, starting with a letter or digit.")
    return None


def _text(raw) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


class LabelSets:
    def __init__(self, redis, prefix: str):
        self.redis, self.prefix = redis, prefix

    def _key(self, guild: int) -> str:
        return f"{self.prefix}bot:guild:{guild}:labelsets"

    def _default_key(self, guild: int) -> str:
        return f"{self.prefix}bot:guild:{guild}:labelset_default"

    async def all(self, guild: int) -> list[LabelSet]:
        """Every set of the server, oldest first, the default one marked."""
        raw = await self.redis.hgetall(self._key(guild))
        chosen = await self._default_name(guild)
        sets = []
        for key, value in raw.items():
            data = json.loads(value)
            sets.append(LabelSet(_text(key), data["labels"], data["saved"]))
        sets.sort(key=lambda s: s.saved)
        if chosen not in {s.name for s in sets}:
            chosen = sets[0].name if sets else None
        return [LabelSet(s.name, s.labels, s.saved, s.name == chosen) for s in sets]

    async def get(self, guild: int, name: str) -> LabelSet | None:
        return next((s for s in await self.all(guild) if s.name.casefold() == name.strip().casefold()), None)

    async def default(self, guild: int) -> LabelSet | None:
        return next((s for s in await self.all(guild) if s.default), None)

    async def save(self, guild: int, name: str, labels: list[str], make_default: bool = False) -> LabelSet:
        """Create or replace a set (replacing keeps its age). Raises ValueError past MAX_SETS."""
        existing = await self.get(guild, name)
        if existing is None and await self.redis.hlen(self._key(guild)) >= MAX_SETS:
            raise ValueError(f"This server already has {MAX_SETS} label sets; delete one first (`/labels delete`).")
        name = existing.name if existing else name.strip()
        saved = existing.saved if existing else time.time()
        await self.redis.hset(self._key(guild), name, json.dumps({"labels": labels, "saved": saved}))
        if make_default:
            await self.redis.set(self._default_key(guild), name)
        return await self.get(guild, name)  # type: ignore[return-value]

    async def delete(self, guild: int, name: str) -> LabelSet | None:
        found = await self.get(guild, name)
        if found is not None:
            await self.redis.hdel(self._key(guild), found.name)
            if found.name == await self._default_name(guild):
                await self.redis.delete(self._default_key(guild))
        return found

    async def _default_name(self, guild: int) -> str | None:
        raw = await self.redis.get(self._default_key(guild))
        return _text(raw) if raw else None
