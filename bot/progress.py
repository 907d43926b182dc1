"""Throttled, coalescing message edits: at most one edit per `interval`, always the newest frame.

Workers may send a preview every step; Discord allows a handful of edits per channel every few
seconds. `LatestFrameEditor` keeps only the newest pending frame, and starts the next edit no
sooner than `interval` after the previous edit *finished* (so a slow or 429-delayed edit never
causes a burst afterwards). discord.py sleeps through a 429's retry_after inside the request;
frames arriving meanwhile simply replace the pending one.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)


class LatestFrameEditor:
    def __init__(self, interval: float, edit: Callable[[Any], Awaitable[None]], clock=time.monotonic):
        self.interval = interval
        self._edit = edit
        self._clock = clock
        self._pending: Any = None
        self._has_pending = False
        self._wake = asyncio.Event()
        self._last_end: float | None = None
        self._closed = False
        self._task = asyncio.create_task(self._run())
        self.edits = 0

    def offer(self, frame: Any) -> None:
        """Replace whatever frame is waiting with this newer one."""
        if self._closed:
            return
        self._pending, self._has_pending = frame, True
        self._wake.set()

    async def wait_turn(self) -> None:
        """Sleep until another edit of this message is allowed (used for the final edit)."""
        if self._last_end is not None:
            left = self._last_end + self.interval - self._clock()
            if left > 0:
                await asyncio.sleep(left)

    def mark_edited(self) -> None:
        self._last_end = self._clock()

    async def close(self) -> None:
        """Drop pending frames and wait for an edit in flight to finish."""
        self._closed = True
        self._has_pending = False
        self._wake.set()
        try:
            await self._task
        except asyncio.CancelledError:
            pass

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._closed:
                return
            await self.wait_turn()
            if self._closed:
                return
            if not self._has_pending:
                continue
            frame, self._pending, self._has_pending = self._pending, None, False
            try:
                await self._edit(frame)
                self.edits += 1
            except Exception:  # one failed preview must not stop the next ones or the result
                log.warning("progress edit failed", exc_info=True)
            finally:
                self.mark_edited()
