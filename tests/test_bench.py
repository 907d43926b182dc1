"""Smoke tests for bench/: every benchmark runs end to end in its tiny mode through the runner
(`python -m bench --tiny --only PATH`) and writes the results.json shape. No timing assertions:
speed is what the benchmarks report, not what the tests check."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# metrics each path must report (names the README table and the targets refer to)
EXPECTED = {
    "imagine": ["s_per_step", "k1_batched_jobs_per_hour", "k2_sequential_jobs_per_hour", "k2_speedup",
                "engine_vs_reference_speedup", "engine_clip_score", "reference_clip_score",
                "engine_final_loss", "reference_final_loss", "real_64_k1_s_per_step", "real_64_k1_peak_mem_mb"],
    "classify": ["shapes_b1_images_per_s", "shapes_b32_images_per_s", "vitb32_b1_images_per_s",
                 "vitb32_b32_images_per_s"],
    "find": ["top10_1k_p50_ms", "top10_10k_p99_ms", "worker_matrix_mb_per_100k", "redis_2k_full_load_s",
             "scan_fp32_1k_p50_ms", "proposal_bf16_1k_p50_ms", "proposal_bf16_10k_recall_at_10",
             "redis_2k_refresh_100_new_ms"],
    "queue": ["idle_pickup_p50_ms", "idle_pickup_p99_ms", "w1_jobs_per_s", "w4_jobs_per_s",
              "backlog50_pickup_gap_p50_ms", "sigkill_to_result_s"],
    "bot": ["ack_p50_ms", "ack_p99_ms", "burst1_not_queued", "burst2_not_queued", "edit_max_rate_per_s", "edit_limit_per_s", "edit_rate_within_limit"],
}


def run_bench(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "results.json"
    env = {**os.environ, "CLIPBOT_BENCH_THREADS": "1"}  # shape, not speed: don't fight other jobs for cores
    proc = subprocess.run([sys.executable, "-m", "bench", "--tiny", "--out", str(out), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    return proc, json.loads(out.read_text()) if out.exists() else {}


@pytest.mark.parametrize("path", list(EXPECTED))
def test_each_benchmark_runs_and_reports_numbers(tmp_path, path):
    proc, results = run_bench(tmp_path, "--only", path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "errors" not in results
    metrics = results[path]
    assert isinstance(metrics, dict) and metrics
    for name, value in metrics.items():
        assert isinstance(name, str)
        assert isinstance(value, (int, float)) and not isinstance(value, bool), (name, value)
    missing = [m for m in EXPECTED[path] if m not in metrics]
    assert not missing, f"{path} lacks {missing}; has {sorted(metrics)}"
    assert all(math.isfinite(metrics[m]) for m in EXPECTED[path]), metrics
    m = results["machine"]
    assert m["cores"] >= 1 and "load_1m_before" in m and m["cpu"]
    assert path in proc.stdout  # the table


def test_bad_path_is_refused(tmp_path):
    proc, _ = run_bench(tmp_path, "--only", "imagine,nope")
    assert proc.returncode != 0 and "nope" in proc.stderr


def test_numbers_are_consistent():
    """Cheap checks of the runner's helpers (percentiles feed every latency figure)."""
    from bench.__main__ import table
    from bench.common import latency_stats, pct

    assert pct([1, 2, 3, 4, 5], 50) == 3
    assert pct([0.0, 10.0], 99) == pytest.approx(9.9)
    assert math.isnan(pct([], 50))
    s = latency_stats([0.001, 0.002, 0.003])
    assert s["p50_ms"] == 2.0 and s["max_ms"] == 3.0
    assert "find" in table({"find": {"top10_p50_ms": 1.5}}, ["find"])
