"""`python -m worker classify ...` and `python -m worker find ...` (wired in by worker/cli.py).

classify: one ClassifyJob per image through the runner, so it runs in-process or, with
`--redis`, on the workers behind that Redis, with the same code.

find: two modes, because a folder on this machine is not a Discord server's gallery.
* Local (default): this process loads the CLIP, embeds the folder and searches it in memory.
  Embeddings are cached on disk in SQLite keyed by (model weights fingerprint, sha256 of the file
  content), so a second run over the same folder embeds nothing new and renames cost nothing.
* `--redis URL`: the folder becomes a gallery on that Redis (its id is derived from this host and
  the folder's absolute path, negative so it never meets a Discord server id), kept in sync with
  IndexJobs (new files added, vanished ones deleted), then searched with a FindJob. Files already
  in the gallery are sent without pixels and the worker leaves them as they are, so a second run
  uploads and embeds nothing new either. A small manifest in the cache dir remembers what was sent.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jobs.schemas import (
    MAX_JOB_LABELS,
    MAX_LABELS,
    MAX_QUERY_CHARS,
    MAX_TOP,
    ClassifyJob,
    FindJob,
    GalleryItem,
    IndexJob,
)
from jobs.validation.images import DEFAULT_MAX_BYTES, ImageRejected, decode_image, describe_content, sniff_image_type
from jobs.validation.labels import validate_labels
from worker.api import JobError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".avif", ".svg"}
EMBED_BATCH = 32
INDEX_BATCH = 100  # IndexJob.add limit
TABLE_ROWS = 10  # best labels the table shows when there are more than a Discord command's worth


def _note(msg: str) -> None:
    print(msg, file=sys.stderr)


# ----------------------------------------------------------------------------- classify


def add_classify_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files to classify")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--labels", help='comma-separated labels, e.g. "red circle,blue square,star"')
    which.add_argument("--labels-file", metavar="FILE",
                       help=f"one label per line, up to {MAX_JOB_LABELS:,} (blank lines and # comments ignored)")


def read_labels_file(path: Path) -> list[str]:
    """Labels of a file, one per line; blank lines and lines starting with '#' are skipped.
    Commas stay inside a label ("tench, Tinca tinca" is one ImageNet class)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise JobError(f"{path}: no such labels file") from None
    except UnicodeDecodeError:
        raise JobError(f"{path} is not a UTF-8 text file with one label per line") from None
    except OSError as e:
        raise JobError(f"Cannot read the labels file {path}: {e.strerror or e}") from None
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def classify_main(args, runner) -> int:
    if args.labels_file:
        labels = validate_labels(read_labels_file(Path(args.labels_file)), max_labels=MAX_JOB_LABELS)
    else:
        labels = validate_labels(args.labels, max_labels=MAX_JOB_LABELS)
    results, failed = [], 0
    for path in args.images:
        try:
            data = _read_image_file(Path(path))
            outcome = runner.run(ClassifyJob(image=runner.put_blob(data), labels=labels))
            results.append({"image": path, "labels": outcome.data["labels"]})
        except JobError as e:  # one bad file does not lose the others' results
            failed += 1
            results.append({"image": path, "labels": [], "error": str(e)})
            _note(f"error: {path}: {e}")
    if args.json:
        print(json.dumps(results))
    else:
        for r in results:
            if r.get("error"):
                continue
            print(r["image"])
            shown = r["labels"][:TABLE_ROWS] if len(r["labels"]) > MAX_LABELS else r["labels"]
            width = max(len(x["label"]) for x in shown)
            for x in shown:
                bar = "█" * round(x["score"] * 30)
                print(f"  {x['label']:<{width}}  {x['score']:.3f}  {bar}")
            if len(shown) < len(r["labels"]):
                print(f"  ... {len(r['labels']) - len(shown):,} more labels (all of them with --json)")
    return 1 if failed else 0


