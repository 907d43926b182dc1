"""The one retry policy: backoff shape, retrying only while Redis is down, giving up."""
import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from jobs.retry import REDIS_DOWN, RetryPolicy


def test_delays_double_from_the_first_up_to_the_cap():
    policy = RetryPolicy(first_delay_s=0.1, max_delay_s=1.0)
    assert [policy.delay(n) for n in range(1, 7)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


def test_backoff_restarts_from_the_first_delay_after_reset():
    backoff = RetryPolicy(first_delay_s=0.0, max_delay_s=0.0).backoff()
    asyncio.run(backoff.sleep())
    asyncio.run(backoff.sleep())
    assert backoff.failures == 2
    backoff.reset()
    assert backoff.failures == 0


def test_redis_down_covers_redis_and_socket_errors_but_not_command_errors():
    for e in (RedisConnectionError(), RedisTimeoutError(), ConnectionRefusedError(), TimeoutError(), OSError()):
        assert isinstance(e, REDIS_DOWN)
    assert not isinstance(ResponseError("WRONGTYPE"), REDIS_DOWN)


def test_call_retries_through_an_outage_and_returns_the_result():
    failures = [RedisConnectionError("down"), ConnectionResetError("reset")]
    calls = []

    async def flaky():
        calls.append(1)
        if failures:
            raise failures.pop(0)
        return "ok"

    assert asyncio.run(RetryPolicy(first_delay_s=0.0, max_delay_s=0.0).call(flaky)) == "ok"
    assert len(calls) == 3


def test_call_does_not_retry_other_errors():
    calls = []

    async def broken():
        calls.append(1)
        raise ResponseError("ERR bad command")

    with pytest.raises(ResponseError):
        asyncio.run(RetryPolicy(first_delay_s=0.0).call(broken))
    assert len(calls) == 1


def test_call_gives_up_once_the_outage_outlasts_the_policy():
    calls = []

    async def down():
        calls.append(1)
        raise RedisConnectionError("still down")

    with pytest.raises(RedisConnectionError, match="still down"):
        asyncio.run(RetryPolicy(first_delay_s=0.0, max_delay_s=0.0, give_up_after_s=-1.0).call(down))
    assert len(calls) == 1
