"""Per-server image galleries for /find: embeddings and metadata in Redis, searched in memory.

Redis holds the truth, so every worker sees the same gallery. Keys (prefix P, default "clipbot:";
M = the CLIP weights fingerprint, because embeddings of different models are not comparable; G = guild id):

    P gallery:M:G:emb       hash  item_id -> embedding, float16 little-endian bytes (D * 2)
    P gallery:M:G:meta      hash  item_id -> JSON {message_link, author, caption, thumbnail_url, added}
    P gallery:M:G:version   int   bumped once per applied batch of changes
    P gallery:M:G:log       stream of changes, entry id "<version>-<n>", fields op=add|del, id=item_id
    P gallery:M:G:floor     int   first version still in the (trimmed) log; a worker below it reloads fully

Every batch (deletes then adds) is one Lua script: hashes, log and version change together.
Each worker keeps the rows of each guild in memory (float16 plus a bfloat16 copy for the first
pass of a search; see _GuildMatrix) and the version. Before a search it reads the version
(one round trip); if it moved, it reads only the log entries after its own version and fetches the
embeddings of the items they name. Only a worker that is new, or so far behind that the log was
trimmed past it, reads the whole hash (HSCAN). At 100,000 items of 512 dims that is 100 MB of
float16 in Redis and 200 MB per guild in a worker; past a memory budget (2 GiB by
default) the matrices of guilds not searched lately are dropped (LRU) and reloaded on demand.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import redis
import torch

from worker.api import JobError

log = logging.getLogger(__name__)

MAX_ITEMS = 100_000  # per guild
LOG_MAX = 200_000  # change-log entries kept per guild before the oldest are trimmed
SCAN_COUNT = 2000
FETCH_BATCH = 1000
SHORTLIST = 100  # rows the bfloat16 pass hands to the exact rescoring (at least 2 x top)
# |bf16 score - exact score| <= SCAN_ERR * |row| * |query|: rows and query rounded to bfloat16 (2u), the
# product accumulated in float32 and rounded to bfloat16 (u), u = 2**-9; doubled-up slack -> 4u.
SCAN_ERR = 2.0**-7

# KEYS: emb, meta, version, log, floor.  ARGV: log_max, max_items, n_del, del ids..., then (id, emb, meta)*.
# Returns {version, added, deleted}. Deletes first, so one batch can replace an item.
_APPLY = """
local emb, meta, version, log, floor = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local log_max, max_items, n_del = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local v = tonumber(redis.call('GET', version) or '0') + 1
local seq, deleted, added = 0, 0, 0
for i = 4, 3 + n_del do
  if redis.call('HDEL', emb, ARGV[i]) == 1 then
    redis.call('HDEL', meta, ARGV[i])
    redis.call('XADD', log, v .. '-' .. seq, 'op', 'del', 'id', ARGV[i])
    seq = seq + 1
    deleted = deleted + 1
  end
end
local first_add = 4 + n_del
local new = 0
for i = first_add, #ARGV, 3 do
  if redis.call('HEXISTS', emb, ARGV[i]) == 0 then new = new + 1 end
end
if new > 0 and redis.call('HLEN', emb) + new > max_items then
  if seq > 0 then
    -- keep the deletes of this batch consistent: they are already applied and logged
    redis.call('SET', version, v)
  end
  return {-1, redis.call('HLEN', emb), deleted}
end
for i = first_add, #ARGV, 3 do
  redis.call('HSET', emb, ARGV[i], ARGV[i + 1])
  redis.call('HSET', meta, ARGV[i], ARGV[i + 2])
  redis.call('XADD', log, v .. '-' .. seq, 'op', 'add', 'id', ARGV[i])
  seq = seq + 1
  added = added + 1
end
if seq == 0 then
  return {v - 1, 0, 0}
end
redis.call('SET', version, v)
if redis.call('XLEN', log) > log_max then
  redis.call('XTRIM', log, 'MAXLEN', log_max)
  local first = redis.call('XRANGE', log, '-', '+', 'COUNT', 1)
  if #first > 0 then
    local fv = string.match(first[1][1], '^(%d+)-')
    redis.call('SET', floor, fv)
  end
