"""One retry policy for riding out a Redis outage (a restart, a failover, a dropped connection).

    policy = RetryPolicy()
    await policy.call(lambda: queue.finish(claim, event))   # retried while Redis is down

    backoff = policy.backoff()                             # for a loop that keeps going
    while True:
        try: ...; backoff.reset()
        except REDIS_DOWN: await backoff.sleep()
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

T = TypeVar("T")

# What "Redis is unreachable" looks like: redis-py's own errors, and the socket errors beneath
# them (OSError covers ConnectionError) and timeouts that can surface unwrapped.
REDIS_DOWN: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff from `first_delay_s`, doubling up to `max_delay_s`; `call` gives up
    (re-raises) once `give_up_after_s` has passed, so a job whose Redis stays away is left
    unacked for another worker to reclaim instead of being held forever."""

    first_delay_s: float = 0.1
    max_delay_s: float = 2.0
    give_up_after_s: float = 300.0

    def delay(self, failures: int) -> float:
        """The wait after `failures` failures in a row (1 = the first)."""
        return min(self.first_delay_s * 2 ** max(failures - 1, 0), self.max_delay_s)

    def backoff(self) -> Backoff:
        return Backoff(self)

    async def call(self, make_call: Callable[[], Awaitable[T]]) -> T:
        """Await `make_call()`, calling it again after a wait while Redis is down."""
        backoff = self.backoff()
        deadline = time.monotonic() + self.give_up_after_s
        while True:
            try:
                return await make_call()
            except REDIS_DOWN as e:
                if time.monotonic() > deadline:
                    raise
                await backoff.sleep(f"redis unavailable ({e})")


class Backoff:
    """The waits of one retry loop under a policy: longer after each failure, reset on success."""

    def __init__(self, policy: RetryPolicy):
        self.policy = policy
        self.failures = 0

    def reset(self) -> None:
        self.failures = 0

    async def sleep(self, why: str = "", *, level: int = logging.WARNING, exc_info: bool = False) -> None:
        self.failures += 1
        delay = self.policy.delay(self.failures)
        if why:
            log.log(level, "%s; retrying in %.1fs", why, delay, exc_info=exc_info)
        await asyncio.sleep(delay)


DEFAULT_RETRY = RetryPolicy()
