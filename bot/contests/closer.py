"""Closing contests exactly once: claim, post the ranking, post the winner, finish.

The schedule lives in Redis (`ContestStore.due`), so a restart neither loses a close nor repeats
it: a close is claimed first (votes stop), each posting step is recorded as soon as it is done, and
a close that was claimed but not finished is taken up again (by the same process after a restart
at once, by another after the lease) and does only the steps not yet recorded.

What is left: a crash between Discord accepting a post and `record_step` posts that step twice.
No local store can close that window (the post is on Discord's side); it is one message, once.

The poster is the Discord side (the cog): it sends and returns the message id.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Protocol

from bot.contests.ranking import Entry, winner
from bot.contests.store import (
    STEP_HALL_OF_FAME,
    STEP_RANKING,
    Claim,
    Contest,
    ContestStore,
)
from bot.outage import REDIS_UNAVAILABLE, OutageLog

log = logging.getLogger(__name__)


class Poster(Protocol):
    async def post_ranking(self, contest: Contest, ranked: list[Entry]) -> int:
        """Post the ranking (authors revealed) in the contest's thread; return its message id."""

    async def post_hall_of_fame(self, contest: Contest, entry: Entry) -> int | None:
        """Repost the winner to the server's hall-of-fame channel; None when it has none."""


class ContestCloser:
    def __init__(self, store: ContestStore, poster: Poster, owner: str, lease_s: float = 120.0,
                 boot: str | None = None):
        self.store, self.poster, self.owner, self.lease_s = store, poster, owner, lease_s
        self.boot = boot or secrets.token_hex(6)  # fresh per process start

    async def close_due(self, now: float | None = None) -> list[str]:
        """Close every due contest this process can claim; the ids it finished."""
        done = []
        for cid in await self.store.due(now):
            try:
                if await self.close_one(cid, now):
                    done.append(cid)
            except Exception:
                log.warning("closing contest %s failed; it will be retried", cid, exc_info=True)
        return done

    async def close_one(self, cid: str, now: float | None = None) -> bool:
        """True when this call finished the close."""
        claim = await self.store.claim_close(cid, self.owner, self.boot, self.lease_s, now)
        if not claim.ok:
            return False
        contest = await self.store.get(cid)
        if contest is None:
            return False
        ranked = await self.store.ranking(cid)  # final: votes stopped with the claim
        if contest.step(STEP_RANKING) is None:
            mid = await self.poster.post_ranking(contest, ranked)
            if not await self._record(claim, STEP_RANKING, str(mid), now):
                return False
        if contest.step(STEP_HALL_OF_FAME) is None:
            best = winner(ranked)
            mid = None if best is None else await self.poster.post_hall_of_fame(contest, best)
            if not await self._record(claim, STEP_HALL_OF_FAME, "none" if mid is None else str(mid), now):
                return False
        finished = await self.store.finish_close(claim, now)
        log.info("contest %s closed (%d ranked entries, claim %s)", cid, len(ranked), claim.token)
        return finished

    async def _record(self, claim: Claim, step: str, value: str, now: float | None) -> bool:
        ok = await self.store.record_step(claim, step, value, self.lease_s, now)
        if not ok:
            log.warning("contest %s: claim %s lost before %s was recorded", claim.contest_id, claim.token, step)
        return ok

    async def run(self, stop: asyncio.Event, poll_s: float = 5.0) -> None:
        """Close contests as they come due until `stop` is set; wakes at the next closing time."""
        outage = OutageLog(log, "Redis (contest closer: closes wait until it is back)")
        while not stop.is_set():
            try:
                await self.close_due()
                nxt = await self.store.next_close_at()
                outage.ok()
            except REDIS_UNAVAILABLE as e:  # an outage, not a bug: one line per outage, no traceback
                outage.failed(e)
                nxt = None
            except Exception:
                log.warning("contest closer: check failed", exc_info=True)
                nxt = None
            now = time.time()
            # a close still due after close_due is held by another process: look again at the next poll
            wait = poll_s if nxt is None or nxt <= now else min(poll_s, nxt - now)
            try:
                await asyncio.wait_for(stop.wait(), wait)
            except TimeoutError:
                pass
