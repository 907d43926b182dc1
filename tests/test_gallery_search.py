"""The in-memory search of worker.clip.gallery against brute force: the bfloat16 first pass plus exact
rescoring must return the exact float32 top-k (ties aside) on well-separated and on clustered data."""
from __future__ import annotations

import numpy as np
import pytest
import redis
import torch

from worker.clip.gallery import SCAN_ERR, SHORTLIST, Gallery, NewItem, _GuildMatrix


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(m: _GuildMatrix, q: np.ndarray) -> np.ndarray:
    """Exact float32 scores of every row, as the float32-matrix search computed them."""
    return m.exact[: m.n].astype(np.float32) @ q


def assert_exact_top(m: _GuildMatrix, q: np.ndarray, top: int, tie: float = 1e-6) -> float:
    """Asserts m.best equals the brute-force top; returns recall@top. Rows may differ only where the
    brute-force scores tie within `tie` (then the scores at each rank must still agree)."""
    truth = brute_force(m, q)
    want = np.argsort(-truth, kind="stable")[:top]
    rows, scores = m.best(q, top)
    assert len(rows) == min(top, m.n)
    np.testing.assert_allclose(scores, truth[rows], atol=1e-6)  # scores are the exact ones
    np.testing.assert_allclose(scores, truth[want], atol=tie)  # rank by rank, the best scores
    kth = truth[want[-1]]
    for r in set(rows.tolist()) ^ set(want.tolist()):  # a swapped row must tie with the top-th score
        assert abs(truth[r] - kth) <= tie
    return len(set(rows.tolist()) & set(want.tolist())) / len(want)


def filled(vectors: np.ndarray) -> _GuildMatrix:
    m = _GuildMatrix(vectors.shape[1])
    m.upsert([f"i{i}" for i in range(len(vectors))], vectors)
    return m


def test_well_separated_random_data_has_recall_1():
    rng = np.random.default_rng(1)
    m = filled(unit_rows(rng, 10_000, 512))
    recalls = [assert_exact_top(m, q, 10) for q in unit_rows(rng, 30, 512)]
    assert recalls == [1.0] * 30
    # a query that is a stored row finds itself first
    rows, scores = m.best(m.exact[123].astype(np.float32), 1)
    assert m.ids[rows[0]] == "i123" and scores[0] == pytest.approx(1.0, abs=2e-3)


def test_clustered_data_where_the_bf16_pass_alone_is_wrong():
    """Thousands of near-duplicates: bfloat16 cannot rank them, so the widened rescoring must."""
    rng = np.random.default_rng(2)
    dim = 512
    centre = unit_rows(rng, 1, dim)[0]
    near = centre + 2e-3 * rng.standard_normal((3000, dim)).astype(np.float32)
    data = np.concatenate([unit_rows(rng, 5000, dim), near / np.linalg.norm(near, axis=1, keepdims=True)])
    m = filled(data[rng.permutation(len(data))])
    bf16_wrong = 0
    # queries at the cluster and at angles to it (scores ~0.7, between bfloat16's grid points)
    for q in [centre + w * u for w in (0.01, 0.5, 1.0) for u in unit_rows(rng, 4, dim)]:
        q = (q / np.linalg.norm(q)).astype(np.float32)
        assert_exact_top(m, q, 10)  # near-duplicates: equal up to float32 rounding ties
        approx = torch.mv(m.scan[: m.n], torch.from_numpy(q).bfloat16()).float().numpy()
        bf16_top = set(np.argsort(-approx, kind="stable")[:10].tolist())
        bf16_wrong += bf16_top != set(np.argsort(-brute_force(m, q))[:10].tolist())
    assert bf16_wrong > 0  # the data really needs the exact pass (else this test proves nothing)


def test_exact_ties_and_top_larger_than_the_shortlist():
    rng = np.random.default_rng(3)
    base = unit_rows(rng, 2000, 64)
    data = np.concatenate([base, base[:50]])  # 50 exact duplicates: true ties
    m = filled(data)
    for q in [base[7], *unit_rows(rng, 5, 64)]:
        assert_exact_top(m, q.astype(np.float32), 10)
        assert_exact_top(m, q.astype(np.float32), 3 * SHORTLIST)
    assert_exact_top(filled(base[:SHORTLIST]), base[0], 10)  # small gallery: exact scan only


def test_bf16_pass_stays_within_its_error_bound():
    """Guards the bound the shortlist check relies on (float32 accumulation in torch's bf16 kernel):
    all-positive rows and a query along them make every product add up, where a bfloat16
    accumulator would stall far outside the bound."""
    rng = np.random.default_rng(4)
    dim = 512
    rows = np.abs(unit_rows(rng, 4000, dim)) + 1.0
    rows = np.concatenate([np.full((1, dim), 1.0), rows / np.linalg.norm(rows, axis=1, keepdims=True)])
    rows[0] /= np.linalg.norm(rows[0])
    m = filled(rows)
    for q in [rows[0], rows[5], *unit_rows(rng, 5, dim)]:
        q = q.astype(np.float32)
        approx = torch.mv(m.scan[: m.n], torch.from_numpy(q).bfloat16()).float().numpy()
        err = np.abs(approx - brute_force(m, q)).max()
        assert err <= SCAN_ERR * m.max_norm * np.linalg.norm(q)


def test_updates_and_removals_keep_both_copies_in_step(redis_url):
    """Through Redis: replace and delete rows (swap-remove moves rows in both copies), then compare."""
    rng = np.random.default_rng(5)
    dim = 32
    g = Gallery(redis.Redis.from_url(redis_url), model_tag="search", dim=dim)
    vecs = unit_rows(rng, 600, dim)
    g.add(7, [NewItem(f"m{i}", vecs[i]) for i in range(600)])
    g.search(7, vecs[0], top=10)  # loaded
    dels = [f"m{i}" for i in rng.choice(600, 150, replace=False)]
    new = unit_rows(rng, 100, dim)
    g.update(7, add=[NewItem(f"m{i}", new[i]) for i in range(100)] + [NewItem("x", new[0])], delete=dels)
    truth = {f"m{i}": vecs[i] for i in range(600)}
    for d in dels:
        truth.pop(d)
    truth.update({f"m{i}": new[i] for i in range(100)})
    truth["x"] = new[0]
    m = g._matrix(7)
    for q in [new[0], *unit_rows(rng, 10, dim)]:
        hits = g.search(7, q, top=10)
        assert g._matrix(7) is m and m.n == len(truth)
        want = {k: float(v.astype(np.float16).astype(np.float32) @ q) for k, v in truth.items()}
        best = sorted(want, key=want.get, reverse=True)[:10]
        assert [h.score for h in hits] == pytest.approx([want[b] for b in best], abs=1e-5)
        assert {h.item_id for h in hits} == set(best) or q is new[0]  # new[0] is stored twice: a tie
    # both copies hold the same rows after the swap-removes
    np.testing.assert_array_equal(m.scan[: m.n].float().numpy(),
                                  torch.from_numpy(m.exact[: m.n]).bfloat16().float().numpy())