def _read_image_file(path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise JobError(f"{path} is too large ({size / 2**20:.1f} MB); the limit is {max_bytes / 2**20:.0f} MB.")
        return path.read_bytes()
    except FileNotFoundError:
        raise JobError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise JobError(f"{path} is a folder, not an image file") from None
    except PermissionError:
        raise JobError(f"{path}: permission denied") from None


# ----------------------------------------------------------------------------- find: the folder


def add_find_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("query", nargs="?", default=None,
                   help="what to look for, e.g. \"a red circle on a blue background\" (optional with --image)")
    p.add_argument("--image", metavar="PATH", default=None,
                   help="find images similar to this one (with a QUERY too: both count equally)")
    p.add_argument("--images", required=True, metavar="DIR", help="folder of images to search (recursively)")
    p.add_argument("--top", type=int, default=5, metavar="K", help="how many results (default 5)")
    p.add_argument("--cache-dir", metavar="DIR", default=None,
                   help="where embeddings are cached (default $XDG_CACHE_HOME/clipbot or ~/.cache/clipbot)")


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "clipbot"


@dataclass
class FolderFile:
    rel: str  # path relative to the folder, with "/" separators
    sha256: str
    data: bytes | None = None  # kept only until embedded


@dataclass
class FolderScan:
    files: list[FolderFile] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (rel path, reason)
    ignored: int = 0  # files that are not images at all (README.txt...)


def scan_folder(folder: Path, max_bytes: int = DEFAULT_MAX_BYTES, keep_data: bool = False) -> FolderScan:
    """Every image file under `folder` (hidden files and folders skipped), hashed by content."""
    if not folder.is_dir():
        raise JobError(f"{folder} is not a folder")
    scan = FolderScan()
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        rel_s = rel.as_posix()
        looks_like_image = path.suffix.lower() in IMAGE_SUFFIXES
        try:
            if path.stat().st_size > max_bytes:
                scan.skipped.append((rel_s, f"too large ({path.stat().st_size / 2**20:.1f} MB)"))
                continue
            data = path.read_bytes()
        except OSError as e:
            scan.skipped.append((rel_s, f"cannot be read ({e.strerror or e})"))
            continue
        if sniff_image_type(data) is None:
            if looks_like_image:
                scan.skipped.append((rel_s, f"not a supported image: it looks like {describe_content(data)}"))
            else:
                scan.ignored += 1
            continue
        scan.files.append(FolderFile(rel_s, hashlib.sha256(data).hexdigest(), data if keep_data else None))
    return scan


class EmbeddingCache:
    """sha256 of file content -> embedding, per model, in one SQLite file (no pickle anywhere)."""

    def __init__(self, cache_dir: Path, model_key: str, dim: int):
        cache_dir.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(cache_dir / "embeddings.sqlite")
        self.db.execute("CREATE TABLE IF NOT EXISTS emb (model TEXT, sha256 TEXT, vec BLOB, PRIMARY KEY (model, sha256))")
        self.model_key, self.dim = model_key, dim

    def get_many(self, hashes: list[str]) -> dict[str, np.ndarray]:
        found = {}
        for i in range(0, len(hashes), 500):
            chunk = hashes[i: i + 500]
            rows = self.db.execute(
                f"SELECT sha256, vec FROM emb WHERE model = ? AND sha256 IN ({','.join('?' * len(chunk))})",
                [self.model_key, *chunk],
            )
            for sha, vec in rows:
                if len(vec) == 4 * self.dim:
                    found[sha] = np.frombuffer(vec, dtype="<f4")
        return found

    def put_many(self, items: dict[str, np.ndarray]) -> None:
        self.db.executemany(
            "INSERT OR REPLACE INTO emb VALUES (?, ?, ?)",
            [(self.model_key, sha, np.asarray(v, dtype="<f4").tobytes()) for sha, v in items.items()],
        )
        self.db.commit()

    def close(self) -> None:
        self.db.close()


@dataclass
class FolderIndex:
    paths: list[str]
    embeddings: np.ndarray  # [N, D] float32, unit rows
    embedded: int  # computed in this run
    cached: int  # read from the cache
    skipped: list[tuple[str, str]]


def index_folder(clip, folder: Path, cache: EmbeddingCache, *, show_progress: bool = False) -> FolderIndex:
    scan = scan_folder(folder)
    found = cache.get_many(sorted({f.sha256 for f in scan.files}))
    missing: dict[str, str] = {}  # sha -> rel of the first file with that content
    for f in scan.files:
        if f.sha256 not in found:
            missing.setdefault(f.sha256, f.rel)
    skipped = list(scan.skipped)
    bad: set[str] = set()
    todo = list(missing.items())
    bar = None
    if show_progress and len(todo) >= EMBED_BATCH:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="embedding", unit="img", file=sys.stderr, leave=False)
    embedded = 0
    for start in range(0, len(todo), EMBED_BATCH):
        shas, images = [], []
        for sha, rel in todo[start: start + EMBED_BATCH]:
            try:
                images.append(decode_image((folder / rel).read_bytes(), min_side=2 * clip.image_size))
                shas.append(sha)
            except (ImageRejected, OSError) as e:
                bad.add(sha)
                skipped.append((rel, str(e)))
        if images:
            vectors = clip.embed_images(images).numpy()
            fresh = dict(zip(shas, vectors))
            cache.put_many(fresh)
            found.update(fresh)
            embedded += len(fresh)
        if bar is not None:
            bar.update(len(todo[start: start + EMBED_BATCH]))
    if bar is not None:
        bar.close()
    kept = [f for f in scan.files if f.sha256 in found]
    for f in scan.files:  # duplicates of a bad file are bad too
        if f.sha256 in bad and f.rel != missing.get(f.sha256):
            skipped.append((f.rel, "same content as a file that could not be read"))
    matrix = np.stack([found[f.sha256] for f in kept]) if kept else np.empty((0, clip.dim), np.float32)
    return FolderIndex([f.rel for f in kept], matrix.astype(np.float32), embedded,
                       len({f.sha256 for f in kept}) - embedded, skipped)


