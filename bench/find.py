"""find: top-10 latency of the gallery search over 10k, 100k and 1M embeddings of dimension 512.

The search runs through `Gallery.search` (worker/clip/gallery.py) against a real Redis: the
version check (one MGET), the in-memory search (a bfloat16 pass, then exact float32 rescoring of a
shortlist from the float16 rows), and the metadata fetch (one HMGET). Loading 1M rows into Redis would take minutes, so the matrix is put in place
through the gallery's own `_GuildMatrix.upsert` and marked current with the Redis version; the
Redis side is measured separately at 10k/100k: a cold full load (a new worker, HSCAN of the
float16 hash) and an incremental refresh (100 new items, read from the change log).
Memory: the worker's rows (float16 + bfloat16 copies) per 100k, and Redis's used_memory per 100k items.
"""
from __future__ import annotations

import time

import numpy as np

from bench.common import latency_stats, redis_server

DIM = 512


def unit_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def search_latency(gallery, guild: int, n: int, queries: int, rng) -> dict:
    m = gallery._matrix(guild)
    m.reserve(n)  # sized once: upsert then fills it without regrowing
    chunk = 100_000
    for start in range(0, n, chunk):
        k = min(chunk, n - start)
        m.upsert([f"item{start + i}" for i in range(k)], unit_rows(rng, k))
    m.version = int(gallery.redis.get(gallery.key(guild, "version")) or 0)
    qs = unit_rows(rng, queries + 3)
    for q in qs[:3]:  # warm-up
        gallery.search(guild, q, top=10)
    times = []
    for q in qs[3:]:
        t = time.perf_counter()
        gallery.search(guild, q, top=10)
        times.append(time.perf_counter() - t)
    out = latency_stats(times)
    out["matrix_mb"] = round(m.nbytes / 2**20, 1)
    with gallery._guilds_lock:
        gallery._guilds.pop(guild, None)  # free it before the next size
    return out


def proposed_search(n: int, queries: int, rng, top: int = 10, shortlist: int = 100) -> dict:
    """A proposal for gallery.py, timed alternately with today's scan on the same data: scan a
    bfloat16 copy of the matrix (half the memory traffic of float32; AVX-512 BF16/AMX kernels
    through torch), take a shortlist of `shortlist` rows, rescore those exactly from a float16
    copy (the precision Redis stores). Same memory as today's float32 matrix. Recall@10 is
    against the exact float32 ranking. Neither side includes the two Redis round trips."""
    import torch

    m32 = unit_rows(rng, n)
    m16 = torch.from_numpy(m32).half()
    mbf = m16.bfloat16()
    qs = unit_rows(rng, queries + 3)

    def today(q):  # Gallery.search's in-memory part
        scores = m32 @ q
        best = np.argpartition(-scores, top - 1)[:top]
        return best[np.argsort(-scores[best], kind="stable")]

    def proposal(q):
        qt = torch.from_numpy(q)
        cand = torch.topk(mbf @ qt.bfloat16(), shortlist).indices
        exact = m16[cand].float() @ qt
        return cand[torch.topk(exact, top).indices].numpy()

    t_today, t_prop, recall = [], [], []
    for i, q in enumerate(qs):
        t = time.perf_counter()
        truth = today(q)
        t1 = time.perf_counter()
        best = proposal(q)
        t2 = time.perf_counter()
        if i >= 3:
            t_today.append(t1 - t)
            t_prop.append(t2 - t1)
            recall.append(len(set(truth.tolist()) & set(best.tolist())) / top)
    tag = f"{n // 1000}k" if n < 1_000_000 else f"{n // 1_000_000}m"
    out = {f"scan_fp32_{tag}_{k}": v for k, v in latency_stats(t_today).items()}
    out.update({f"proposal_bf16_{tag}_{k}": v for k, v in latency_stats(t_prop).items()})
    out[f"proposal_bf16_{tag}_recall_at_10"] = round(float(np.mean(recall)), 4)
    return out


def redis_refresh(make_gallery, n: int, rng) -> dict:
    """Fill a guild with n items through Gallery.update, then time a new worker's full load and an
    up-to-date worker's incremental refresh after 100 more items."""
    from worker.clip.gallery import NewItem

    writer = make_gallery()
    guild = 1000 + n
    used0 = int(writer.redis.info("memory")["used_memory"])
    t = time.perf_counter()
    vecs = unit_rows(rng, n)
    for start in range(0, n, 1000):
        writer.add(guild, [NewItem(f"m{start + i}", vecs[start + i], message_link="https://discord.com/channels/1/2/3",
                                   author=42) for i in range(min(1000, n - start))])
    fill_s = time.perf_counter() - t
    used1 = int(writer.redis.info("memory")["used_memory"])
    reader = make_gallery()
    t = time.perf_counter()
    reader.refresh(guild)
    full_s = time.perf_counter() - t
    extra = unit_rows(rng, 100)
    writer.add(guild, [NewItem(f"new{i}", extra[i]) for i in range(100)])
    t = time.perf_counter()
    reader.refresh(guild)
    inc_s = time.perf_counter() - t
    t = time.perf_counter()
    reader.refresh(guild)
    noop_s = time.perf_counter() - t
    assert reader._matrix(guild).n == n + 100
    tag = f"{n // 1000}k"
    return {f"redis_{tag}_fill_s": round(fill_s, 2), f"redis_{tag}_full_load_s": round(full_s, 3),
            f"redis_{tag}_refresh_100_new_ms": round(inc_s * 1000, 2),
            f"redis_{tag}_refresh_unchanged_ms": round(noop_s * 1000, 3),
            f"redis_{tag}_used_mb_per_100k": round((used1 - used0) / 2**20 * 100_000 / n, 1)}


def run(quick: bool = False, tiny: bool = False) -> dict:
    import redis

    from worker.clip.gallery import Gallery

    rng = np.random.default_rng(0)
    sizes = [1000, 10_000] if tiny else [10_000, 100_000, 1_000_000]
    queries = 5 if tiny else (20 if quick else 200)
    redis_sizes = [2000] if tiny else ([10_000] if quick else [10_000, 100_000])
    out: dict[str, float] = {}
    with redis_server() as url:
        client = redis.Redis.from_url(url, decode_responses=False)
        make = lambda: Gallery(redis.Redis.from_url(url, decode_responses=False), model_tag="bench", dim=DIM,  # noqa: E731
                               max_items=2_000_000, max_memory_bytes=8 << 30)
        g = make()
        for n in sizes:
            tag = f"{n // 1000}k" if n < 1_000_000 else f"{n // 1_000_000}m"
            res = search_latency(g, 1, n, queries, rng)
            out.update({f"top10_{tag}_{k}": v for k, v in res.items()})
        largest = sizes[-1]
        out["worker_matrix_mb_per_100k"] = round(out[f"top10_{'1m' if largest >= 1_000_000 else f'{largest // 1000}k'}_matrix_mb"]
                                                 * 100_000 / largest, 1)
        for n in redis_sizes:
            out.update(redis_refresh(make, n, rng))
        for n in sizes[-2:] if not quick else sizes[-2:-1]:  # quick: the 100k proposal only
            out.update(proposed_search(n, queries, rng))
        client.close()
    return {"metrics": out, "notes": {"queries_per_size": queries, "dim": DIM,
                                      "search": "Gallery.search: MGET version, bf16 torch.mv + topk(100), exact float32 rescoring from float16, HMGET meta"}}


if __name__ == "__main__":
    from bench.common import main

    main(run)
