"""Download one file from a list of mirrors: resumable, verified, and never half-installed.

A download goes to `.NAME.partial` next to its final place (a `.NAME.partial.json` beside it says
which URL it came from, so only that URL resumes it) and is renamed to NAME only when whole: the
size the server announced (or the catalogue's) and the sha256 (pinned in the catalogue, or
published by the server as the Hugging Face hub does for large files in `X-Linked-Etag`) both
match. A dropped connection resumes with an HTTP Range request; a wrong size or hash deletes the
partial file and moves on to the next mirror; a 404 moves on at once.

Plain `urllib` on purpose: the same code serves the hub's `resolve` URLs and taming's mirrors,
and a loopback `http.server` can stand in for all of them in tests. huggingface_hub's own
downloader would need its metadata protocol faked and would put files in its cache layout, not
in the models folder, with our temporary-name and record-the-hash rules.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
TIMEOUT_S = 10.0  # per connect and per read: a dead mirror is left quickly
RESUMES = 8  # reconnects per URL while the download keeps making progress
_SHA256 = re.compile(r'^"?([0-9a-f]{64})"?$')
_USER_AGENT = "clipbot-model-fetcher/1"


class FetchError(RuntimeError):
    """No mirror gave a whole, verified file. `attempts` lists (url, why) in the order tried;
    `unreachable` is true when every URL failed to connect at all (no network)."""

    def __init__(self, message: str, attempts: list[tuple[str, str]], unreachable: bool):
        super().__init__(message)
        self.attempts, self.unreachable = attempts, unreachable


@dataclass(frozen=True)
class Fetched:
    path: Path
    size: int
    sha256: str
    check: str  # "pinned" (catalogue), "published" (the server's hash) or "recorded" (first download)
    url: str


class _Unreachable(Exception):
    pass


class _Refused(Exception):
    """This URL cannot give the file (404, a wrong size or hash...): try the next one."""


class _RedirectHeaders(urllib.request.HTTPRedirectHandler):
    """Keeps the headers of every redirect: the hub publishes a large file's sha256 on its 302."""

    def __init__(self) -> None:
        self.seen: list = []

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        self.seen.append(headers)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def partial_path(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.partial")


def _discard(partial: Path) -> None:
    partial.unlink(missing_ok=True)
    partial.with_name(partial.name + ".json").unlink(missing_ok=True)


def _published_sha256(headers_list) -> str | None:
    for headers in headers_list:
        value = headers.get("X-Linked-Etag") if headers is not None else None
        m = _SHA256.match((value or "").strip().lower())
        if m:
            return m.group(1)
    return None


def fetch_file(urls: list[str], dest: Path, *, sha256: str | None = None, size: int | None = None,
               label: str = "", progress: bool = True, timeout_s: float = TIMEOUT_S) -> Fetched:
    """Fetch `dest` from the first of `urls` that gives the whole verified file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    attempts: list[tuple[str, str]] = []
    unreachable = 0
    for url in urls:
        try:
            return _fetch_one(url, dest, sha256, size, label or dest.name, progress, timeout_s)
        except _Unreachable as e:
            unreachable += 1
            attempts.append((url, str(e)))
        except _Refused as e:
            attempts.append((url, str(e)))
        log.debug("%s: %s failed: %s", dest.name, url, attempts[-1][1])
    tried = "; ".join(f"{u} ({why})" for u, why in attempts) or "no URL"
    raise FetchError(f"could not fetch {dest.name}: tried {tried}", attempts,
                     unreachable=bool(attempts) and unreachable == len(attempts))


def _fetch_one(url: str, dest: Path, sha256: str | None, size: int | None, label: str,
               progress: bool, timeout_s: float) -> Fetched:
    partial = partial_path(dest)
    meta_path = partial.with_name(partial.name + ".json")
    meta = _read_meta(meta_path)
    if meta.get("url") != url:  # a partial file from another URL may be another file: start over
        _discard(partial)
        meta = {"url": url}
    published: str | None = None
    total: int | None = None
    reconnects = 0
    while True:
        offset = partial.stat().st_size if partial.exists() else 0
        headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            if meta.get("etag"):
                headers["If-Range"] = meta["etag"]  # the file changed on the server: get it whole
        redirects = _RedirectHeaders()
        opener = urllib.request.build_opener(redirects)
        try:
            resp = opener.open(urllib.request.Request(url, headers=headers), timeout=timeout_s)
        except urllib.error.HTTPError as e:
            if e.code == 416 and offset:  # the partial file is no prefix of this one: start over
                _discard(partial)
                meta = {"url": url}
                continue
            raise _Refused(f"HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            reason = getattr(e, "reason", e)
            if offset and reconnects < RESUMES:
                reconnects += 1
                continue
            raise _Unreachable(f"cannot connect: {reason}") from None
        with resp:
            published = _published_sha256([*redirects.seen, resp.headers]) or published
            if resp.status == 206:
                start, _, whole = _content_range(resp.headers.get("Content-Range", ""))
                if start != offset:
                    raise _Refused(f"asked for bytes from {offset}, the server sent from {start}")
                total = whole
            else:  # 200: the whole file (the server ignores ranges, or it changed): start over
                offset = 0
                length = resp.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
            if size is not None and total is not None and total != size:
                _discard(partial)
                raise _Refused(f"the server's file has {total} bytes, expected {size}")
            meta.update(url=url, etag=resp.headers.get("ETag") or meta.get("etag"), total=total)
            meta_path.write_text(json.dumps(meta))
            try:
                _stream(resp, partial, offset, total, label, progress)
            except (OSError, http.client.HTTPException) as e:  # dropped mid-way: resume from here
                got = partial.stat().st_size if partial.exists() else 0
                if got > offset and reconnects < RESUMES:
                    reconnects += 1
                    log.info("%s: connection dropped at %d bytes (%s); resuming", label, got, e)
                    continue
                raise _Refused(f"connection dropped at {got} bytes: {e}") from None
        break
    return _finish(url, dest, partial, sha256, published, size if size is not None else total)


def _stream(resp, partial: Path, offset: int, total: int | None, label: str, progress: bool) -> None:
    from tqdm import tqdm

    with open(partial, "r+b" if offset else "wb") as out, tqdm(
        total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
        file=sys.stderr, disable=not progress, leave=False,
    ) as bar:
        out.seek(offset)
        out.truncate()
        while True:
            chunk = resp.read(CHUNK)
            if not chunk:
                break
            out.write(chunk)
            bar.update(len(chunk))
        got = out.tell()
    if total is not None and got < total:  # the server closed early without an error
        raise http.client.IncompleteRead(b"", total - got)


def _finish(url: str, dest: Path, partial: Path, pinned: str | None, published: str | None,
            size: int | None) -> Fetched:
    got = partial.stat().st_size
    if size is not None and got != size:
        _discard(partial)
        raise _Refused(f"got {got} bytes, expected {size}")
    digest = sha256_file(partial)
    expected, check = (pinned, "pinned") if pinned else (published, "published") if published else (None, "recorded")
    if expected is not None and digest != expected.lower():
        _discard(partial)
        raise _Refused(f"sha256 {digest[:16]}... does not match the {check} {expected[:16]}...")
    os.replace(partial, dest)  # whole and verified: only now does it look like a model file
    partial.with_name(partial.name + ".json").unlink(missing_ok=True)
    return Fetched(dest, got, digest, check, url)


def _content_range(value: str) -> tuple[int, int | None, int | None]:
    """'bytes 100-199/1000' -> (100, 199, 1000); '*' total -> None."""
    m = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", value.strip())
    if not m:
        raise _Refused(f"bad Content-Range {value!r}")
    return int(m.group(1)), int(m.group(2)), None if m.group(3) == "*" else int(m.group(3))


def _read_meta(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
        return meta if isinstance(meta, dict) else {}
    except (OSError, ValueError):
        return {}
