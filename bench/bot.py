"""bot: the real discord.py bot against the local fake Discord (real sockets) and a real Redis.

* deferral: 50 members run /imagine at the same moment; for each, the time from the fake
  gateway sending INTERACTION_CREATE to the bot's interaction callback (the acknowledgement
  Discord needs within 3 s) arriving at the fake REST API. Target p99 <= 250 ms. Measured twice:
  the first burst after start (the bot's Redis pool opens a connection per concurrent command)
  and a second one (`ack_warm_pool_*`, connections already open).
* progress edits: then a scripted worker (the bot tests' ScriptedWorker: real transport, real
  events) runs all 50 generations at once, each publishing a preview every 50 ms; per message,
  the gaps between the bot's edits give the highest edit rate seen, which must never exceed the
  configured limit (1 / edit_interval_s).
"""
from __future__ import annotations

import asyncio
import collections
import logging
import re
import tempfile
import time
from pathlib import Path

from bench.common import latency_stats, pct, redis_server


async def main_async(n: int, steps: int, step_delay: float, edit_interval_s: float) -> dict:
    from jobs.keys import IMAGINE
    from tests.bot_harness import Harness, ScriptedWorker
    from tests.fake_discord import FakeDiscord

    out: dict[str, float] = {}
    with redis_server() as url:
        fake = await FakeDiscord().start()
        h = Harness(fake, url, Path(tempfile.mkdtemp(prefix="clipbot-bench-bot-")))
        worker = None
        try:
            await h.start_bot(edit_interval_s=edit_interval_s, cooldown_s=0.0, user_max_jobs=3)
            # warm-up: one command through the whole path (first-use imports, connections)
            warm = await fake.slash("imagine", fake.user("warmup"), prompt="a red circle", steps=steps)
            await fake.wait_call("POST", rf"/interactions/{warm.id}/")

            async def burst(tag: str) -> list[float]:
                inters = await asyncio.gather(*[fake.slash("imagine", fake.user(f"{tag}{i}"),
                                                           prompt=f"a red circle number {i}", steps=steps)
                                                for i in range(n)])
                # poll (cheaply) rather than park n waiters on the fake: their predicates would run
                # in the bot's event loop on every request and inflate the very latency measured
                deadline = time.monotonic() + 60
                while not all(i.callbacks for i in inters):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{sum(not i.callbacks for i in inters)} interactions never answered")
                    await asyncio.sleep(0.05)
                # every member is under the per-user cap with no cooldown: anything but "Queued" is a failure
                failed = [i for i in inters if "Queued" not in str((i.callbacks[0].json or {}).get("data", {}).get("content"))]
                if failed:
                    logging.getLogger(__name__).warning("%s: %d of %d commands not queued, e.g. %s", tag, len(failed), n,
                                                        failed[0].callbacks[0].json)
                out[f"{tag}_not_queued"] = len(failed)
                return [i.callbacks[0].at - i.sent_at for i in inters]

            # first burst: the bot's Redis pool grows from a few connections to one per concurrent
            # command (TCP connect + handshake each); the second finds them open
            lat = await burst("burst1")
            out.update(latency_stats(lat, "ack_"))
            out.update(latency_stats(await burst("burst2"), "ack_warm_pool_"))
            out["ack_under_3s_fraction"] = round(sum(x < 3.0 for x in lat) / len(lat), 3)
            out["concurrent_commands"] = n
            queued = await h.queue.queue_length(IMAGINE)
            out["jobs_queued"] = queued
            # progress: every job publishes `steps` previews, `step_delay` apart, all at once
            t0 = time.monotonic()
            worker = ScriptedWorker(h.queue, steps=steps, step_delay=step_delay).start()
            await fake.wait_for(lambda: sum(1 for c in fake.find_calls("PATCH", r"/channels/\d+/messages/\d+$")
                                            if c.status == 200 and any(f.filename.endswith(".gif") for f in c.files))
                                >= queued, timeout=120 + n * steps * step_delay)
            out["all_results_posted_s"] = round(time.monotonic() - t0, 2)
            edits = collections.defaultdict(list)
            for c in fake.find_calls("PATCH", r"/channels/\d+/messages/\d+$", since=t0):
                if c.status == 200:
                    edits[re.search(r"/messages/(\d+)$", c.path).group(1)].append(c.at)
            gaps = [b - a for ts in edits.values() for a, b in zip(ts, ts[1:])]
            per_msg = [len(ts) for ts in edits.values()]
            min_gap = min(gaps) if gaps else float("nan")
            out.update({
                "edit_limit_per_s": round(1 / edit_interval_s, 3),
                "edit_max_rate_per_s": round(1 / min_gap, 3) if gaps else 0.0,
                "edit_min_gap_s": round(min_gap, 3),
                "edit_gap_p50_s": round(pct(gaps, 50), 3),
                "edits_per_message_p50": pct(per_msg, 50), "messages_edited": len(edits),
                "previews_offered_per_message": steps, "preview_rate_per_s": round(1 / step_delay, 1),
                "edit_rate_within_limit": 1.0 if (not gaps or min_gap >= edit_interval_s - 0.005) else 0.0,
            })
        finally:
            try:
                await h.stop_bot()
            except Exception as e:  # noqa: BLE001 - a slow shutdown must not hide the numbers
                logging.getLogger(__name__).warning("bot did not close cleanly: %r", e)
                out["bot_close_timed_out"] = 1.0
            if worker is not None:
                await worker.stop()
            await h.queue.redis.aclose()
            await fake.stop()
    return out


def run(quick: bool = False, tiny: bool = False) -> dict:
    logging.getLogger("discord").setLevel(logging.WARNING)
    n, steps = (5, 6) if tiny else (50, 40)
    interval = 0.25 if tiny else 1.0
    metrics = asyncio.run(main_async(n, steps, 0.05, interval))
    return {"metrics": metrics, "notes": {"command": "/imagine", "edit_interval_s": interval,
                                          "worker": "tests.bot_harness.ScriptedWorker (real Redis events)"}}


if __name__ == "__main__":
    from bench.common import main

    main(run)
