"""Redis outages as the bot sees them: which errors mean "Redis is unreachable", what a member is
told, and a log that says so once per outage instead of once per retry."""
from __future__ import annotations

import logging
import time

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# redis-py wraps the socket errors beneath; jobs.retry.REDIS_DOWN also counts bare OSErrors,
# which in the bot can come from Discord's HTTP client too
REDIS_UNAVAILABLE: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError)

QUEUE_UNAVAILABLE = "The queue is unavailable right now; please try again in a minute."


class OutageLog:
    """One warning when `what` becomes unreachable, one line when it answers again, nothing between."""

    def __init__(self, logger: logging.Logger, what: str):
        self.logger, self.what = logger, what
        self.since: float | None = None  # time.monotonic() of the first failure of this outage

    @property
    def down(self) -> bool:
        return self.since is not None

    def failed(self, error: BaseException) -> None:
        if self.since is None:
            self.since = time.monotonic()
            self.logger.warning("%s unavailable (%s); retrying with backoff, quiet until it is back",
                                self.what, error or type(error).__name__)

    def ok(self) -> None:
        if self.since is not None:
            self.logger.info("%s is back after %.1f s", self.what, time.monotonic() - self.since)
            self.since = None
