"""`make demo` (`python -m worker.demo`): /classify, /find and /imagine through the real path.

Everything a Discord command would touch except Discord itself: an embedded Redis, a separate
`python -m worker` process with the shipped models, and the transport in between. The three
commands are the local CLI's (`python -m worker ... --redis URL`), so their progress bars and
outputs are the ones users see. Writes into --out (default demo-out/):

    images/            a small gallery drawn by the shapes world (fresh seed, never trained on)
    classify.json      the ranked labels for two of those images
    find.json          the best matches for a text query, and find.png, a contact sheet of them
    imagine.png/.gif   a VQGAN+CLIP painting and its timelapse
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw

from jobs.embedded import RedisServer
from jobs.local_worker import spawn_worker
from jobs.queue import queue_from_url
from jobs.settings import load_settings
from worker.cli import _WithProgress, build_parser
from worker.runner import RedisRunner
from worker.training.shapes import scene

# The gallery below is fixed by its seed: image 00 is a purple square, 09 and 23 are red stars.
LABELS = ("a purple square,a purple circle,a red star,a red triangle,a green circle,a blue square,"
          "a yellow star,an orange triangle")
CLASSIFY = (0, 9)
QUERY = "a red star"
PROMPT = "a red circle"


def draw_gallery(folder: Path, n: int = 24, seed: int = 20261127) -> list[Path]:
    """One-shape scenes from a seed the models never saw, so the demo shows generalisation."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        s = scene(seed, i, split="test", size=128, n_shapes=1)
        spec = s.shapes[0]
        path = folder / f"{i:02d}-{spec.colour}-{spec.shape}-on-{s.background}.png"
        s.image.save(path)
        paths.append(path)
    return paths


def run_cli(argv: list[str], url: str, settings) -> object:
    """Run `python -m worker <argv> --json --redis URL` in this process, with a progress bar."""
    args = build_parser(argv).parse_args([*argv, "--json", "--redis", url])
    runner = _WithProgress(RedisRunner(url, settings), args.command)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = args._main(args, runner)
    if rc:
        raise SystemExit(f"`python -m worker {argv[0]}` failed with exit code {rc}")
    return json.loads(out.getvalue())


def wait_for_worker(url: str, worker, log_path: Path, timeout_s: float = 600.0) -> float:
    """Until the worker has loaded its models and registered (so no job is submitted to an empty
    queue, and no "no live worker" warning shows); the seconds waited. Its death ends the demo."""
    async def online() -> bool:
        queue = queue_from_url(url, max_connections=1)
        try:
            return bool(await queue.workers())
        finally:
            await queue.redis.aclose()

    t0 = time.monotonic()
    print("waiting for the worker to load the models ...", file=sys.stderr)
    while not asyncio.run(online()):
        if worker.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise SystemExit(f"the worker exited with {worker.returncode} while starting:\n{tail}")
        if time.monotonic() - t0 > timeout_s:
            raise SystemExit(f"the worker did not come up within {timeout_s:.0f} s; see {log_path}")
        time.sleep(0.2)
    return time.monotonic() - t0


def contact_sheet(hits: list[dict], out: Path, thumb: int = 128) -> None:
    """The top hits side by side, each with its rank and score."""
    sheet = Image.new("RGB", (thumb * len(hits), thumb + 20), "white")
    draw = ImageDraw.Draw(sheet)
    for i, hit in enumerate(hits):
        img = Image.open(hit["path"]).convert("RGB").resize((thumb, thumb))
        sheet.paste(img, (i * thumb, 0))
        draw.text((i * thumb + 4, thumb + 4), f"#{i + 1}  {hit['score']:.3f}", fill="black")
    sheet.save(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m worker.demo", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("demo-out"))
    args = p.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    settings = load_settings()
    t0 = time.monotonic()
    paths = draw_gallery(out / "images")
    with tempfile.TemporaryDirectory(prefix="clipbot-demo-") as tmp, RedisServer(tmp) as redis:
        log = open(out / "worker.log", "w")
        worker = spawn_worker(redis.url, stdout=log, stderr=log)
        try:
            print(f"embedded Redis at {redis.url}; worker pid {worker.pid} (log: {out / 'worker.log'})", file=sys.stderr)
            waited = wait_for_worker(redis.url, worker, out / "worker.log")
            print(f"worker ready after {waited:.0f} s", file=sys.stderr)
            classified = run_cli(["classify", *(str(paths[i]) for i in CLASSIFY), "--labels", LABELS], redis.url, settings)
            (out / "classify.json").write_text(json.dumps(classified, indent=2))
            found = run_cli(["find", QUERY, "--images", str(out / "images"), "--top", "5"], redis.url, settings)
            (out / "find.json").write_text(json.dumps({"query": QUERY, "hits": found}, indent=2))
            contact_sheet(found, out / "find.png")
            painted = run_cli(["imagine", PROMPT, "--out", str(out / "imagine.png"),
                               "--gif", str(out / "imagine.gif"), "--seed", "7"], redis.url, settings)
            (out / "imagine.json").write_text(json.dumps(painted, indent=2))
        finally:
            worker.terminate()
            worker.wait(timeout=30)
            log.close()
    for item in classified:
        top = item["labels"][0]
        print(f"classify {Path(item['image']).name}: {top['label']} ({top['score']:.0%})")
    print(f"find {QUERY!r}: " + ", ".join(f"{Path(h['path']).name} ({h['score']:.3f})" for h in found[:3]))
    print(f"imagine {PROMPT!r}: {painted['out']} (seed {painted.get('seed')}, clip score {painted['clip_score']:.3f})")
    print(f"demo finished in {time.monotonic() - t0:.0f} s; outputs in {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
