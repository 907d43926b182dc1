"""worker.clip.gallery on a real redis-server: round trips, a second worker catching up incrementally,
log trimming, limits, and a randomised check against a brute-force model of the gallery."""
from __future__ import annotations

import numpy as np
import pytest
import redis

from worker.api import JobError
from worker.clip.gallery import Gallery, NewItem

DIM = 16
GUILD = 1234


@pytest.fixture
def client(redis_url):
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def gallery(redis_url, **kw) -> Gallery:
    """A Gallery on its own connection, as a separate worker process would have."""
    return Gallery(redis.Redis.from_url(redis_url), model_tag=kw.pop("model_tag", "m1"), dim=DIM, **kw)


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def item(i: int, vec=None, **meta) -> NewItem:
    return NewItem(f"msg{i}:0", unit(i) if vec is None else vec, message_link=f"https://discord.com/channels/1/2/{i}",
                   author=100 + i, caption=meta.get("caption", f"image {i}"), thumbnail_url=f"https://cdn/{i}.png")


def test_add_search_delete_round_trip(redis_url, client):
    g = gallery(redis_url)
    assert g.search(GUILD, unit(0), top=5) == []  # empty gallery
    assert g.add(GUILD, [item(i) for i in range(10)] + [item(99, caption="un cœur ❤")]) == 11
    assert g.count(GUILD) == 11
    for i in (0, 3, 9, 99):
        hits = g.search(GUILD, unit(i), top=3)
        assert hits[0].item_id == f"msg{i}:0"
        assert hits[0].score == pytest.approx(1.0, abs=2e-3)  # float16 storage
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    top = g.search(GUILD, unit(99), top=1)[0]
    assert top.as_dict() == dict(item_id="msg99:0", score=top.score, message_link="https://discord.com/channels/1/2/99",
                                 author=199, caption="un cœur ❤", thumbnail_url="https://cdn/99.png")
    assert len(g.search(GUILD, unit(0), top=50)) == 11

    assert g.delete(GUILD, ["msg3:0", "not-there"]) == 1
    assert g.count(GUILD) == 10
    assert "msg3:0" not in {h.item_id for h in g.search(GUILD, unit(3), top=50)}
    # stored as float16 bytes + JSON, under the documented keys
    assert len(client.hget(g.key(GUILD, "emb"), "msg0:0")) == DIM * 2
    assert client.hget(g.key(GUILD, "meta"), "msg0:0").startswith(b"{")
    assert int(client.get(g.key(GUILD, "version"))) == 2


def test_replace_in_one_batch_and_upsert(redis_url):
    g = gallery(redis_url)
    g.add(GUILD, [item(1), item(2)])
    g.search(GUILD, unit(1))  # load
    added, deleted = g.update(GUILD, add=[item(1, vec=unit(50), caption="new")], delete=["msg1:0"])
    assert (added, deleted) == (1, 1)
    hit = g.search(GUILD, unit(50), top=1)[0]
    assert hit.item_id == "msg1:0" and hit.caption == "new" and hit.score == pytest.approx(1, abs=2e-3)
    g.add(GUILD, [item(2, vec=unit(60))])  # same id again: replaces, no duplicate row
    assert g.count(GUILD) == 2 and len(g.search(GUILD, unit(60), top=10)) == 2
    assert g.search(GUILD, unit(60), top=1)[0].item_id == "msg2:0"


def test_second_worker_sees_changes_incrementally(redis_url):
    a, b = gallery(redis_url), gallery(redis_url)
    a.add(GUILD, [item(i) for i in range(200)])
    assert b.search(GUILD, unit(7), top=1)[0].item_id == "msg7:0"
    assert b.stats == {"full_loads": 1, "log_entries_read": 0, "rows_fetched": 200}

    a.add(GUILD, [item(1000), item(1001)])
    a.delete(GUILD, ["msg7:0"])
    assert b.search(GUILD, unit(1001), top=1)[0].item_id == "msg1001:0"
    assert "msg7:0" not in {h.item_id for h in b.search(GUILD, unit(7), top=300)}
    # only the three changes were read: no second full load, two embeddings fetched
    assert b.stats == {"full_loads": 1, "log_entries_read": 3, "rows_fetched": 202}
    b.search(GUILD, unit(1))  # nothing changed: one version read, nothing else
    assert b.stats["log_entries_read"] == 3 and b.stats["rows_fetched"] == 202


