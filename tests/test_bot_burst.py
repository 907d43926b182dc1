"""Many commands at the same instant, through the real bot and the fake Discord: the queue keeps
arrival order, and one member's concurrent commands are held to the cooldown and daily quota."""
from __future__ import annotations

import asyncio
import re

from jobs.keys import IMAGINE
from tests.bot_harness import harness  # noqa: F401


async def answers(fake, inters) -> list[str]:
    await fake.wait_for(lambda: all(i.callbacks for i in inters), timeout=60)
    return [str(i.callbacks[0].json["data"].get("content")) for i in inters]


async def test_a_burst_of_thirty_is_queued_in_arrival_order(harness):
    # a cooldown, as by default: the extra Redis round trip before submit is where the order used to flip
    await harness.start_bot(cooldown_s=10.0)
    fake = harness.fake
    members = [fake.user(f"m{i}") for i in range(30)]
    inters = await asyncio.gather(*[fake.slash("imagine", m, prompt=f"picture {i}") for i, m in enumerate(members)])
    assert all("Queued" in a for a in await answers(fake, inters))
    # every member's position (= serving order) is their place in arrival order
    positions = []
    for m in members:
        (status,) = await harness.queue.user_jobs(m.id)
        positions.append(status.position)
    assert positions == list(range(30))


async def test_five_imagines_from_one_member_at_once_queue_one(harness):
    await harness.start_bot(cooldown_s=20.0, user_max_jobs=3)
    fake = harness.fake
    ann = fake.user("ann")
    inters = await asyncio.gather(*[fake.slash("imagine", ann, prompt=f"a red circle {i}") for i in range(5)])
    texts = await answers(fake, inters)
    assert sum("Queued" in t for t in texts) == 1
    slow = [t for t in texts if "Queued" not in t]
    assert len(slow) == 4 and all(re.fullmatch(r"Slow down: you can start another job in \d+ s\.", t) for t in slow)
    assert await harness.queue.queue_length(IMAGINE) == 1
    assert len(await harness.queue.user_jobs(ann.id)) == 1


async def test_daily_quota_holds_under_concurrent_commands(harness):
    await harness.start_bot(cooldown_s=0.0, user_max_jobs=10, daily_quota=2)
    fake = harness.fake
    bob = fake.user("bob")
    inters = await asyncio.gather(*[fake.slash("imagine", bob, prompt=f"a blue star {i}") for i in range(6)])
    texts = await answers(fake, inters)
    assert sum("Queued" in t for t in texts) == 2
    assert all("You have used your 2 generations for today on this server" in t for t in texts if "Queued" not in t)
    assert await harness.queue.queue_length(IMAGINE) == 2
