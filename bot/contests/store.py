"""Contests in Redis. Every rule that two members (or two bot processes) could race on is one Lua
script: one open contest per channel, a member's entry count, one vote per member per entry, and
the close, which is claimed, done step by step, then finished, so that it happens exactly once.

Keys (under `<prefix>bot:contest:`):

| key | type | holds |
|---|---|---|
| `c:<id>` | hash | the contest (see `Contest`), its state (open, closing, closed) and the close's claim and steps |
| `c:<id>:entries` | sorted set | entry job ids by entry number |
| `c:<id>:authors` | hash | member -> entries admitted |
| `c:<id>:e:<job>` | hash | one entry: author, seed, number, entered_at, message_id, flagged, up, down |
| `c:<id>:v:<job>` | hash | member -> `up` or `down`: one vote per member per entry |
| `chan:<channel>` | string | the contest running from this channel (released when its close is finished) |
| `thread:<thread>` | string | the contest this thread belongs to |
| `msg:<message>` | string | `<contest id> <job id>`: which entry a reacted message shows |
| `closing` | sorted set | contests not yet finished, by closing time: survives restarts |
| `told:<id>:<member>:<reason>` | string, 7 days | the member was told why a reaction did not count (bot/cogs/votes.py) |

Times are unix seconds passed by the caller (`now`), as elsewhere in the bot. Discord ids are
kept as strings in Lua (doubles would round them).
"""
from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from bot.contests.lua import SCRIPTS
from bot.contests.ranking import Entry, rank
from bot.contests.rules import ContestRequest, joined_timestamp

KEEP_CLOSED_S = 90 * 86400  # a closed contest stays readable (status, late reactions answered) this long

STEP_RANKING = "step_ranking"  # the ranking message id, once posted
STEP_HALL_OF_FAME = "step_hof"  # the hall-of-fame message id, or "none" when there was nothing to post


@dataclass(frozen=True)
class Contest:
    id: str
    guild: int
    channel: int  # where /contest start ran: one running contest per channel
    thread: int | None
    theme: str
    created_by: int
    opens_at: float
    closes_at: float
    entries_limit: int
    min_member_days: int
    steps: int
    width: int
    height: int
    state: str  # open, closing, closed
    ended_early: bool = False
    entries: int = 0  # entry numbers handed out so far
    steps_done: tuple[tuple[str, str], ...] = ()  # the close's finished steps

    @property
    def is_open(self) -> bool:
        return self.state == "open"

    def step(self, name: str) -> str | None:
        return dict(self.steps_done).get(name)


@dataclass(frozen=True)
class Created:
    ok: bool
    contest_id: str  # the new one, or the one already running in that channel


@dataclass(frozen=True)
class Admission:
    ok: bool
    status: str  # admitted, again (this job was already admitted), limit, closed, missing
    number: int  # the entry number when ok; the member's entries so far when status == limit


@dataclass(frozen=True)
class VoteOutcome:
    status: str  # counted, switched, removed, unchanged, own, too_new, closed, not_entry
    contest_id: str | None
    job_id: str | None
    up: int
    down: int

    @property
    def changed(self) -> bool:
        return self.status in ("counted", "switched", "removed")


@dataclass(frozen=True)
class Claim:
    status: str  # claimed, busy (another process holds it), not_due, done, missing
    contest_id: str
    token: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "claimed"


