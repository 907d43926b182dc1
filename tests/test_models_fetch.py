"""The model fetcher against a loopback server: resume, verification, mirrors, no network."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs.embedded import free_port
from tests.model_server import ModelServer
from worker.models import catalogue, fetch
from worker.models.catalogue import ModelSpec, RemoteFile
from worker.models.fetch import FetchError, fetch_file
from worker.models.store import ModelError, fetch_model, installed, read_manifest, verify

ROOT = Path(__file__).resolve().parent.parent
BLOB = os.urandom(300_000) + b"end"  # a fake checkpoint, several read chunks long
SHA = hashlib.sha256(BLOB).hexdigest()


@pytest.fixture
def server():
    with ModelServer() as srv:
        srv.files["/a/last.ckpt"] = BLOB
        yield srv


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_dropped_connection_resumes_with_a_range_request(server, tmp_path):
    server.drop_after["/a/last.ckpt"] = [100_000, 50_000]  # two drops, then whole
    dest = tmp_path / "m" / "last.ckpt"
    got = fetch_file([f"{server.url}/a/last.ckpt"], dest, progress=False)
    assert dest.read_bytes() == BLOB and got.sha256 == SHA and got.check == "recorded"
    ranges = [r for p, r in server.requests if p == "/a/last.ckpt"]
    assert ranges == [None, "bytes=100000-", "bytes=150000-"]
    assert _leftovers(dest.parent) == ["last.ckpt"]  # no partial file or its note left behind


def test_an_interrupted_fetch_leaves_no_model_file_and_the_next_run_resumes(server, tmp_path, monkeypatch):
    monkeypatch.setattr(fetch, "RESUMES", 0)  # this run gives up at the first drop
    server.drop_after["/a/last.ckpt"] = [120_000]
    dest = tmp_path / "last.ckpt"
    with pytest.raises(FetchError, match="dropped at 120000 bytes"):
        fetch_file([f"{server.url}/a/last.ckpt"], dest, progress=False)
    assert not dest.exists()  # nothing that looks like a model
    assert fetch.partial_path(dest).stat().st_size == 120_000
    fetch_file([f"{server.url}/a/last.ckpt"], dest, progress=False)
    assert dest.read_bytes() == BLOB
    assert server.requests[-1] == ("/a/last.ckpt", "bytes=120000-")


def test_wrong_size_or_hash_is_refused_and_leaves_nothing(server, tmp_path):
    url = f"{server.url}/a/last.ckpt"
    with pytest.raises(FetchError, match="expected 12345"):
        fetch_file([url], tmp_path / "last.ckpt", size=12345, progress=False)
    assert _leftovers(tmp_path) == []
    with pytest.raises(FetchError, match="does not match the pinned"):
        fetch_file([url], tmp_path / "last.ckpt", sha256="0" * 64, progress=False)
    assert _leftovers(tmp_path) == []


def test_404_and_bad_mirrors_fall_through_to_the_next(server, tmp_path):
    server.files["/bad/last.ckpt"] = BLOB[:-1] + b"X"  # a mirror with a damaged copy
    urls = [f"{server.url}/missing/last.ckpt", f"{server.url}/bad/last.ckpt", f"{server.url}/a/last.ckpt"]
    got = fetch_file(urls, tmp_path / "last.ckpt", sha256=SHA, size=len(BLOB), progress=False)
    assert got.url == urls[2] and got.check == "pinned" and (tmp_path / "last.ckpt").read_bytes() == BLOB
    assert _leftovers(tmp_path) == ["last.ckpt"]


def test_hash_published_on_the_redirect_is_checked(server, tmp_path):
    server.redirect["/hub/last.ckpt"] = (f"{server.url}/a/last.ckpt", {"X-Linked-Etag": f'"{SHA}"'})
    got = fetch_file([f"{server.url}/hub/last.ckpt"], tmp_path / "ok.ckpt", progress=False)
    assert got.check == "published" and got.sha256 == SHA
    server.redirect["/liar/last.ckpt"] = (f"{server.url}/a/last.ckpt", {"X-Linked-Etag": f'"{"1" * 64}"'})
    with pytest.raises(FetchError, match="does not match the published"):
        fetch_file([f"{server.url}/liar/last.ckpt"], tmp_path / "bad.ckpt", progress=False)
    assert not (tmp_path / "bad.ckpt").exists() and not fetch.partial_path(tmp_path / "bad.ckpt").exists()


def test_no_network_fails_fast_naming_what_was_tried(tmp_path):
    closed = f"http://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    with pytest.raises(FetchError) as e:
        fetch_file([f"{closed}/x/last.ckpt", f"{closed}/y/last.ckpt"], tmp_path / "last.ckpt", progress=False)
    assert time.monotonic() - t0 < 10
    assert e.value.unreachable and f"{closed}/y/last.ckpt" in str(e.value)


def _fake_vqgan_spec(server) -> ModelSpec:
    server.files["/a/model.yaml"] = b"model: {}\n"
    return ModelSpec("vqgan_fake", "vqgan", len(BLOB), (
        RemoteFile("model.yaml", (f"{server.url}/a/model.yaml",)),
        RemoteFile("last.ckpt", (f"{server.url}/nowhere/last.ckpt", f"{server.url}/a/last.ckpt")),
    ))


def test_fetch_model_records_hashes_and_verify_catches_a_changed_file(server, tmp_path):
    spec = _fake_vqgan_spec(server)
    assert not installed(spec, tmp_path)
    with pytest.raises(ModelError, match="models fetch vqgan_fake"):
        verify(spec, tmp_path)
    st = fetch_model(spec, tmp_path, progress=False)
    assert st["installed"] and st["sha256"] == "recorded"
    manifest = read_manifest(tmp_path / "vqgan_fake")
    assert manifest["last.ckpt"]["sha256"] == SHA and manifest["last.ckpt"]["url"].endswith("/a/last.ckpt")
    assert verify(spec, tmp_path) == tmp_path / "vqgan_fake"
    n = len(server.requests)
    fetch_model(spec, tmp_path, progress=False)  # already there and whole: nothing downloaded
    assert len(server.requests) == n
    ckpt = tmp_path / "vqgan_fake" / "last.ckpt"
    ckpt.write_bytes(BLOB[:-1] + b"Z")  # same size, other bytes
    with pytest.raises(ModelError, match="does not match the sha256 recorded"):
        verify(spec, tmp_path)
    fetch_model(spec, tmp_path, progress=False)  # fetched again
    assert ckpt.read_bytes() == BLOB and verify(spec, tmp_path)


def test_files_copied_by_hand_are_checked_and_recorded(server, tmp_path):
    spec = _fake_vqgan_spec(server)
    folder = tmp_path / "vqgan_fake"
    folder.mkdir()
    (folder / "last.ckpt").write_bytes(BLOB)
    fetch_model(spec, tmp_path, progress=False)
    assert read_manifest(folder)["last.ckpt"]["url"] == "local copy"
    assert all(p != "/a/last.ckpt" for p, _ in server.requests)  # not downloaded again


def test_mirror_is_tried_first(server, tmp_path):
    server.files["/own/vqgan_fake/last.ckpt"] = BLOB
    server.files["/own/vqgan_fake/model.yaml"] = b"model: {}\n"
    spec = _fake_vqgan_spec(server)
    fetch_model(spec, tmp_path, mirror=f"{server.url}/own/", progress=False)
    assert read_manifest(tmp_path / "vqgan_fake")["last.ckpt"]["url"] == f"{server.url}/own/vqgan_fake/last.ckpt"
    assert all(not p.startswith("/a/") for p, _ in server.requests)


def test_catalogue_has_the_models_and_only_safetensors_for_clip():
    assert {"clip-vit-base-patch32", "clip-vit-base-patch16", "clip-vit-large-patch14", "vqgan_imagenet_f16_16384",
            "vqgan_imagenet_f16_1024", "vqgan_wikiart_16384", "vqgan_wikiart_1024",
            "vqgan_gumbel_f8_8192"} <= set(catalogue.CATALOGUE)
    for spec in catalogue.CATALOGUE.values():
        names = [f.name for f in spec.files]
        assert not any(n.endswith((".bin", ".pt", ".pth", ".msgpack", ".h5")) for n in names)
        assert all(spec.urls(f) for f in spec.files)
        if spec.kind == "vqgan":
            assert names == ["model.yaml", "last.ckpt"] and spec.profile
    wikiart = catalogue.get("vqgan_wikiart_16384").files[1]
    assert any("github.com/pixray/pixray/releases" in u for u in wikiart.urls)


def _cli(args: list[str], env: dict, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run([sys.executable, "-m", "worker", "models", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_cli_fetches_clip_from_a_hub_endpoint_and_lists_it(server, tmp_path):
    from tests.factories import make_clip_dir

    clip = make_clip_dir(tmp_path / "src")
    for p in clip.iterdir():  # the hub's resolve URLs; vocab.json & co. are absent (404): optional
        server.files[f"/openai/clip-vit-base-patch32/resolve/main/{p.name}"] = p.read_bytes()
    weights = (clip / "model.safetensors").read_bytes()
    path = "/openai/clip-vit-base-patch32/resolve/main/model.safetensors"
    server.files["/cdn/model.safetensors"] = weights
    server.redirect[path] = (f"{server.url}/cdn/model.safetensors",
                             {"X-Linked-Etag": f'"{hashlib.sha256(weights).hexdigest()}"'})
    env = {"HF_ENDPOINT": server.url}
    r = _cli(["fetch", "clip-vit-base-patch32", "--dir", str(tmp_path / "models"), "--quiet"], env)
    assert r.returncode == 0, r.stderr
    r = _cli(["list", "--json", "--dir", str(tmp_path / "models")], env)
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    row = rows["clip-vit-base-patch32"]
    assert row["installed"] and row["sha256"] == "published+recorded" and row["kind"] == "clip"
    assert row["files"][1]["urls"] == [f"{server.url}{path}"]
    assert not rows["vqgan_imagenet_f16_16384"]["installed"]
    assert rows["vqgan_imagenet_f16_16384"]["sha256"] == "recorded on first download"
    assert rows["vqgan_imagenet_f16_16384"]["files"][1]["urls"][0].startswith("https://heibox.uni-heidelberg.de/")


def test_cli_without_network_says_what_it_tried_and_how_to_copy_by_hand(tmp_path):
    closed = f"http://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    r = _cli(["fetch", "clip-vit-base-patch32", "--dir", str(tmp_path)], {"HF_ENDPOINT": closed})
    assert r.returncode == 1 and time.monotonic() - t0 < 30
    assert "no network" in r.stderr and f"{closed}/openai/clip-vit-base-patch32/resolve/main/config.json" in r.stderr
    assert "copy into" in r.stderr and "model.safetensors" in r.stderr
    assert not list((tmp_path / "clip-vit-base-patch32").glob("*.safetensors"))
    r = _cli(["fetch", "no-such-model"], {})
    assert r.returncode == 2 and "unknown model 'no-such-model'" in r.stderr
