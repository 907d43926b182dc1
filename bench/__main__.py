"""Run the benchmarks: `python -m bench [--quick] [--only imagine,find] [--threads N]`.

Each path runs in its own subprocess (`python -m bench.<path> --json`), so one path's memory high
water mark, torch threads or crash does not touch the next. Results are merged into
bench/results.json: one object per path mapping metric names to numbers, plus "machine" (CPU,
cores, load average before and after) and "notes" (which models, which settings). A table is
printed at the end. The exit status is non-zero if any path failed (its error is in "errors").
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.common import machine

PATHS = ("imagine", "classify", "find", "queue", "bot")
RESULTS = Path(__file__).resolve().parent / "results.json"


def run_path(path: str, quick: bool, threads: int | None, timeout_s: float, tiny: bool = False) -> dict:
    cmd = [sys.executable, "-m", f"bench.{path}", "--json"] + (["--quick"] if quick else []) + (["--tiny"] if tiny else [])
    env = dict(os.environ)
    threads = threads or int(env.get("CLIPBOT_BENCH_THREADS") or 0)
    if threads:  # torch's pool (set in the child) and numpy's BLAS pool (read at import)
        env["CLIPBOT_BENCH_THREADS"] = str(threads)
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
    proc = subprocess.run(cmd, cwd=RESULTS.parent.parent, env=env, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"bench.{path} exited {proc.returncode}:\n{tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(results: dict, paths) -> str:
    rows = []
    for path in paths:
        for name, value in results.get(path, {}).items():
            rows.append((path, name, f"{value:,.4g}" if isinstance(value, float) else f"{value:,}"))
    w0 = max([len(r[0]) for r in rows] + [4])
    w1 = max([len(r[1]) for r in rows] + [6])
    lines = [f"{'path':<{w0}}  {'metric':<{w1}}  value", f"{'-' * w0}  {'-' * w1}  -----"]
    lines += [f"{a:<{w0}}  {b:<{w1}}  {c}" for a, b, c in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes and few repeats (a few minutes)")
    p.add_argument("--tiny", action="store_true", help="smallest sizes: checks that everything runs (tests)")
    p.add_argument("--only", help=f"comma-separated subset of {','.join(PATHS)}")
    p.add_argument("--threads", type=int, help="torch and BLAS threads in every path (default: the libraries'); "
                                               "use 1 on a busy machine, see bench/README.md")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--timeout", type=float, default=3600, help="seconds per path")
    a = p.parse_args(argv)
    paths = [s.strip() for s in a.only.split(",")] if a.only else list(PATHS)
    unknown = set(paths) - set(PATHS)
    if unknown:
        p.error(f"unknown path(s) {sorted(unknown)}; choose from {', '.join(PATHS)}")
    try:
        results = json.loads(a.out.read_text()) if a.out.exists() else {}
    except ValueError:
        results = {}
    results.setdefault("notes", {})
    errors = {}
    before = machine()
    t0 = time.time()
    for path in paths:
        print(f"bench {path}{' (quick)' if a.quick else ''} ...", file=sys.stderr, flush=True)
        t = time.time()
        load = os.getloadavg()[0]
        try:
            res = run_path(path, a.quick, a.threads, a.timeout, a.tiny)
        except Exception as e:  # noqa: BLE001 - one path failing must not lose the others
            errors[path] = str(e)
            print(f"  FAILED: {e}", file=sys.stderr)
            continue
        results[path] = res["metrics"]
        results["notes"][path] = {**res.get("notes", {}), "quick": a.quick, "tiny": a.tiny,
                                  "threads": a.threads or int(os.environ.get("CLIPBOT_BENCH_THREADS") or 0),
                                  "load_1m_at_start": round(load, 2), "seconds": round(time.time() - t, 1)}
        print(f"  done in {time.time() - t:.0f}s", file=sys.stderr, flush=True)
    after = machine()
    results["machine"] = {**{k: v for k, v in before.items() if not k.startswith("load")},
                          **{f"{k}_before": v for k, v in before.items() if k.startswith("load")},
                          **{f"{k}_after": v for k, v in after.items() if k.startswith("load")},
                          "threads_option": a.threads or 0, "torch_threads": a.threads or before["torch_threads"], "quick": a.quick,
                          "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "seconds": round(time.time() - t0, 1)}
    if errors:
        results["errors"] = errors
    else:
        results.pop("errors", None)
    a.out.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    print(table(results, [p for p in PATHS if p in results]))
    m = results["machine"]
    print(f"\n{m['cpu']}, {m['cores']} cores, load {m['load_1m_before']} -> {m['load_1m_after']} (1 min); "
          f"written to {a.out}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
