"""`python -m worker imagine`: in process through the LocalRunner, and as a real subprocess."""
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from jobs.schemas import ImagineJob
from jobs.settings import ImagineConfig, SettingsError, load_settings
from tests.factories import make_clip_dir, make_vqgan_files
from tests.imagine_support import _one_thread, png_bytes, tiny_config, tiny_models  # noqa: F401
from worker.api import JobError
from worker.cli import build_parser
from worker.imagine.cli import imagine_main, parse_size
from worker.imagine.engine import ImagineEngine
from worker.runner import LocalRunner
from worker.setup import WorkerSetup

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    engine = ImagineEngine(*tiny_models(tmp_path_factory.mktemp("imagine")), tiny_config(steps=4))
    return LocalRunner(WorkerSetup(imagine_engine=engine))


def args_for(*argv):
    return build_parser(["imagine", *argv]).parse_args(["imagine", *argv])


def test_writes_png_and_gif_and_prints_json(runner, tmp_path, capsys):
    (tmp_path / "init.png").write_bytes(png_bytes())
    args = args_for("a red circle | a star:-0.5", "--out", str(tmp_path / "a.png"), "--gif", str(tmp_path / "a.gif"),
                    "--size", "40x24", "--seed", "9", "--steps", "3", "--init-image", str(tmp_path / "init.png"),
                    "--init-weight", "0.5", "--image-prompt", f"{tmp_path / 'init.png'}:0.5", "--json")
    assert imagine_main(args, runner) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["out"] == str(tmp_path / "a.png") and report["seed"] == 9 and report["steps"] == 3
    assert (report["width"], report["height"]) == (40, 24)
    assert isinstance(report["seconds"], float) and -1 <= report["clip_score"] <= 1
    assert Image.open(tmp_path / "a.png").text["seed"] == "9"
    assert Image.open(tmp_path / "a.gif").is_animated


def test_readable_output_and_clear_errors(runner, tmp_path, capsys):
    assert imagine_main(args_for("a star", "--out", str(tmp_path / "b.png")), runner) == 0
    out = capsys.readouterr().out
    assert "seed" in out and "clip_score" in out and "{" not in out
    with pytest.raises(JobError, match="folder .* does not exist"):
        imagine_main(args_for("a star", "--out", str(tmp_path / "nowhere" / "b.png")), runner)
    with pytest.raises(JobError, match="Cannot read the init image"):
        imagine_main(args_for("a star", "--out", str(tmp_path / "b.png"), "--init-image", "/no/such.png"), runner)
    with pytest.raises(JobError, match="steps is too many"):
        imagine_main(args_for("a star", "--out", str(tmp_path / "b.png"), "--steps", "500"), runner)
    with pytest.raises(JobError, match="this worker's limit"):
        imagine_main(args_for("a star", "--out", str(tmp_path / "b.png"), "--size", "512"), runner)


def test_size_parsing():
    assert parse_size("128x96") == (128, 96) and parse_size("64") == (64, 64) and parse_size("32 X 16") == (32, 16)
    with pytest.raises(SystemExit):
        args_for("a star", "--out", "x.png", "--size", "big")


