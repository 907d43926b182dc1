"""Whether any live worker can paint a picture this large: asked before a generation is queued,
so a size no worker admits is refused at once instead of failing after its wait in the queue.

Each imagine worker publishes in its registry entry the largest picture (pixels) it admits: its
configured budget, lowered to what its GPU memory planner has learnt fits."""
from __future__ import annotations

import math
from collections.abc import Iterable

from jobs.keys import IMAGINE
from jobs.registry import WorkerInfo


def size_refusal(workers: Iterable[WorkerInfo], width: int, height: int) -> str | None:
    """The refusal when every live imagine worker declares a limit below width x height, else None.

    No imagine worker online, or one that declares no limit: not refused here (the job waits for
    a worker, which judges it)."""
    if width <= 0 or height <= 0:  # the workers' default size
        return None
    limits = [w.max_pixels for w in workers if IMAGINE in w.lanes]
    if not limits or any(limit <= 0 for limit in limits) or width * height <= max(limits):
        return None
    side = math.isqrt(max(limits))
    return (f"The workers online can paint at most {side}x{side} pixels ({max(limits):,} in all); "
            "ask for a smaller size.")


async def check_size(queue, width: int, height: int) -> str | None:
    """`size_refusal` over the registry of `queue` (a jobs.queue.Queue)."""
    return size_refusal(await queue.workers(), width, height)
