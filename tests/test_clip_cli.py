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
from worker.runner import LocalRunner
from worker.setup import WorkerSetup

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


def write_labels(path: Path, n: int) -> Path:
    lines = ["# an ImageNet-style list: one class per line", ""]
    lines += [f"class {i}, kind {i % 7}" for i in range(n)]  # commas stay inside a label
    lines += ["", "CLASS 0, KIND 0", "   # an indented comment"]  # a case-insensitive duplicate merges
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def text_forwards(clip):
    calls = []
    hook = clip.model.text_model.register_forward_hook(lambda m, i, o: calls.append(o.last_hidden_state.shape[0]))
    return calls, hook


def test_classify_a_thousand_labels_from_a_file_embeds_them_once(tmp_path, capsys):
    clip = tiny_clip()
    # two templates (the default has 8) keep the test quick; the batching is the same
    runner = LocalRunner(WorkerSetup(handlers=ClipHandlers(clip, templates=("{}", "a {}")).as_dict()))
    labels = write_labels(tmp_path / "labels.txt", 1000)
    a, b = write_png(tmp_path / "a.png", 1), write_png(tmp_path / "b.png", 2)
    calls, hook = text_forwards(clip)
    try:
        assert classify_main(parse("classify", str(a), "--labels-file", str(labels), "--json"), runner) == 0
        first = list(calls)
        calls.clear()
        assert classify_main(parse("classify", str(b), "--labels-file", str(labels), "--json"), runner) == 0
    finally:
        hook.remove()
    # 1,000 labels x 2 templates, at most 256 prompts per forward pass; the second image embeds no text
    assert sum(first) == 2000 and max(first) <= 256 and len(first) == 8
    assert calls == []
    out = json.loads(capsys.readouterr().out.splitlines()[-1])
    got = [x["label"] for x in out[0]["labels"]]
    assert len(got) == 1000 and sorted(got) == sorted(f"class {i}, kind {i % 7}" for i in range(1000))
    assert math.isclose(sum(x["score"] for x in out[0]["labels"]), 1, abs_tol=1e-9)


def test_labels_file_table_shows_the_best_few(tmp_path, runner, capsys):
    labels = write_labels(tmp_path / "labels.txt", 40)
    assert classify_main(parse("classify", str(write_png(tmp_path / "a.png", 1)), "--labels-file", str(labels)),
                         runner) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 12 and lines[-1].strip() == "... 30 more labels (all of them with --json)"


@pytest.mark.parametrize("content,message", [
    (None, "no such labels file"),
    (b"\xff\xfe\x00bad", "not a UTF-8 text file"),
    ("# only comments\n\nlonely\n", "at least 2 different labels"),
    ("\n".join(f"l{i}" for i in range(1001)), "Too many labels: 1,001 different ones; the limit is 1,000"),
])
def test_bad_labels_files_get_clear_messages(tmp_path, runner, content, message):
    path = tmp_path / "labels.txt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    args = parse("classify", str(write_png(tmp_path / "a.png", 1)), "--labels-file", str(path))
    with pytest.raises(JobError, match=message):
        classify_main(args, runner)


def test_labels_and_labels_file_are_exclusive(tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse("classify", "a.png", "--labels", "a,b", "--labels-file", "x.txt")
    assert "not allowed with argument" in capsys.readouterr().err