def test_worker_behind_a_trimmed_log_reloads_fully(redis_url, client):
    a, b = gallery(redis_url, log_max=5), gallery(redis_url, log_max=5)
    a.add(GUILD, [item(i) for i in range(3)])
    b.search(GUILD, unit(0))
    for i in range(3, 12):  # 9 more changes: the log keeps 5, b's version fell out of it
        a.add(GUILD, [item(i)])
    a.delete(GUILD, ["msg0:0"])
    assert client.xlen(a.key(GUILD, "log")) == 5
    ids = {h.item_id for h in b.search(GUILD, unit(5), top=100)}
    assert ids == {f"msg{i}:0" for i in range(1, 12)}
    assert b.stats["full_loads"] == 2


def test_gallery_limit_is_a_clear_error_and_deletes_make_room(redis_url):
    g = gallery(redis_url, max_items=3)
    g.add(GUILD, [item(i) for i in range(3)])
    with pytest.raises(JobError, match="gallery is full"):
        g.add(GUILD, [item(3)])
    assert g.count(GUILD) == 3
    assert g.update(GUILD, add=[item(3)], delete=["msg0:0"]) == (1, 1)
    assert g.add(GUILD, [item(1, vec=unit(77))]) == 1  # replacing an existing id is not growth


def test_guilds_and_models_are_separate(redis_url):
    g, other_model = gallery(redis_url), gallery(redis_url, model_tag="m2")
    g.add(GUILD, [item(1)])
    assert g.search(GUILD + 1, unit(1)) == []
    assert other_model.search(GUILD, unit(1)) == []


def test_bad_inputs(redis_url):
    g = gallery(redis_url)
    with pytest.raises(ValueError, match="dims"):
        g.add(GUILD, [NewItem("x", np.ones(DIM + 1))])
    with pytest.raises(ValueError, match="dims"):
        g.search(GUILD, np.ones(3))
    with pytest.raises(ValueError, match="decode_responses"):
        Gallery(redis.Redis.from_url(redis_url, decode_responses=True), model_tag="m", dim=DIM)


def test_random_changes_from_two_writers_match_a_brute_force_model(redis_url):
    """Readers that refresh at random moments must always equal the truth (exercises swap-remove)."""
    rng = np.random.default_rng(0)
    writers = [gallery(redis_url, log_max=40), gallery(redis_url, log_max=40)]
    readers = [gallery(redis_url, log_max=40), gallery(redis_url, log_max=40, max_guilds=1)]
    truth: dict[str, np.ndarray] = {}
    for step in range(120):
        w = writers[rng.integers(2)]
        adds = [int(x) for x in rng.integers(0, 60, rng.integers(0, 4))]
        dels = [f"msg{int(x)}:0" for x in rng.integers(0, 60, rng.integers(0, 3))]
        new = [item(i, vec=unit(1000 * step + i)) for i in adds]
        w.update(GUILD, add=new, delete=dels)
        for d in dels:
            truth.pop(d, None)
        for it in new:
            truth[it.item_id] = it.embedding
        if step % 7 == 0:
            readers[1].search(GUILD + 1, unit(0))  # evicts guild GUILD from reader 1's one-slot LRU
        r = readers[rng.integers(2)]
        if rng.random() < 0.5 and truth:
            q = unit(int(rng.integers(1 << 30)))
            hits = r.search(GUILD, q, top=100)
            assert {h.item_id for h in hits} == set(truth)
            want = {k: float(np.float16(v).astype(np.float32) @ q) for k, v in truth.items()}
            for h in hits:
                assert h.score == pytest.approx(want[h.item_id], abs=1e-4)
            assert [h.item_id for h in hits[:3]] == sorted(want, key=want.get, reverse=True)[:3]


def test_memory_budget_drops_least_recently_searched_guilds(redis_url):
    g = gallery(redis_url, max_memory_bytes=64 * DIM * 4)  # room for one 64-row matrix
    g.add(1, [item(i) for i in range(10)])
    g.add(2, [item(i) for i in range(10, 20)])
    assert g.search(1, unit(3), top=1)[0].item_id == "msg3:0"
    assert g.search(2, unit(13), top=1)[0].item_id == "msg13:0"  # evicts guild 1
    assert g.stats["full_loads"] == 2
    assert g.search(1, unit(4), top=1)[0].item_id == "msg4:0"  # reloaded, still right
    assert g.stats["full_loads"] == 3