def _s(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _opt_int(v) -> int | None:
    return None if v in (None, b"", "") else int(_s(v))


class ContestStore:
    def __init__(self, redis, prefix: str = "clipbot:"):
        self.redis, self.p = redis, f"{prefix}bot:contest:"
        self._lua = {name: redis.register_script(src) for name, src in SCRIPTS.items()}

    # ------------------------------------------------------------------ keys
    def _c(self, cid: str) -> str:
        return f"{self.p}c:{cid}"

    def _entry_keys(self, cid: str, job_id: str) -> list[str]:
        c = self._c(cid)
        return [c, f"{c}:entries", f"{c}:authors", f"{c}:e:{job_id}"]

    @property
    def schedule_key(self) -> str:
        return f"{self.p}closing"

    # ------------------------------------------------------------------ contests

    async def create(self, req: ContestRequest, *, guild: int, channel: int, created_by: int, steps: int,
                     width: int, height: int, now: float | None = None) -> Created:
        """Open a contest from `channel` unless one is already running there (or `channel` is a
        contest's thread). The thread comes next: `set_thread`, or `abandon` if it cannot be made."""
        now = time.time() if now is None else now
        cid = secrets.token_hex(8)
        closes = now + req.minutes * 60
        fields = dict(id=cid, guild=guild, channel=channel, theme=req.theme, created_by=created_by,
                      opens_at=repr(now), closes_at=repr(closes), entries_limit=req.entries,
                      min_member_days=req.min_member_days, steps=steps, width=width, height=height, state="open",
                      entry_seq=0)
        flat = [str(x) for kv in fields.items() for x in kv]
        ok, got = await self._lua["create"](
            keys=[f"{self.p}chan:{channel}", f"{self.p}thread:{channel}", self._c(cid), self.schedule_key],
            args=[cid, repr(closes), *flat])
        return Created(bool(int(ok)), _s(got))

    async def set_thread(self, cid: str, thread: int) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self._c(cid), "thread", thread)
        pipe.set(f"{self.p}thread:{thread}", cid)
        await pipe.execute()

    async def abandon(self, cid: str) -> None:
        """Undo a `create` whose thread could not be made (nothing was entered yet)."""
        c = await self.get(cid)
        if c is None:
            return
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self._c(cid))
        pipe.zrem(self.schedule_key, cid)
        await pipe.execute()
        await self.redis.eval("if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end",
                              1, f"{self.p}chan:{c.channel}", cid)

    async def get(self, cid: str) -> Contest | None:
        h = await self.redis.hgetall(self._c(cid))
        if not h:
            return None
        h = {_s(k): _s(v) for k, v in h.items()}
        steps = tuple(sorted((k, v) for k, v in h.items() if k.startswith("step_")))
        return Contest(id=h["id"], guild=int(h["guild"]), channel=int(h["channel"]), thread=_opt_int(h.get("thread")),
                       theme=h["theme"], created_by=int(h["created_by"]), opens_at=float(h["opens_at"]),
                       closes_at=float(h["closes_at"]), entries_limit=int(h["entries_limit"]),
                       min_member_days=int(h["min_member_days"]), steps=int(h["steps"]), width=int(h["width"]),
                       height=int(h["height"]), state=h["state"], ended_early=h.get("ended_early") == "1",
                       entries=int(h.get("entry_seq", 0)), steps_done=steps)

    async def _lookup(self, key: str) -> Contest | None:
        cid = await self.redis.get(key)
        return None if cid is None else await self.get(_s(cid))

    async def for_channel(self, channel: int) -> Contest | None:
        """The contest running from this channel, or the one whose thread this is."""
        return await self._lookup(f"{self.p}chan:{channel}") or await self._lookup(f"{self.p}thread:{channel}")

    async def for_thread(self, thread: int) -> Contest | None:
        """The contest an /imagine in this thread enters (open or not: the caller checks)."""
        return await self._lookup(f"{self.p}thread:{thread}")

    async def end_now(self, cid: str, now: float | None = None) -> str:
        """/contest end: the close becomes due now. 'ending', 'closed' (already closing or closed) or 'missing'."""
        now = time.time() if now is None else now
        return _s(await self._lua["end_now"](keys=[self._c(cid), self.schedule_key], args=[cid, repr(now)]))

    # ------------------------------------------------------------------ entries

    async def admit_entry(self, cid: str, job_id: str, author: int, seed: int | None,
                          now: float | None = None) -> Admission:
        """Admit one /imagine run as an entry, before it is queued (atomic: the member's limit holds
        under any concurrency; the same job admitted twice is one entry)."""
        now = time.time() if now is None else now
        ok, status, n = await self._lua["admit"](keys=self._entry_keys(cid, job_id),
                                                  args=[job_id, author, "" if seed is None else seed, repr(now)])
        return Admission(bool(int(ok)), _s(status), int(n))

    async def withdraw_entry(self, cid: str, job_id: str) -> bool:
        """Free the slot of an entry that will never be posted (queue refused it, it failed or was
        cancelled), while the contest is open. True if it was withdrawn."""
        return bool(await self._lua["withdraw"](keys=self._entry_keys(cid, job_id), args=[job_id]))

    async def entry_posted(self, cid: str, job_id: str, message_id: int, flagged: bool = False) -> str:
        """The entry's picture is in the thread: it can be voted on and ranked. 'posted', or
        'closed' (it finished after the close: not ranked) or 'missing'."""
        c = self._c(cid)
        return _s(await self._lua["posted"](
            keys=[c, f"{c}:e:{job_id}", f"{self.p}msg:{message_id}"],
            args=[message_id, int(flagged), f"{cid} {job_id}"]))

    async def entry_for_message(self, message_id: int) -> tuple[str, str] | None:
        raw = await self.redis.get(f"{self.p}msg:{message_id}")
        if raw is None:
            return None
        cid, job_id = _s(raw).split(" ", 1)
        return cid, job_id

    async def entry_number(self, cid: str, job_id: str) -> int | None:
        """The entry number of an admitted job ("Entry #n"), or None when the job is no entry of it."""
        n = await self.redis.zscore(f"{self._c(cid)}:entries", job_id)
        return None if n is None else int(n)

    async def entry_count(self, cid: str, author: int) -> int:
        return int(_s(await self.redis.hget(f"{self._c(cid)}:authors", author) or 0))

    async def entries(self, cid: str) -> list[Entry]:
        """Every admitted entry in entry order, posted or not."""
        c = self._c(cid)
        jobs = [_s(j) for j in await self.redis.zrange(f"{c}:entries", 0, -1)]
        pipe = self.redis.pipeline(transaction=False)
        for j in jobs:
            pipe.hgetall(f"{c}:e:{j}")
        out = []
        for j, h in zip(jobs, await pipe.execute()):
            if not h:
                continue
            h = {_s(k): _s(v) for k, v in h.items()}
            out.append(Entry(contest_id=cid, job_id=j, number=int(h["number"]), author=int(h["author"]),
                             seed=_opt_int(h.get("seed")), entered_at=float(h["entered_at"]),
                             message_id=_opt_int(h.get("message_id")), up=int(h.get("up", 0)),
                             down=int(h.get("down", 0)), flagged=h.get("flagged") == "1"))
        return out

    async def ranking(self, cid: str) -> list[Entry]:
        """Posted entries, best first. Final once the contest is no longer open (votes stop then)."""
        return rank(await self.entries(cid))

    # ------------------------------------------------------------------ votes

    async def vote(self, message_id: int, voter: int, up: bool, add: bool, joined_at=None,
                   now: float | None = None) -> VoteOutcome:
        """One 👍/👎 reaction added or removed. `joined_at`: the voter's datetime of joining the
        server (None when unknown: then only contests without a membership age count it)."""
        now = time.time() if now is None else now
        found = await self.entry_for_message(message_id)
        if found is None:
            return VoteOutcome("not_entry", None, None, 0, 0)
        cid, job_id = found
        c = self._c(cid)
        joined = joined_timestamp(joined_at)
        status, n_up, n_down = await self._lua["vote"](
            keys=[c, f"{c}:e:{job_id}", f"{c}:v:{job_id}"],
            args=[voter, "up" if up else "down", "add" if add else "remove", repr(now),
                  "" if joined is None else repr(joined)])
        return VoteOutcome(_s(status), cid, job_id, int(n_up or 0), int(n_down or 0))

    # ------------------------------------------------------------------ the close

    async def due(self, now: float | None = None, limit: int = 100) -> list[str]:
        """Contests whose closing time has passed and whose close is not finished (claimed or not)."""
        now = time.time() if now is None else now
        return [_s(x) for x in await self.redis.zrangebyscore(self.schedule_key, "-inf", repr(now), start=0, num=limit)]

    async def next_close_at(self) -> float | None:
        got = await self.redis.zrange(self.schedule_key, 0, 0, withscores=True)
        return float(got[0][1]) if got else None

    async def claim_close(self, cid: str, owner: str, boot: str, lease_s: float, now: float | None = None) -> Claim:
        """Take the right to close a due contest. Votes stop at once (the state leaves 'open').

        `owner` is the bot process's stable name (one per process, kept across restarts) and `boot`
        is fresh each start: a process that restarts takes its own unfinished close back at once;
        another process takes it only after `lease_s` without progress."""
        now = time.time() if now is None else now
        token = f"{owner}:{boot}:{secrets.token_hex(4)}"
        status, got = await self._lua["claim"](keys=[self._c(cid), self.schedule_key],
                                               args=[cid, owner, boot, token, repr(now), lease_s])
        return Claim(_s(status), cid, _s(got))

    async def record_step(self, claim: Claim, step: str, value: str, lease_s: float, now: float | None = None) -> bool:
        """Remember that a step of the close is done (and extend the lease). False: the claim was
        lost to another process, which will do the remaining steps; stop."""
        now = time.time() if now is None else now
        return bool(await self._lua["step"](keys=[self._c(claim.contest_id)],
                                            args=[claim.token, step, value, repr(now), lease_s]))

    async def finish_close(self, claim: Claim, now: float | None = None, keep_s: int = KEEP_CLOSED_S) -> bool:
        """The close is done: the contest is closed, off the schedule, and its channel free again."""
        now = time.time() if now is None else now
        c = await self.get(claim.contest_id)
        if c is None:
            return False
        key = self._c(claim.contest_id)
        return bool(await self._lua["finish"](
            keys=[key, self.schedule_key, f"{self.p}chan:{c.channel}", f"{key}:entries", f"{key}:authors"],
            args=[claim.contest_id, claim.token, repr(now), keep_s, key, f"{self.p}msg:"]))
