"""`python -m worker find`: folder indexing with the on-disk cache, local search, and the --redis mode."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import redis
from PIL import Image

from tests.clip_support import tiny_clip, tiny_clip_dir
from worker.api import JobError
from worker.cli import build_parser
from worker.clip.cli import find_main
from worker.clip.handlers import ClipHandlers
from worker.runner import LocalRunner
from worker.setup import WorkerSetup

REPO = Path(__file__).resolve().parent.parent


def write_img(path: Path, seed: int, fmt: str = "PNG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (30, 34, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, fmt)
    return path


@pytest.fixture
def folder(tmp_path) -> Path:
    d = tmp_path / "art"
    for i in range(5):
        write_img(d / f"img{i}.png", i)
    write_img(d / "sub" / "photo.jpg", 10, "JPEG")
    write_img(d / "sub" / "copy-of-img0.png", 0)  # same content as img0: embedded once
    (d / "README.txt").write_text("not an image, silently ignored")
    (d / "broken.png").write_bytes(write_img(tmp_path / "tmp.png", 3).read_bytes()[:60])
    write_img(d / ".hidden" / "secret.png", 20)  # hidden folders are not indexed
    return d


def parse(*argv):
    argv = list(argv)
    return build_parser(argv).parse_args(argv)


def vision_calls():
    calls = []
    hook = tiny_clip().model.vision_model.register_forward_hook(lambda m, i, o: calls.append(1))
    return calls, hook


def run_find(capsys, *argv, runner=None) -> tuple[list, str]:
    args = parse("find", *argv)
    assert find_main(args, runner) == 0
    cap = capsys.readouterr()
    return (json.loads(cap.out) if "--json" in argv else cap.out), cap.err


def test_local_find_uses_the_disk_cache(folder, tmp_path, capsys):
    cache = tmp_path / "cache"
    common = ["--images", str(folder), "--top", "3", "--cache-dir", str(cache), "--clip-model", str(tiny_clip_dir()),
              "--json"]
    hits, err = run_find(capsys, "a red circle", *common)
    assert "7 images" in err and "6 embedded, 0 cached, 1 skipped" in err  # copy-of-img0 reuses img0's embedding
    assert f"skipped {folder / 'broken.png'}: The PNG image is corrupt or truncated" in err
    assert len(hits) == 3 and set(hits[0]) == {"path", "score"}
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert all(Path(h["path"]).is_file() and Path(h["path"]).parent.name in ("art", "sub") for h in hits)

    # same folder again, another query: nothing is embedded (checked on the model itself)
    from worker.clip.model import get_clip

    clip = get_clip(str(tiny_clip_dir()))
    calls = []
    hook = clip.model.vision_model.register_forward_hook(lambda m, i, o: calls.append(1))
    try:
        hits2, err2 = run_find(capsys, "a blue star", *common)
        assert "0 embedded, 6 cached" in err2 and calls == []
        (folder / "img1.png").rename(folder / "renamed.png")  # content-keyed: a rename costs nothing
        write_img(folder / "img2.png", 99)  # an edit is embedded once
        _, err3 = run_find(capsys, "a blue star", *common)
        assert "1 embedded, 5 cached" in err3 and len(calls) == 1
    finally:
        hook.remove()


def test_local_find_ranks_by_the_models_cosine(folder, tmp_path, capsys):
    """A random model has no semantics; what is checked is the ranking against brute force."""
    from jobs.validation.images import decode_image
    from worker.clip.model import get_clip

    hits, _ = run_find(capsys, "a red circle", "--images", str(folder), "--top", "10", "--cache-dir",
                       str(tmp_path / "c"), "--clip-model", str(tiny_clip_dir()), "--json")
    clip = get_clip(str(tiny_clip_dir()))
    text = clip.embed_texts(["a red circle"])[0]
    paths = [Path(h["path"]) for h in hits]
    assert len(paths) == 7 and folder / "broken.png" not in paths
    brute = {p: float(clip.embed_images([decode_image(p.read_bytes())])[0] @ text) for p in paths}
    for h in hits:
        assert h["score"] == pytest.approx(brute[Path(h["path"])], abs=1e-5)


def test_table_output_and_errors(folder, tmp_path, capsys):
    out, _ = run_find(capsys, "a red circle", "--images", str(folder), "--top", "2", "--cache-dir",
                      str(tmp_path / "c"), "--clip-model", str(tiny_clip_dir()))
    lines = out.splitlines()
    assert lines[0].split() == ["#", "SCORE", "PATH"] and len(lines) == 3 and lines[1].split()[0] == "1"
    with pytest.raises(JobError, match="is not a folder"):
        find_main(parse("find", "x", "--images", str(tmp_path / "nope"), "--clip-model", str(tiny_clip_dir())), None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(JobError, match="No images found"):
        find_main(parse("find", "x", "--images", str(tmp_path / "empty"), "--cache-dir", str(tmp_path / "c"),
                        "--clip-model", str(tiny_clip_dir())), None)


def test_redis_mode_syncs_a_folder_gallery(folder, tmp_path, redis_url, capsys):
    """--redis: IndexJobs + FindJob through a runner (here in-process, with a real Redis behind the
    gallery); a second run uploads and embeds nothing, vanished files are deleted, a flushed Redis heals."""
    runner = LocalRunner(WorkerSetup(handlers=ClipHandlers(tiny_clip(), redis.Redis.from_url(redis_url)).as_dict()))
    argv = ["a red circle", "--images", str(folder), "--top", "10", "--cache-dir", str(tmp_path / "c"),
            "--redis", redis_url, "--json"]
    hits, err = run_find(capsys, *argv, runner=runner)
    assert "7 images" in err and "7 embedded, 0 cached, 0 removed, 1 skipped" in err
    assert len(hits) == 7 and [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)

    # the same ranking as local mode (float16 storage: scores within 2e-3)
    local, _ = run_find(capsys, "a red circle", "--images", str(folder), "--top", "10", "--cache-dir",
                        str(tmp_path / "c2"), "--clip-model", str(tiny_clip_dir()), "--json")
    want = {h["path"]: h["score"] for h in local}
    for h in hits:
        assert h["score"] == pytest.approx(want[h["path"]], abs=2e-3)

    calls, hook = vision_calls()
    try:
        blobs_before = len(runner.blobs)
        _, err = run_find(capsys, *argv, runner=runner)
        assert "0 embedded, 7 cached" in err and calls == [] and len(runner.blobs) == blobs_before
        (folder / "img3.png").unlink()
        hits, err = run_find(capsys, *argv, runner=runner)
        assert "0 embedded, 6 cached, 1 removed" in err and len(hits) == 6
        assert str(folder / "img3.png") not in {h["path"] for h in hits}
        redis.Redis.from_url(redis_url).flushall()  # the gallery is lost: the next run re-sends pixels
        hits, err = run_find(capsys, *argv, runner=runner)
        assert "6 embedded" in err and len(hits) == 6
    finally:
        hook.remove()
    with pytest.raises(JobError, match="at most 10"):
        find_main(parse("find", "x", "--images", str(folder), "--top", "11", "--redis", redis_url), runner)


def test_python_m_worker_find_end_to_end_twice(folder, tmp_path):
    """The real entry point, two fresh processes: the second embeds nothing."""
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", DATA_DIR=str(tmp_path / "data"))
    cmd = [sys.executable, "-m", "worker", "find", "a red circle", "--images", str(folder), "--top", "2",
           "--json", "--cache-dir", str(tmp_path / "cache"), "--clip-model", str(tiny_clip_dir())]
    first = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert first.returncode == 0, first.stderr
    second = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert second.returncode == 0, second.stderr
    assert "6 embedded, 0 cached" in first.stderr and "0 embedded, 6 cached" in second.stderr
    assert json.loads(first.stdout) == json.loads(second.stdout)
    assert [set(h) for h in json.loads(second.stdout)] == [{"path", "score"}] * 2


def test_local_find_by_image_and_by_image_plus_text(folder, tmp_path, capsys):
    from jobs.validation.images import decode_image
    from worker.clip.model import get_clip

    common = ["--images", str(folder), "--top", "10", "--cache-dir", str(tmp_path / "c"),
              "--clip-model", str(tiny_clip_dir()), "--json"]
    probe = write_img(tmp_path / "probe.png", 3)  # the same pixels as art/img3.png
    hits, _ = run_find(capsys, "--image", str(probe), *common)
    assert hits[0]["path"] == str(folder / "img3.png") and hits[0]["score"] == pytest.approx(1, abs=1e-5)

    clip = get_clip(str(tiny_clip_dir()))
    text = clip.embed_texts(["a red circle"])[0]
    image = clip.embed_images([decode_image(probe.read_bytes())])[0]
    both = (text + image) / (text + image).norm()
    hits, _ = run_find(capsys, "a red circle", "--image", str(probe), *common)
    assert len(hits) == 7
    for h in hits:
        row = clip.embed_images([decode_image(Path(h["path"]).read_bytes())])[0]
        assert h["score"] == pytest.approx(float(row @ both), abs=1e-5)


def test_find_by_image_through_the_queue(folder, tmp_path, redis_url, capsys):
    runner = LocalRunner(WorkerSetup(handlers=ClipHandlers(tiny_clip(), redis.Redis.from_url(redis_url)).as_dict()))
    probe = write_img(tmp_path / "probe.png", 4)
    hits, _ = run_find(capsys, "--image", str(probe), "--images", str(folder), "--top", "2", "--cache-dir",
                       str(tmp_path / "c"), "--redis", redis_url, "--json", runner=runner)
    assert [set(h) for h in hits] == [{"path", "score"}] * 2
    assert hits[0]["path"] == str(folder / "img4.png") and hits[0]["score"] == pytest.approx(1, abs=3e-3)


def test_find_needs_text_or_a_readable_image(folder, tmp_path):
    base = ["--images", str(folder), "--cache-dir", str(tmp_path / "c"), "--clip-model", str(tiny_clip_dir())]
    with pytest.raises(JobError, match="Give a text to search for, --image PATH"):
        find_main(parse("find", *base), None)
    with pytest.raises(JobError, match="no such file"):
        find_main(parse("find", "--image", str(tmp_path / "nope.png"), *base), None)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(JobError, match=r"--image .*notes.txt: That is not a supported image: it looks like text"):
        find_main(parse("find", "--image", str(tmp_path / "notes.txt"), *base), None)
    with pytest.raises(JobError, match="The search text is empty"):
        find_main(parse("find", "  ", "--image", str(write_img(tmp_path / "p.png", 1)), *base), None)