def search_matrix(matrix: np.ndarray, query: np.ndarray, top: int) -> list[tuple[int, float]]:
    """(row, cosine) of the `top` best rows, best first."""
    if len(matrix) == 0 or top <= 0:
        return []
    scores = matrix @ np.asarray(query, dtype=np.float32)
    k = min(top, len(scores))
    best = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    best = best[np.argsort(-scores[best], kind="stable")]
    return [(int(i), float(scores[i])) for i in best]


# ----------------------------------------------------------------------------- find: main


def find_main(args, runner) -> int:
    if args.top < 1:
        raise JobError("--top must be at least 1")
    query = args.query
    if query is not None:
        query = query.strip()
        if not query:
            raise JobError("The search text is empty: describe the image you are looking for.")
    image = None
    if args.image is not None:
        data = _read_image_file(Path(args.image))
        try:
            decode_image(data)  # refuse a bad file before any model loads or upload
        except ImageRejected as e:
            raise JobError(f"--image {args.image}: {e}") from None
        image = data
    if query is None and image is None:
        raise JobError("Give a text to search for, --image PATH to find similar images, or both.")
    folder = Path(args.images)
    cache_dir = Path(args.cache_dir) if getattr(args, "cache_dir", None) else default_cache_dir()
    if getattr(args, "redis", None):
        hits = _find_via_queue(args, runner, folder, query, image, cache_dir)
    else:
        hits = _find_locally(args, folder, query, image, cache_dir)
    if args.json:
        print(json.dumps(hits))
    elif not hits:
        print("no images found")
    else:
        print(f"{'#':>3}  {'SCORE':>6}  PATH")
        for i, h in enumerate(hits, 1):
            print(f"{i:>3}  {h['score']:6.3f}  {h['path']}")
    return 0


def _local_clip(args):
    from jobs.settings import load_settings
    from worker.clip.model import get_clip

    settings = load_settings()
    name = getattr(args, "clip_model", None) or settings.clip_model
    return get_clip(name, None if settings.device == "auto" else settings.device)


def _find_locally(args, folder: Path, query: str | None, image: bytes | None, cache_dir: Path) -> list[dict]:
    from worker.clip.query import query_vector

    clip = _local_clip(args)
    cache = EmbeddingCache(cache_dir, f"{clip.fingerprint}:{clip.dim}", clip.dim)
    try:
        t0 = time.perf_counter()
        idx = index_folder(clip, folder, cache, show_progress=not args.json)
    finally:
        cache.close()
    for rel, reason in idx.skipped:
        _note(f"skipped {folder / rel}: {reason}")
    _note(f"find: {len(idx.paths)} images in {folder} ({idx.embedded} embedded, {idx.cached} cached, "
          f"{len(idx.skipped)} skipped) in {time.perf_counter() - t0:.1f}s")
    if not idx.paths:
        raise JobError(f"No images found in {folder}.")
    q = query_vector(clip, query, None if image is None else decode_image(image, min_side=2 * clip.image_size))
    return [{"path": str(folder / idx.paths[i]), "score": s} for i, s in search_matrix(idx.embeddings, q, args.top)]


