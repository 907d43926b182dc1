"""`python -m worker models list [--json]` and `python -m worker models fetch NAME... [--dir DIR]`.

`fetch --configured` fetches the catalogue names that CLIP_MODEL and VQGAN_MODEL hold (the
docker-compose `models` service); `fetch --recommended` the pair the imagine profiles were
taken from (`make models-real`).
"""
from __future__ import annotations

import argparse
import json
import sys

from worker.models import catalogue
from worker.models.store import ModelError, fetch_model, status


def add_models_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="models_command", metavar="{list,fetch}", required=True)
    ls = sub.add_parser("list", help="the catalogue: sizes, sources, what is installed")
    fetch = sub.add_parser("fetch", help="download catalogue models (resumable, verified)")
    for sp in (ls, fetch):
        sp.add_argument("--dir", metavar="DIR", default=None, help="models folder (default CLIPBOT_MODELS_DIR, models)")
        sp.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON on stdout")
    fetch.add_argument("names", nargs="*", metavar="NAME", help=f"catalogue names: {', '.join(catalogue.CATALOGUE)}")
    fetch.add_argument("--configured", action="store_true", help="also the catalogue names in CLIP_MODEL / VQGAN_MODEL")
    fetch.add_argument("--recommended", action="store_true",
                       help=f"also the recommended pair ({' + '.join(catalogue.RECOMMENDED)})")
    fetch.add_argument("--quiet", action="store_true", help="no progress bars")


def models_main(args, settings) -> int:
    models_dir = args.dir or settings.models_dir
    if args.models_command == "list":
        rows = [status(spec, models_dir, settings.model_mirror) for spec in catalogue.CATALOGUE.values()]
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            _print_table(rows, models_dir)
        return 0
    names = list(dict.fromkeys(_wanted(args, settings)))
    if not names and args.configured:  # the compose service with the shipped models: nothing to do
        print("nothing to fetch: CLIP_MODEL and VQGAN_MODEL name no catalogue model", file=sys.stderr)
        return 0
    if not names:
        print("error: name the models to fetch (see `python -m worker models list`), or pass "
              "--configured / --recommended", file=sys.stderr)
        return 2
    unknown = [n for n in names if n not in catalogue.CATALOGUE]
    if unknown:
        print(f"error: {catalogue.UnknownModel(unknown[0])}", file=sys.stderr)
        return 2
    done = []
    for name in names:
        try:
            done.append(fetch_model(catalogue.get(name), models_dir, settings.model_mirror,
                                    progress=not (args.quiet or args.json)))
        except ModelError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        except OSError as e:  # the models folder itself: not writable, disk full
            print(f"error: cannot write {models_dir}/{name}: {e}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(f"\ninterrupted: run the same command again to resume {name}", file=sys.stderr)
            return 130
        if not args.json:
            print(f"{name}: installed in {done[-1]['path']} (sha256 {done[-1]['sha256']})", file=sys.stderr)
    if args.json:
        print(json.dumps(done, indent=2))
    return 0


def _wanted(args, settings) -> list[str]:
    names = list(args.names)
    if args.recommended:
        names += catalogue.RECOMMENDED
    if args.configured:
        names += [n for n in (settings.clip_model, settings.vqgan_model) if n in catalogue.CATALOGUE]
    return names


def _print_table(rows: list[dict], models_dir) -> None:
    print(f"models folder: {models_dir}")
    print(f"{'name':<26} {'kind':<6} {'size':>8}  {'installed':<9}  sha256")
    for r in rows:
        print(f"{r['name']:<26} {r['kind']:<6} {r['size'] / 2**20:>6.0f} M  {'yes' if r['installed'] else 'no':<9}  "
              f"{r['sha256']}")
    print("fetch: python -m worker models fetch NAME... ; sources: python -m worker models list --json")
