"""Every Redis key the job queue uses, built in one place. All keys start with the prefix
(default ``clipbot:``):

    stream:fast, stream:imagine   job streams (consumer group "workers"); classify/index/find are
                                  on "fast" so they never wait behind a long generation
    queue:fast, queue:imagine     sorted sets of the jobs waiting for a worker, score = fair-share
                                  round, member = "<arrival stamp, 20 digits>:<job id>": serving
                                  order = rank = queue position
    wake:<lane>                   list a submit pushes to: idle workers wait on it with BLPOP
    round:<lane>                  the fair-share round the lane's workers have reached
    fair:<lane>:<uid>             the round of the member's latest job in that lane (expires)
    cooldown:<guild>:<uid>        set with PX when a job is accepted: the member's cooldown
    job:<id>                      hash: id, json, user, kind, lane, state, entry, attempts, claim,
                                  worker, seq (event counter), qm (its member in queue:<lane>),
                                  round, cancel, created, started, finished, error
    user:<uid>                    set of the user's queued + running job ids (the per-user limit)
    events                        stream of every job event (the bot reads it via its own group)
    dead                          dead-letter stream: malformed entries and jobs out of deliveries
    blob:<hex>                    image bytes with a TTL
    blobs:size, blobs:expiry      every blob's size (hash) and expiry (sorted set), for the budget
    blobs:bytes                   total bytes of stored blobs (jobs/blobs.py keeps it exact)
    workers, worker:<id>          live worker registry (zset by expiry, hash with a TTL)
    applied:<group>:<job id>      event seqs of a job that a consumer group has applied (dedupe)
    quota:<guild>:<uid>:<day>     set of a member's generations that UTC day (jobs/quota.py)

The bot keeps its own state (server config, cooldowns, votes, job records, contests) under
``bot:``; each module in bot/ names its keys.
"""
from __future__ import annotations

FAST, IMAGINE = "fast", "imagine"
LANES = (FAST, IMAGINE)
WORKER_GROUP = "workers"  # the consumer group of the job streams


def lane_of(kind: str) -> str:
    """The lane a job kind runs on: generations on their own, everything else on "fast"."""
    return IMAGINE if kind == "imagine" else FAST


class Keys:
    """Key names under one prefix."""

    def __init__(self, prefix: str = "clipbot:"):
        self.prefix = prefix
        self.events = prefix + "events"
        self.dead = prefix + "dead"
        self.workers = prefix + "workers"
        self.blob_sizes = prefix + "blobs:size"
        self.blob_expiry = prefix + "blobs:expiry"
        self.blob_bytes = prefix + "blobs:bytes"

    def stream(self, lane: str) -> str:
        return f"{self.prefix}stream:{lane}"

    def queue(self, lane: str) -> str:
        return f"{self.prefix}queue:{lane}"

    def wake(self, lane: str) -> str:
        return f"{self.prefix}wake:{lane}"

    def round(self, lane: str) -> str:
        return f"{self.prefix}round:{lane}"

    def fair(self, lane: str, user: int) -> str:
        return f"{self.prefix}fair:{lane}:{user}"

    def cooldown(self, guild: int | None, user: int) -> str:
        return f"{self.prefix}cooldown:{guild or 0}:{user}"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def user(self, user: int) -> str:
        return f"{self.prefix}user:{user}"

    def blob(self, blob_key: str) -> str:
        return f"{self.prefix}blob:{blob_key}"

    def worker(self, worker_id: str) -> str:
        return f"{self.prefix}worker:{worker_id}"

    def applied(self, group: str, job_id: str) -> str:
        return f"{self.prefix}applied:{group}:{job_id}"

    def quota(self, guild: int | None, user: int, day: str) -> str:
        return f"{self.prefix}quota:{guild or 0}:{user}:{day}"