def folder_gallery_id(folder: Path) -> int:
    """A gallery id for a local folder: negative, so it never equals a Discord server id."""
    digest = hashlib.sha256(f"{socket.gethostname()}:{folder.resolve()}".encode()).hexdigest()
    return -int(digest[:15], 16) - 1


def _find_via_queue(args, runner, folder: Path, query: str | None, image: bytes | None,
                    cache_dir: Path) -> list[dict]:
    if args.top > MAX_TOP:
        raise JobError(f"With --redis, --top can be at most {MAX_TOP}.")
    if query is not None and len(query) > MAX_QUERY_CHARS:
        raise JobError(f"With --redis, the query can be at most {MAX_QUERY_CHARS} characters.")
    guild = folder_gallery_id(folder)
    scan = scan_folder(folder)
    for rel, reason in scan.skipped:
        _note(f"skipped {folder / rel}: {reason}")
    # id = hash of (relative path, content): a renamed or edited file is a new item, the old one is deleted
    ids = {hashlib.sha256(f"{f.rel}\0{f.sha256}".encode()).hexdigest()[:48]: f for f in scan.files}
    manifest_path = cache_dir / "galleries" / f"{hashlib.sha256(f'{args.redis}|{guild}'.encode()).hexdigest()[:24]}.json"
    try:
        manifest = json.loads(manifest_path.read_text())
        sent_before, known_bad = set(manifest["ids"]), dict(manifest.get("rejected", {}))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        sent_before, known_bad = set(), {}
    # ids hash the content, so a file the workers refused before is refused again: do not re-send it
    known_bad = {i: why for i, why in known_bad.items() if i in ids}
    for i, why in known_bad.items():
        _note(f"skipped {folder / ids[i].rel}: {why}")

    totals = {"added": 0, "unchanged": 0, "deleted": 0}
    rejected: dict[str, str] = dict(known_bad)

    def index(add: list[GalleryItem], delete: list[str]) -> dict:
        try:
            out = runner.run(IndexJob(guild=guild, add=add, delete=delete)).data
        except JobError as e:
            if len(add) != 1 or delete:
                raise
            return {"rejected": [{"item_id": add[0].item_id, "reason": str(e)}]}  # a one-image job fails instead
        for k in ("added", "unchanged", "deleted"):
            totals[k] += out.get(k, 0)
        return out

    def item(item_id: str, with_pixels: bool) -> GalleryItem:
        f = ids[item_id]
        blob = runner.put_blob((folder / f.rel).read_bytes()) if with_pixels else None
        return GalleryItem(item_id=item_id, image=blob, caption=f.rel)

    stale = sorted(sent_before - set(ids))
    for i in range(0, len(stale), 1000):
        index([], stale[i: i + 1000])
    # Known ids go without pixels: the worker keeps them if present; if the gallery lost them
    # (Redis flushed), they come back as rejected and are sent again with pixels.
    order = sorted((i for i in ids if i not in known_bad), key=lambda i: ids[i].rel)
    resend: list[str] = []
    for i in range(0, len(order), INDEX_BATCH):
        chunk = order[i: i + INDEX_BATCH]
        out = index([item(x, x not in sent_before) for x in chunk], [])
        for r in out.get("rejected", []):
            if r["item_id"] in sent_before:
                resend.append(r["item_id"])
            else:
                rejected[r["item_id"]] = r["reason"]
                _note(f"skipped {folder / ids[r['item_id']].rel}: {r['reason']}")
    for i in range(0, len(resend), INDEX_BATCH):
        out = index([item(x, True) for x in resend[i: i + INDEX_BATCH]], [])
        for r in out.get("rejected", []):
            rejected[r["item_id"]] = r["reason"]
            _note(f"skipped {folder / ids[r['item_id']].rel}: {r['reason']}")
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    manifest_path.write_text(json.dumps({"folder": str(folder.resolve()), "guild": guild,
                                         "ids": sorted(set(ids) - set(rejected)), "rejected": rejected}))
    _note(f"find: {len(ids) - len(rejected)} images in {folder} ({totals['added']} embedded, "
          f"{totals['unchanged']} cached, {totals['deleted']} removed, {len(rejected) + len(scan.skipped)} skipped) on {args.redis}")
    if not ids:
        raise JobError(f"No images found in {folder}.")
    key = None if image is None else runner.put_blob(image)
    hits = runner.run(FindJob(guild=guild, query=query, image=key, top=args.top)).data["hits"]
    return [{"path": str(folder / h["caption"]), "score": h["score"]} for h in hits]
