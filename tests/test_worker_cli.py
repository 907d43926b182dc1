"""`python -m worker`: argument plumbing, local and --redis runners, progress bar, missing engines."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from jobs.schemas import FindJob, ImagineJob
from worker import cli
from worker.api import JobError
from worker.runner import LocalRunner, RedisRunner


@pytest.fixture
def echo_command(monkeypatch):
    """A fake subcommand served by tests.worker_fakes."""
    monkeypatch.setitem(cli.SUBCOMMANDS, "echo", ("tests.worker_fakes", "add_echo_arguments", "echo_main", "echo"))
    monkeypatch.setenv("CLIPBOT_HANDLERS", "tests.worker_fakes:build")


def test_local_run_json(echo_command, capsys):
    assert cli.main(["echo", "hello", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["data"]["query"] == "hello"
    assert out["events"] == ["queued", "started", "result"]


def test_local_run_progress_bar_on_stderr(echo_command, capsys):
    assert cli.main(["echo", "sleep:0.3"]) == 0
    cap = capsys.readouterr()
    assert cap.out.startswith("query sleep:0.3:")
    assert "echo" in cap.err and "5/5" in cap.err  # tqdm bar, on stderr only


def test_common_options_before_or_after_subcommand(echo_command):
    parser = cli.build_parser(["echo"])
    a = parser.parse_args(["--json", "echo", "q", "--clip-model", "/m"])
    b = parser.parse_args(["echo", "q", "--json", "--redis", "redis://x"])
    assert (a.json, a.clip_model, a.redis) == (True, "/m", None)
    assert (b.json, b.redis) == (True, "redis://x")


def test_job_error_exit_1(echo_command, capsys):
    assert cli.main(["echo", "error", "--json"]) == 1
    cap = capsys.readouterr()
    assert cap.out == "" and "bad query: try another" in cap.err


def test_bad_setting_exit_2(echo_command, monkeypatch, capsys):
    monkeypatch.setenv("CLIPBOT_MAX_DELIVERIES", "lots")
    assert cli.main(["echo", "x"]) == 2
    assert "CLIPBOT_MAX_DELIVERIES" in capsys.readouterr().err


def test_local_runner_drives_batch_engine():
    from tests.worker_fakes import build

    runner = LocalRunner(build(None))
    events = []
    out = runner.run(ImagineJob(prompt="p", steps=4), events.append)
    assert out.blobs["png"].startswith(b"\x89PNG")
    assert [e.type for e in events] == ["queued", "started"] + ["progress"] * 4 + ["result"]
    assert [e.seq for e in events] == list(range(1, 8))
    with pytest.raises(JobError, match="not allowed"):
        runner.run(ImagineJob(prompt="invalid"))


def test_redis_runner_through_worker_process(echo_command, redis_url, worker_procs, worker_env, capsys):
    worker_procs(redis_url, worker_env)
    assert cli.main(["echo", "sleep:0.3", "--json", "--redis", redis_url]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["data"]["query"] == "sleep:0.3" and out["data"]["pid"] != __import__("os").getpid()
    assert out["events"][:2] == ["queued", "started"] and out["events"][-1] == "result"
    assert "progress" in out["events"]
    # blobs go both ways through Redis
    from jobs.schemas import ClassifyJob

    runner = RedisRunner(redis_url, timeout_s=20)
    key = runner.put_blob(b"image bytes")
    res = runner.run(ClassifyJob(image=key, labels=["a", "b"]))
    assert res.blobs["echo"] == b"image bytes"
    with pytest.raises(JobError, match="bad query"):
        runner.run(FindJob(query="error"))


def test_python_m_worker_help_and_no_engines(tmp_path):
    r = subprocess.run([sys.executable, "-m", "worker", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "classify" in r.stdout and "imagine" in r.stdout
    # the worker with a handlers spec that does not exist fails clearly, without a traceback
    env = {"PATH": "/usr/bin:/bin", "CLIPBOT_HANDLERS": "no_such_module:build", "DATA_DIR": str(tmp_path / "d")}
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "worker"], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 2 and "CLIPBOT_HANDLERS='no_such_module:build'" in r.stderr
    assert "Traceback" not in r.stderr and time.monotonic() - t0 < 30
