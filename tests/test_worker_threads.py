"""What the worker builds from its settings: torch threads (CLIPBOT_TORCH_THREADS) and which
engines, hence which lanes, it serves (CLIPBOT_ENGINES)."""
import os
import subprocess
import sys

import pytest

from jobs.settings import SettingsError, load_settings

CODE = """
import torch
from jobs.settings import load_settings
from worker.handlers import build
setup = build(load_settings())
print(torch.get_num_threads(), ",".join(sorted(setup.handlers)), setup.imagine_engine is not None, ",".join(setup.lanes()))
"""


def build_in_subprocess(**env) -> list[str]:
    proc = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip().split(" ")


def test_torch_threads_setting_applies_to_the_worker():
    threads, handlers, has_imagine, lanes = build_in_subprocess(CLIPBOT_TORCH_THREADS="1")
    assert threads == "1"
    assert {"classify", "index", "find"} <= set(handlers.split(","))
    assert has_imagine == "True" and set(lanes.split(",")) == {"fast", "imagine"}


def test_a_worker_can_serve_only_the_clip_lane():
    _, handlers, has_imagine, lanes = build_in_subprocess(CLIPBOT_ENGINES="clip", CLIPBOT_TORCH_THREADS="1")
    assert set(handlers.split(",")) == {"classify", "index", "find"}
    assert has_imagine == "False" and lanes == "fast"


def test_unknown_engine_is_refused(monkeypatch):
    monkeypatch.setenv("CLIPBOT_ENGINES", "clip,paint")
    with pytest.raises(SettingsError, match="CLIPBOT_ENGINES='clip,paint'.*use clip, imagine or clip,imagine"):
        load_settings()
