"""The models folder: what is installed, fetching a whole model, and checking it on every load.

Each fetched model is a folder `<models dir>/<name>/` holding its files under their catalogue
names and `clipbot-manifest.json`: per file its size, sha256, how that hash is vouched for
(`pinned` in the catalogue, `published` by the server, or `recorded` on first download) and the
URL it came from. A model is installed when every required file is there with its recorded size;
`verify` re-hashes the files against the manifest before a worker loads them, so a file that
changed on disk since it was fetched is refused, not loaded.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from worker.models.catalogue import ModelSpec
from worker.models.fetch import FetchError, fetch_file, partial_path, sha256_file

log = logging.getLogger(__name__)

MANIFEST = "clipbot-manifest.json"


class ModelError(RuntimeError):
    """A catalogue model is missing, damaged or cannot be fetched; the message says what to do."""


def fetch_command(name: str, models_dir: str | Path) -> str:
    return f"python -m worker models fetch {name} --dir {models_dir}"


def read_manifest(folder: Path) -> dict[str, dict[str, Any]]:
    try:
        files = json.loads((folder / MANIFEST).read_text()).get("files", {})
        return files if isinstance(files, dict) else {}
    except (OSError, ValueError, AttributeError):
        return {}


def _write_manifest(folder: Path, name: str, files: dict[str, dict[str, Any]]) -> None:
    tmp = folder / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps({"model": name, "files": files}, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, folder / MANIFEST)


def installed(spec: ModelSpec, models_dir: str | Path) -> bool:
    folder = Path(models_dir) / spec.name
    manifest = read_manifest(folder)
    for f in spec.files:
        path, entry = folder / f.name, manifest.get(f.name)
        if not path.is_file():
            if f.required or entry is not None:
                return False
            continue
        if entry is None or entry.get("size") != path.stat().st_size:
            return False
    return True


def status(spec: ModelSpec, models_dir: str | Path, mirror: str | None = None) -> dict[str, Any]:
    """What `models list --json` says about one model (no hashing: that happens at load)."""
    folder = Path(models_dir) / spec.name
    manifest = read_manifest(folder)
    files = []
    for f in spec.files:
        entry = manifest.get(f.name, {})
        present = (folder / f.name).is_file()
        check = entry.get("check") if present and entry else ("pinned" if f.sha256 else None)
        files.append({"name": f.name, "required": f.required, "present": present,
                      "size": entry.get("size") if present else f.size, "sha256": entry.get("sha256", f.sha256),
                      "check": check, "urls": spec.urls(f, mirror)})
    is_installed = installed(spec, models_dir)
    checks = sorted({f["check"] for f in files if f["check"]})
    if is_installed:
        sha = "+".join(checks) or "unverified"
    elif all(f.sha256 for f in spec.files):
        sha = "pinned"
    else:
        sha = "recorded on first download"
    return {"name": spec.name, "kind": spec.kind, "size": spec.approx_bytes, "about": spec.about,
            "installed": is_installed, "sha256": sha, "path": str(folder), "files": files}


def manual_instructions(spec: ModelSpec, models_dir: str | Path) -> str:
    folder = Path(models_dir) / spec.name
    lines = [f"To install it by hand, download on a connected machine and copy into {folder}/:"]
    for f in spec.files:
        urls = spec.urls(f)  # the public source, not the operator's mirror that just failed
        lines.append(f"  {f.name}{'' if f.required else ' (optional)'}  <-  {urls[0] if urls else '?'}")
    lines.append(f"then run `{fetch_command(spec.name, models_dir)}` again: it checks and records them. "
                 "Or set CLIPBOT_MODEL_MIRROR to a server holding NAME/FILE.")
    return "\n".join(lines)


def fetch_model(spec: ModelSpec, models_dir: str | Path, mirror: str | None = None,
                progress: bool = True) -> dict[str, Any]:
    """Make `spec` installed in `models_dir`: download what is missing, check and record what is
    there (files copied by hand included). Raises ModelError with what was tried and what to do."""
    folder = Path(models_dir) / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(folder)
    for f in spec.files:
        dest = folder / f.name
        if dest.is_file():
            entry = manifest.get(f.name)
            if entry and entry.get("size") == dest.stat().st_size and sha256_file(dest) == entry.get("sha256"):
                continue
            if entry:  # changed since it was fetched: fetch it again rather than trust it
                log.warning("%s/%s does not match its recorded sha256: fetching it again", spec.name, f.name)
                dest.unlink()
            else:
                manifest[f.name] = _adopt(spec, f, dest)
                _write_manifest(folder, spec.name, manifest)
                continue
        try:
            got = fetch_file(spec.urls(f, mirror), dest, sha256=f.sha256, size=f.size,
                             label=f"{spec.name}/{f.name}", progress=progress)
        except FetchError as e:
            if not f.required and not e.unreachable and all("HTTP 404" in why for _, why in e.attempts):
                manifest.pop(f.name, None)
                continue  # an optional file this repository does not have
            hint = manual_instructions(spec, models_dir)
            head = "no mirror could be reached (no network?)" if e.unreachable else "no mirror gave the file"
            raise ModelError(f"could not fetch {spec.name}: {head}; {e}\n{hint}") from None
        manifest[f.name] = {"size": got.size, "sha256": got.sha256, "check": got.check, "url": got.url}
        _write_manifest(folder, spec.name, manifest)
    _write_manifest(folder, spec.name, manifest)
    return status(spec, models_dir, mirror)


def _adopt(spec: ModelSpec, f, dest: Path) -> dict[str, Any]:
    """A file put there by hand: check it against the catalogue's size and hash, then record it."""
    size, digest = dest.stat().st_size, sha256_file(dest)
    if (f.size is not None and size != f.size) or (f.sha256 and digest != f.sha256):
        raise ModelError(f"{dest} is not the catalogue's {spec.name}/{f.name} (size {size}, sha256 "
                         f"{digest[:16]}...); remove it and run `{fetch_command(spec.name, dest.parent.parent)}`")
    partial_path(dest).unlink(missing_ok=True)
    return {"size": size, "sha256": digest, "check": "pinned" if f.sha256 else "recorded", "url": "local copy"}


def verify(spec: ModelSpec, models_dir: str | Path) -> Path:
    """The model's folder, after checking every file against its manifest (raises ModelError)."""
    folder = Path(models_dir) / spec.name
    if not installed(spec, models_dir):
        raise ModelError(
            f"{spec.kind.upper()} model {spec.name} is not in {models_dir}/ (or its download is incomplete). "
            f"Fetch it with: {fetch_command(spec.name, models_dir)}"
        )
    for name, entry in read_manifest(folder).items():
        path = folder / name
        if path.is_file() and sha256_file(path) != entry.get("sha256"):
            raise ModelError(
                f"{path} does not match the sha256 recorded when it was fetched ({entry.get('check')}): "
                f"the file changed on disk. Fetch it again with: {fetch_command(spec.name, models_dir)}"
            )
    return folder
