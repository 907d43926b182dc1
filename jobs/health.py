"""Container healthchecks: `python -m jobs.health [--file PATH --max-age S]`.

With --file: healthy while the process keeps touching that file (the worker does so after each
successful heartbeat, so a stuck loop or a lost Redis shows). Without: Redis answers PING.
Exit 0 healthy, 1 not (the reason on stderr).
"""
from __future__ import annotations

import argparse
import os
import sys
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jobs.health")
    ap.add_argument("--file", help="heartbeat file that must be fresh")
    ap.add_argument("--max-age", type=float, default=60.0, help="seconds (default 60)")
    args = ap.parse_args(argv)
    if args.file:
        try:
            age = time.time() - os.path.getmtime(args.file)
        except OSError as e:
            print(f"unhealthy: {e}", file=sys.stderr)
            return 1
        if age > args.max_age:
            print(f"unhealthy: heartbeat {age:.0f}s old (max {args.max_age:.0f}s)", file=sys.stderr)
            return 1
        return 0
    import redis

    from jobs.settings import load_settings

    url = load_settings().redis_url
    if not url:
        print("unhealthy: REDIS_URL is not set", file=sys.stderr)
        return 1
    try:
        redis.Redis.from_url(url, socket_timeout=3).ping()
    except Exception as e:  # noqa: BLE001
        print(f"unhealthy: redis: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