end
return {v, added, deleted}
"""


@dataclass(frozen=True)
class Hit:
    item_id: str
    score: float
    message_link: str | None = None
    author: int | None = None
    caption: str | None = None
    thumbnail_url: str | None = None

    def as_dict(self) -> dict:
        return dict(
            item_id=self.item_id, score=self.score, message_link=self.message_link, author=self.author,
            caption=self.caption, thumbnail_url=self.thumbnail_url,
        )


@dataclass
class NewItem:
    """One image to add: its id, its (unit) embedding and what /find shows for it."""

    item_id: str
    embedding: np.ndarray
    message_link: str | None = None
    author: int | None = None
    caption: str | None = None
    thumbnail_url: str | None = None

    def meta_json(self) -> str:
        return json.dumps(
            dict(message_link=self.message_link, author=self.author, caption=self.caption,
                 thumbnail_url=self.thumbnail_url, added=time.time()),
            ensure_ascii=False,
        )


class _GuildMatrix:
    """One guild's embeddings in memory, rows [0, n) in `ids` order, held twice:

    * `exact`: float16 (numpy), the values Redis stores; float32 products of these are the true scores.
    * `scan`: the same rows in bfloat16 (torch), read by search's first pass: half the bytes of the
      float32 values, and torch's AVX-512 BF16/AMX kernels, where numpy has no bfloat16.
    Together they take the memory of one float32 matrix. Both grow geometrically.
    """

    def __init__(self, dim: int):
        self.dim = dim
        self.version = -1  # -1: never loaded
        self.ids: list[str] = []
        self.row_of: dict[str, int] = {}
        self.lock = threading.Lock()
        self.clear()

    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def nbytes(self) -> int:
        return self.exact.nbytes + self.scan.numel() * self.scan.element_size()

    def clear(self) -> None:
        self.exact = np.empty((0, self.dim), dtype=np.float16)
        self.scan = torch.empty((0, self.dim), dtype=torch.bfloat16)
        self.max_norm = 0.0  # largest row norm ever stored (removals keep it: the error bound stays safe)
        self.ids, self.row_of = [], {}

    def reserve(self, rows: int) -> None:
        """Room for `rows` rows without regrowing."""
        if rows <= len(self.exact):
            return
        exact = np.empty((rows, self.dim), dtype=np.float16)
        exact[: self.n] = self.exact[: self.n]
        scan = torch.empty((rows, self.dim), dtype=torch.bfloat16)
        scan[: self.n] = self.scan[: self.n]
        self.exact, self.scan = exact, scan

    def _write(self, rows, vectors: np.ndarray) -> None:
        half = np.asarray(vectors).astype(np.float16)
        self.exact[rows] = half
        self.scan[torch.as_tensor(rows) if not isinstance(rows, slice) else rows] = torch.from_numpy(half).bfloat16()
        self.max_norm = max(self.max_norm, float(np.linalg.norm(half.astype(np.float32), axis=1).max()))

    def upsert(self, ids: list[str], vectors: np.ndarray) -> None:
        fresh, old_rows, old_at = [], [], []
        for i, item_id in enumerate(ids):
            row = self.row_of.get(item_id)
            if row is None:
                fresh.append(i)
            else:
                old_rows.append(row)
                old_at.append(i)
        if old_rows:
            self._write(np.array(old_rows), vectors[old_at])
        if not fresh:
            return
        need = self.n + len(fresh)
        if need > len(self.exact):  # grow geometrically so incremental adds are amortised O(1)
            self.reserve(max(need, 2 * len(self.exact), 64))
        self._write(slice(self.n, need), vectors[fresh])
        for i in fresh:
            self.row_of[ids[i]] = len(self.ids)
            self.ids.append(ids[i])

    def remove(self, item_id: str) -> None:
        row = self.row_of.pop(item_id, None)
        if row is None:
            return
        last = self.n - 1
        if row != last:  # swap-remove: move the last row into the hole
            moved = self.ids[last]
            self.exact[row] = self.exact[last]
            self.scan[row] = self.scan[last]
            self.ids[row] = moved
            self.row_of[moved] = row
        self.ids.pop()

    def best(self, q: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows of the `top` highest exact float32 scores q . row, best first, and those scores.

        Large galleries: a bfloat16 pass over `scan` picks a shortlist, which is rescored exactly from
        `exact`. The shortlist is checked, not trusted: every row outside it scores at most its
        bfloat16 score + the error bound; if that could beat the top-th exact score, every row that
        could is rescored too. So the result is the exact top (up to float32 rounding) on any data.
        """
        n = self.n
        k = min(top, n)
        short = max(SHORTLIST, 2 * k)
        if n <= short:
            cand = np.arange(n)
        else:
            approx = torch.mv(self.scan[:n], torch.from_numpy(q).bfloat16()).float()
            approx_short, cand_t = torch.topk(approx, short, sorted=False)
            cand = cand_t.numpy()
            exact = self.exact[cand].astype(np.float32) @ q
            kth = float(np.partition(exact, short - k)[short - k])  # the top-th highest exact score
            err = SCAN_ERR * self.max_norm * float(np.linalg.norm(q))
            if float(approx_short.min()) + err > kth:  # a row outside the shortlist might beat it: widen
                cand = torch.nonzero(approx >= kth - err).flatten().numpy()
            else:
                return self._order(cand, exact, k)
        return self._order(cand, self.exact[cand].astype(np.float32) @ q, k)

    @staticmethod
    def _order(cand: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        best = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        best = best[np.argsort(-scores[best], kind="stable")]
        return cand[best], scores[best]


class Gallery:
    """All guild galleries of one CLIP model (sync redis client: engines run in worker threads)."""

    def __init__(self, client: redis.Redis, *, model_tag: str, dim: int, prefix: str = "clipbot:",
                 max_items: int = MAX_ITEMS, log_max: int = LOG_MAX, max_guilds: int = 64,
                 max_memory_bytes: int = 2 << 30):
        if client.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError("Gallery needs a redis client with decode_responses=False (embeddings are bytes)")
        self.redis = client
        self.model_tag, self.dim, self.prefix = model_tag, dim, prefix
        self.max_items, self.log_max, self.max_guilds = max_items, log_max, max_guilds
        self.max_memory_bytes = max_memory_bytes  # matrices of guilds not searched lately are dropped past this
        self._apply = client.register_script(_APPLY)
        self._guilds: OrderedDict[int, _GuildMatrix] = OrderedDict()
        self._guilds_lock = threading.Lock()
        self.stats = {"full_loads": 0, "log_entries_read": 0, "rows_fetched": 0}

    # ------------------------------------------------------------------ keys

    def key(self, guild: int, what: str) -> str:
        return f"{self.prefix}gallery:{self.model_tag}:{guild}:{what}"

    def _keys(self, guild: int) -> list[str]:
        return [self.key(guild, k) for k in ("emb", "meta", "version", "log", "floor")]

    # ------------------------------------------------------------------ writes

    def update(self, guild: int, add: list[NewItem] = (), delete: list[str] = ()) -> tuple[int, int]:
        """Apply one batch atomically (deletes, then adds/replaces). Returns (added, deleted)."""
        args: list = [self.log_max, self.max_items, len(delete), *delete]
        for item in add:
            vec = np.asarray(item.embedding, dtype=np.float32).reshape(-1)
            if vec.shape != (self.dim,):
                raise ValueError(f"embedding of {item.item_id!r} has {vec.size} dims, the gallery {self.dim}")
            args += [item.item_id, vec.astype("<f2").tobytes(), item.meta_json()]
        version, added, deleted = self._apply(keys=self._keys(guild), args=args)
        if version == -1:
            raise JobError(
                f"This server's gallery is full ({added:,} images; the limit is {self.max_items:,}). "
                "Remove some images from it before adding more."
            )
        return int(added), int(deleted)

    def add(self, guild: int, items: list[NewItem]) -> int:
        return self.update(guild, add=items)[0]

    def delete(self, guild: int, item_ids: list[str]) -> int:
        return self.update(guild, delete=item_ids)[1]

    def existing(self, guild: int, item_ids: list[str]) -> set[str]:
        """Which of `item_ids` are in the gallery (one round trip)."""
        pipe = self.redis.pipeline(transaction=False)
        for item_id in item_ids:
            pipe.hexists(self.key(guild, "emb"), item_id)
        return {i for i, there in zip(item_ids, pipe.execute()) if there}

    def count(self, guild: int) -> int:
        return int(self.redis.hlen(self.key(guild, "emb")))

    def embedding(self, guild: int, item_id: str) -> np.ndarray | None:
        """An item's stored unit embedding (float32), None if it is not in the gallery."""
        raw = self.redis.hget(self.key(guild, "emb"), item_id)
        row = None if raw is None else self._decode(item_id, raw)
        return None if row is None else row.astype(np.float32)

    # ------------------------------------------------------------------ reads

    def _matrix(self, guild: int) -> _GuildMatrix:
        with self._guilds_lock:
            m = self._guilds.get(guild)
            if m is None:
                m = self._guilds[guild] = _GuildMatrix(self.dim)
            self._guilds.move_to_end(guild)
            return m

    def _evict(self) -> None:
        """Drop the least recently searched guilds' matrices past the budget (they reload on demand)."""
        with self._guilds_lock:
            while len(self._guilds) > 1 and (
                len(self._guilds) > self.max_guilds
                or sum(g.nbytes for g in self._guilds.values()) > self.max_memory_bytes
            ):
                self._guilds.popitem(last=False)

    def refresh(self, guild: int) -> _GuildMatrix:
        """Bring this worker's matrix for `guild` up to the Redis version, reading only what changed."""
        m = self._matrix(guild)
        with m.lock:
            for _ in range(5):
                remote, floor = self.redis.mget(self.key(guild, "version"), self.key(guild, "floor"))
                remote, floor = int(remote or 0), int(floor or 0)
                if m.version == remote:
                    return m
                if m.version < 0 or m.version < floor:
                    self._full_load(guild, m, remote)
                if self._catch_up(guild, m):
                    break
            else:
                raise RuntimeError(f"gallery of guild {guild} changes faster than it can be loaded")
        self._evict()
        return m

    def _full_load(self, guild: int, m: _GuildMatrix, version: int) -> None:
        """Read every row (HSCAN). Changes racing with the scan are re-applied from the log after it."""
        self.stats["full_loads"] += 1
        m.clear()
        ids, vecs = [], []
        for item_id, raw in self.redis.hscan_iter(self.key(guild, "emb"), count=SCAN_COUNT):
            vec = self._decode(item_id, raw)
            if vec is not None:
                ids.append(item_id.decode())
                vecs.append(vec)
            if len(ids) >= 10_000:
                m.upsert(ids, np.stack(vecs))
                ids, vecs = [], []
        if ids:
            m.upsert(ids, np.stack(vecs))
        m.version = version
        self.stats["rows_fetched"] += m.n

    def _catch_up(self, guild: int, m: _GuildMatrix) -> bool:
        """Apply log entries after m.version. False if the log was trimmed past us (reload needed)."""
        pipe = self.redis.pipeline(transaction=True)  # log and floor read together: a trim cannot slip between
        pipe.xrange(self.key(guild, "log"), min=f"{m.version + 1}-0", max="+")
        pipe.get(self.key(guild, "floor"))
        entries, floor_now = pipe.execute()
        if m.version < int(floor_now or 0):
            return False  # versions we still need were trimmed from the log: reload
        self.stats["log_entries_read"] += len(entries)
        if not entries:
            return True
        last_op: dict[str, bytes] = {}  # net effect: the last op per id wins
        newest = m.version
        for entry_id, fields in entries:
            newest = max(newest, int(entry_id.split(b"-")[0]))
            last_op[fields[b"id"].decode()] = fields[b"op"]
        added = [i for i, op in last_op.items() if op == b"add"]
        for i, op in last_op.items():
            if op == b"del":
                m.remove(i)
        for start in range(0, len(added), FETCH_BATCH):
            chunk = added[start: start + FETCH_BATCH]
            raws = self.redis.hmget(self.key(guild, "emb"), chunk)
            keep_ids, keep = [], []
            for item_id, raw in zip(chunk, raws):
                # None: deleted again after the log range we read; the next refresh applies that delete
                vec = None if raw is None else self._decode(item_id, raw)
                if vec is not None:
                    keep_ids.append(item_id)
                    keep.append(vec)
                else:
                    m.remove(item_id)
            if keep:
                m.upsert(keep_ids, np.stack(keep))
            self.stats["rows_fetched"] += len(keep)
        m.version = newest
        return True

    def _decode(self, item_id, raw: bytes) -> np.ndarray | None:
        if len(raw) != 2 * self.dim:
            log.warning("gallery row %r has %d bytes, expected %d: skipped", item_id, len(raw), 2 * self.dim)
            return None
        return np.frombuffer(raw, dtype="<f2")  # float16, as _GuildMatrix keeps it (np.stack copies)

    def search(self, guild: int, query: np.ndarray, top: int = 5) -> list[Hit]:
        """Top `top` items by cosine similarity to the unit vector `query`, best first."""
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
        if q.shape != (self.dim,):
            raise ValueError(f"query has {q.size} dims, the gallery {self.dim}")
        m = self.refresh(guild)
        with m.lock:
            if m.n == 0 or top <= 0:
                return []
            rows, scores = m.best(q, top)
            picked = [(m.ids[i], float(s)) for i, s in zip(rows, scores)]
        metas = self.redis.hmget(self.key(guild, "meta"), [i for i, _ in picked])
        hits = []
        for (item_id, score), raw in zip(picked, metas):
            if raw is None:  # deleted since the refresh
                continue
            meta = json.loads(raw)
            hits.append(Hit(item_id, score, meta.get("message_link"), meta.get("author"),
                            meta.get("caption"), meta.get("thumbnail_url")))
        return hits
