"""Which gateway shards this bot process runs, and which jobs' events it therefore shows.

Several bot processes can share one Redis, each running some of the shards (SHARD_COUNT,
SHARD_IDS). Discord sends a guild's interactions and reactions to the shard that runs the guild,
so a job is started by that shard's process, and its events must be shown by that process too:
its per-job ordered task and throttled editor assume one owner, and the interaction token of a
deferred answer is used by one process only.

So every process reads the whole events stream through a consumer group of its own (a shared
group would split one job's events between processes and lose their order) and shows only the
events of jobs of guilds it runs, acking the others. Which events were shown is recorded under
one name for all processes (`APPLIED_AS`), so a group created later (a new process layout)
re-reads old entries without showing them again. A process that runs every shard keeps the
group `bot` and owns every job: one process behaves as before.
"""
from __future__ import annotations

from dataclasses import dataclass

from bot.jobstore import JobRecord
from jobs.settings import Settings

ALL_SHARDS_GROUP = "bot"
APPLIED_AS = "bot"  # every bot process records shown events under this name


def shard_of(guild_id: int | None, shard_count: int) -> int:
    """Discord's rule: a guild's shard is (guild_id >> 22) % shard_count; DMs go to shard 0."""
    if guild_id is None:
        return 0
    return (guild_id >> 22) % shard_count


@dataclass(frozen=True)
class ShardPlan:
    """`count` None: Discord's recommendation; `ids` None: every shard (then this process owns every job)."""

    count: int | None = None
    ids: tuple[int, ...] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ShardPlan:
        ids = tuple(int(n) for n in settings.shard_ids.split(",")) if settings.shard_ids else None
        if ids is not None and settings.shard_count is not None and len(ids) == settings.shard_count:
            ids = None  # all of them, spelled out
        return cls(settings.shard_count, ids)

    @property
    def events_group(self) -> str:
        """The consumer group of this process: stable for a given layout, one per process."""
        if self.ids is None:
            return ALL_SHARDS_GROUP
        return f"bot-shards-{'-'.join(map(str, self.ids))}-of-{self.count}"

    def owns_guild(self, guild_id: int | None) -> bool:
        if self.ids is None:
            return True
        assert self.count is not None  # Settings: SHARD_IDS needs SHARD_COUNT
        return shard_of(guild_id, self.count) in self.ids

    def owns(self, record: JobRecord) -> bool:
        """Whether this process shows the events of the job `record` describes."""
        return self.owns_guild(record.guild)

    def describe(self) -> str:
        count = "Discord's recommended number of" if self.count is None else f"{self.count}"
        which = "all" if self.ids is None else ",".join(map(str, self.ids))
        return f"shards {which} of {count} shards; events group {self.events_group!r}"


def problem(settings: Settings) -> str | None:
    """Why this shard layout cannot run, or None. Processes of one bot must share a Redis."""
    if settings.shard_ids and not settings.redis_url:
        return ("SHARD_IDS runs only some shards, so other bot processes run the rest: they must share one Redis. "
                "Set REDIS_URL (the embedded Redis belongs to one process).")
    return None
