"""`python -m worker classify`: worker.clip.cli through the real argument parser and runner."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.clip_support import tiny_clip, tiny_clip_dir
from worker.api import JobError
from worker.cli import build_parser
from worker.clip.cli import classify_main
from worker.clip.handlers import ClipHandlers
from worker.setup import WorkerSetup
from worker.runner import LocalRunner

REPO = Path(__file__).resolve().parent.parent


def write_png(path: Path, seed: int) -> Path:
    arr = np.random.default_rng(seed).integers(0, 256, (30, 34, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return path


def parse(*argv):
    argv = list(argv)
    return build_parser(argv).parse_args(argv)


@pytest.fixture
def runner():
    return LocalRunner(WorkerSetup(handlers=ClipHandlers(tiny_clip()).as_dict()))


def test_classify_json_shape(tmp_path, runner, capsys):
    a, b = write_png(tmp_path / "a.png", 1), write_png(tmp_path / "b.png", 2)
    args = parse("classify", str(a), str(b), "--labels", "red circle, blue square,star, Star", "--json")
    assert classify_main(args, runner) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in out] == [str(a), str(b)]
    for r in out:
        assert set(r) == {"image", "labels"}
        assert sorted(x["label"] for x in r["labels"]) == ["blue square", "red circle", "star"]
        scores = [x["score"] for x in r["labels"]]
        assert scores == sorted(scores, reverse=True) and math.isclose(sum(scores), 1, abs_tol=1e-9)


def test_classify_table_and_bad_files_do_not_lose_the_good_ones(tmp_path, runner, capsys):
    good = write_png(tmp_path / "good.png", 1)
    (tmp_path / "notes.txt").write_text("not a picture")
    args = parse("classify", str(good), str(tmp_path / "notes.txt"), str(tmp_path / "missing.png"),
                 "--labels", "cat,dog")
    assert classify_main(args, runner) == 1
    cap = capsys.readouterr()
    lines = cap.out.splitlines()
    assert lines[0] == str(good) and len(lines) == 3
    assert lines[1].lstrip().startswith(("cat", "dog")) and "0." in lines[1]
    assert "notes.txt: That is not a supported image: it looks like text" in cap.err
    assert "missing.png: no such file" in cap.err


def test_classify_rejects_bad_labels_before_any_work(tmp_path, runner):
    args = parse("classify", str(write_png(tmp_path / "a.png", 1)), "--labels", "cat, CAT")
    with pytest.raises(JobError, match="at least 2 different labels"):
        classify_main(args, runner)


def test_python_m_worker_classify_end_to_end(tmp_path):
    """The real entry point in a fresh process, with this engine as the worker's handlers."""
    a = write_png(tmp_path / "a.png", 1)
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1",
               CLIPBOT_HANDLERS="worker.clip.handlers:build", DATA_DIR=str(tmp_path / "data"))
    proc = subprocess.run(
        [sys.executable, "-m", "worker", "classify", str(a), "--labels", "red circle,blue square", "--json",
         "--clip-model", str(tiny_clip_dir())],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out[0]["image"] == str(a) and len(out[0]["labels"]) == 2
    assert math.isclose(sum(x["score"] for x in out[0]["labels"]), 1, abs_tol=1e-6)