def test_imagine_knobs_are_settings(monkeypatch, tmp_path):
    """CLIPBOT_IMAGINE_<FIELD> go through the one pydantic Settings: environment, .env, clear errors."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLIPBOT_IMAGINE_BATCH_SIZE", "8")
    monkeypatch.setenv("CLIPBOT_IMAGINE_LR", "0.2")
    (tmp_path / ".env").write_text("CLIPBOT_IMAGINE_CUT_MIN_SIZE=0.25\nCLIPBOT_IMAGINE_DECODE_PER_IMAGE=false\n")
    cfg = load_settings().imagine
    assert (cfg.batch_size, cfg.lr, cfg.cut_min_size, cfg.decode_per_image) == (8, 0.2, 0.25, False)
    assert cfg.steps == ImagineConfig().steps and cfg.max_pixels == ImagineConfig().max_pixels
    monkeypatch.setenv("CLIPBOT_IMAGINE_DECODE_PER_IMAGE", "auto")
    assert load_settings().imagine.decode_per_image == "auto"
    monkeypatch.setenv("CLIPBOT_IMAGINE_DECODE_PER_IMAGE", "maybe")
    with pytest.raises(SettingsError, match="CLIPBOT_IMAGINE_DECODE_PER_IMAGE='maybe'.*use auto, true or false"):
        load_settings()
    monkeypatch.setenv("CLIPBOT_IMAGINE_DECODE_PER_IMAGE", "auto")
    monkeypatch.setenv("CLIPBOT_IMAGINE_STEPS", "many")
    with pytest.raises(SettingsError, match="CLIPBOT_IMAGINE_STEPS='many'"):
        load_settings()
    monkeypatch.setenv("CLIPBOT_IMAGINE_STEPS", "100")
    monkeypatch.setenv("CLIPBOT_IMAGINE_BATCH_SIZE", "0")
    with pytest.raises(SettingsError, match="CLIPBOT_IMAGINE_BATCH_SIZE='0'.*greater than or equal to 1"):
        load_settings()


def test_command_line_subprocess_json_only_on_stdout(tmp_path):
    clip = make_clip_dir(tmp_path / "clip")
    config, ckpt = make_vqgan_files(tmp_path / "vqgan")
    env = dict(os.environ, CLIP_MODEL=str(clip), VQGAN_CONFIG=str(config), VQGAN_CHECKPOINT=str(ckpt),
               CLIPBOT_DEVICE="cpu", OMP_NUM_THREADS="1", CLIPBOT_IMAGINE_CUTOUTS="4",
               CLIPBOT_IMAGINE_WIDTH="32", CLIPBOT_IMAGINE_HEIGHT="32", CLIPBOT_IMAGINE_MIN_SIDE="8")
    out = tmp_path / "o.png"
    proc = subprocess.run(
        [sys.executable, "-m", "worker", "imagine", "a red circle", "--out", str(out), "--gif",
         str(tmp_path / "o.gif"), "--steps", "3", "--seed", "1", "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["steps"] == 3 and report["seed"] == 1 and out.is_file()
    assert Image.open(io.BytesIO(out.read_bytes())).size == (32, 32)


def test_bad_prompt_fails_before_loading_models(tmp_path, capsys, monkeypatch):
    from worker.cli import main

    monkeypatch.setenv("VQGAN_CHECKPOINT", str(tmp_path / "never-loaded.ckpt"))
    assert main(["imagine", "a:1 | b:-1", "--out", str(tmp_path / "o.png"), "--json"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "sum to zero" in captured.err


def test_count_writes_every_picture_and_the_grid(tmp_path, capsys):
    from worker.imagine.variations import VariationsEngine

    engine = VariationsEngine(ImagineEngine(*tiny_models(tmp_path / "m"), tiny_config(steps=3)))
    runner = LocalRunner(WorkerSetup(imagine_engine=engine))
    args = args_for("a red circle", "--out", str(tmp_path / "a.png"), "--gif", str(tmp_path / "a.gif"),
                    "--seed", "9", "--count", "3", "--json")
    capsys.readouterr()  # the model loader's own print
    assert imagine_main(args, runner) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["seed"] == 9 and report["grid"] == str(tmp_path / "a-grid.png")
    assert [(p["out"], p["seed"]) for p in report["pictures"]] == [
        (str(tmp_path / "a.png"), 9), (str(tmp_path / "a-2.png"), 10), (str(tmp_path / "a-3.png"), 11)]
    for name, seed in (("a.png", 9), ("a-2.png", 10), ("a-3.png", 11)):
        assert Image.open(tmp_path / name).text["seed"] == str(seed)
    assert Image.open(tmp_path / "a-3.gif").is_animated and Image.open(tmp_path / "a-grid.png").size == (104, 32)
    with pytest.raises(JobError, match="--count must be between 1 and 4"):
        imagine_main(args_for("x", "--out", str(tmp_path / "b.png"), "--count", "5"), runner)


def test_the_plain_engine_refuses_a_count_it_would_ignore(runner, tmp_path):
    with pytest.raises(JobError, match="one picture per job"):
        runner.run(ImagineJob(prompt="a", count=2))
