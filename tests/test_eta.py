"""Queue ETAs: the workers' step times (worker.step_rates -> WorkerInfo.step_s in the registry) and
the bot's estimate from them (bot.eta), then the queued message and /queue through the real bot."""
import asyncio
from types import SimpleNamespace

from bot.eta import describe, queue_etas
from jobs.registry import WorkerInfo
from jobs.schemas import ImagineJob
from tests.bot_harness import harness  # noqa: F401
from tests.fake_discord import EPHEMERAL
from worker.step_rates import StepRates


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def ctx(job, step):
    return SimpleNamespace(job=job, step=step)


def test_step_rates_average_the_steps_running_jobs_advance_per_size():
    clock = Clock()
    rates = StepRates(clock)
    a = ImagineJob(prompt="a", width=64, height=64)
    b = ImagineJob(prompt="b", width=64, height=64, count=2)
    c = ImagineJob(prompt="c")
    assert rates.observe([ctx(a, 0), ctx(b, 0), ctx(c, 5)]) == {}  # first sight: nothing measured
    clock.now = 6.0
    # a advanced 10 steps, b 10 steps of 2 pictures: 30 picture-steps of 64x64 in 6 s; c 12 steps of 0x0
    assert rates.observe([ctx(a, 10), ctx(b, 10), ctx(c, 17)]) == {"64x64": 0.2, "0x0": 0.5}
    clock.now = 12.0  # 64x64 now at 0.4 s/step: the moving average moves 30% of the way
    out = rates.observe([ctx(a, 25)])
    assert abs(out["64x64"] - (0.7 * 0.2 + 0.3 * 0.4)) < 1e-9 and out["0x0"] == 0.5


async def test_registry_carries_step_times_and_etas_follow_the_queue(queue):
    await queue.register_worker(WorkerInfo(id="w1", host="h", pid=1, lanes=["imagine"], step_s={"0x0": 0.5}), ttl_s=30)
    await queue.register_worker(WorkerInfo(id="w2", host="h", pid=2, lanes=["imagine"], step_s={"64x64": 0.5}),
                                ttl_s=30)
    assert {w.id: w.step_s for w in await queue.workers()} == {"w1": {"0x0": 0.5}, "w2": {"64x64": 0.5}}
    first = ImagineJob(prompt="a", steps=20, user=1)
    second = ImagineJob(prompt="b", steps=10, count=2, user=2)
    for job in (first, second):
        assert (await queue.submit(job)).accepted
    # two workers at 2 picture-steps/s each (w2 has not measured 0x0: its average stands in)
    assert await queue_etas(queue, 100) == {first.id: 20 / 4, second.id: 40 / 4}
    assert await queue_etas(queue, 100, workers=[]) == {first.id: None, second.id: None}


def test_describe():
    assert describe(None) == "" and describe(2) == "about 5 s" and describe(42) == "about 40 s"
    assert describe(170) == "about 3 min" and describe(4800) == "about 1 h 20 min"


async def test_queued_messages_show_position_and_eta(harness):
    await harness.start_bot(queue_update_s=1.0)
    fake = harness.fake
    await harness.queue.register_worker(WorkerInfo(id="w1", host="h", pid=1, lanes=["imagine"],
                                                   step_s={"0x0": 0.5}), ttl_s=120)
    ann, bob = fake.user("ann"), fake.user("bob")
    # no worker takes them: both wait
    for user, prompt in ((ann, "a red circle"), (bob, "a blue star")):
        inter = await fake.slash("imagine", user, prompt=prompt, steps=20)
        await fake.wait_call("POST", rf"/interactions/{inter.id}/")
    second = await fake.wait_for(lambda: next((m for m in fake.channel_messages(via="channel")
                                               if "a blue star" in m["content"]), None))
    edit = await fake.wait_call("PATCH", rf"/channels/\d+/messages/{second['id']}$",
                                where=lambda c: "done in" in (c.json or {}).get("content", ""), timeout=10)
    assert "⏳ queued · position 2 · done in about 20 s" in edit.json["content"]
    await asyncio.sleep(2.5)  # nothing changed: no more edits
    assert len(fake.find_calls("PATCH", rf"/channels/\d+/messages/{second['id']}$")) == 1
    inter = await fake.slash("queue", bob)
    cb = await fake.wait_call("POST", rf"/interactions/{inter.id}/")
    assert cb.json["data"]["flags"] & EPHEMERAL
    assert "position 2 · done in about 20 s" in cb.json["data"]["content"]


async def test_registry_skips_fields_it_does_not_know(queue):
    """A newer worker's entry (an extra field) still reads as a WorkerInfo during a rolling upgrade."""
    await queue.register_worker(WorkerInfo(id="w1", host="h", pid=1), ttl_s=30)
    await queue.redis.hset(queue.keys.worker("w1"), "future_field", '"x"')
    assert [w.id for w in await queue.workers()] == ["w1"]
