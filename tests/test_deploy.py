"""Deployment files: compose structure, Dockerfile, Makefile and CI entry point.

No Docker engine runs here, so the compose file is checked structurally with YAML always, and
with `docker compose config` where the compose plugin exists.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_services_and_redis_persistence(compose):
    s = compose["services"]
    assert set(s) >= {"redis", "bot", "worker"}
    redis = s["redis"]
    assert redis["image"].startswith("redis:7")
    cmd = " ".join(redis["command"])
    assert "--appendonly yes" in cmd
    # a memory limit, and no eviction: job data must never be evicted (the blob budget refuses work first)
    assert "--maxmemory-policy noeviction" in cmd and "--maxmemory ${CLIPBOT_REDIS_MAXMEMORY:-2gb}" in cmd
    assert any(v.split(":")[1] == "/data" for v in redis["volumes"])
    assert "redis-data" in compose["volumes"]


def test_compose_worker_gpu_models_and_scaling(compose):
    w = compose["services"]["worker"]
    (dev,) = w["deploy"]["resources"]["reservations"]["devices"]
    assert dev["driver"] == "nvidia" and "gpu" in dev["capabilities"]
    assert any(v.endswith(":/app/models:ro") for v in w["volumes"])
    # --scale worker=N needs no fixed name and no host port
    assert "container_name" not in w and "ports" not in w
    assert w["command"] == ["python", "-m", "worker"]
    assert w["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    assert compose["services"]["bot"]["command"] == ["python", "-m", "bot"]


def test_compose_healthchecks_restart_and_order(compose):
    for name, svc in compose["services"].items():
        if name == "models":  # one-shot: runs to completion once per `up`
            assert svc["restart"] == "no" and svc["healthcheck"] == {"disable": True}
            continue
        assert svc.get("restart") in ("unless-stopped", "always"), name
        assert svc["healthcheck"]["test"][0] == "CMD", name
    for name in ("bot", "worker"):
        assert compose["services"][name]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_compose_models_service_fetches_into_the_workers_volume_first(compose):
    s = compose["services"]
    models, worker = s["models"], s["worker"]
    assert models["command"][:5] == ["python", "-m", "worker", "models", "fetch"] and "--configured" in models["command"]
    assert worker["depends_on"]["models"]["condition"] == "service_completed_successfully"
    assert "models:/app/models" in models["volumes"] and "models:/app/models:ro" in worker["volumes"]
    assert "models" in compose["volumes"]
    for svc in (models, worker):  # a host path in .env must not leak in as the container's folder
        assert svc["environment"]["CLIPBOT_MODELS_DIR"] == "/app/models"
        assert svc["build"]["target"] == "worker"
    assert s["bot"]["build"]["target"] == "bot" and s["bot"]["image"] != worker["image"]


def test_models_fetch_configured_is_a_no_op_without_catalogue_names(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("CLIP_MODEL", "VQGAN_MODEL")}
    r = subprocess.run([sys.executable, "-m", "worker", "models", "fetch", "--configured", "--dir", str(tmp_path)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "nothing to fetch" in r.stderr


def test_worker_healthcheck_command_really_works(compose, tmp_path):
    test = compose["services"]["worker"]["healthcheck"]["test"][1:]
    beat = tmp_path / "alive"
    argv = [sys.executable if a == "python" else str(beat) if a.endswith(".alive") else a for a in test]
    run = lambda: subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=ROOT)  # noqa: E731
    r = run()
    assert r.returncode == 1 and "unhealthy" in r.stderr  # no heartbeat yet
    beat.touch()
    assert run().returncode == 0
    old = time.time() - 3600
    os.utime(beat, (old, old))
    assert run().returncode == 1


def test_redis_healthcheck_against_real_server(redis_url):
    env = {**os.environ, "REDIS_URL": redis_url}
    r = subprocess.run([sys.executable, "-m", "jobs.health"], env=env, cwd=ROOT, timeout=60)
    assert r.returncode == 0
    env["REDIS_URL"] = "redis://127.0.0.1:1/0"
    r = subprocess.run([sys.executable, "-m", "jobs.health"], env=env, cwd=ROOT, timeout=60,
                       capture_output=True, text=True)
    assert r.returncode == 1 and "unhealthy: redis" in r.stderr


def _stages(text: str) -> dict[str, str]:
    parts = re.split(r"^FROM \S+ AS (\w+)\s*$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def test_dockerfile_bot_image_has_no_torch_and_the_worker_image_has():
    stages = _stages((ROOT / "Dockerfile").read_text())
    assert {"base", "bot", "worker"} <= set(stages)
    bot, worker = stages["bot"], stages["worker"]
    installs = " ".join(re.findall(r"pip install[^\n]*", bot))
    assert "torch" not in installs and "[worker]" not in installs and "COPY worker" not in bot
    assert "find_spec('torch') is not None" in bot  # the build fails if torch came in anyway
    assert "pip install ." in bot and "pip install '.[worker]'" in worker and "torch==2.13.0" in worker
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"])
    assert not any(name in core for name in ("torch", "transformers", "safetensors"))
    assert any(d.startswith("torch") for d in project["optional-dependencies"]["worker"])


def test_bot_never_imports_torch():
    """Everything the bot process imports loads with torch and transformers made unimportable."""
    code = ("import sys; sys.modules.update(torch=None, transformers=None, worker=None); "
            "import pkgutil, importlib, bot; "
            "[importlib.import_module(m.name) for m in pkgutil.walk_packages(bot.__path__, 'bot.')]; "
            "import jobs.queue, jobs.embedded, jobs.health, jobs.validation.images; print('ok')")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_dockerfile_installs_and_copies_what_exists():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11", text, re.M)
    assert "torch==2.13.0" in text and "--no-deps taming-transformers-rom1504==0.0.6" in text
    for src in re.findall(r"^COPY (\S+) ", text, re.M):
        assert (ROOT / src).exists(), src
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".env" in ignored  # no secrets or venv in the image


@pytest.mark.skipif(shutil.which("docker") is None or subprocess.run(
    ["docker", "compose", "version"], capture_output=True).returncode != 0,
    reason="docker compose plugin not installed (structure is checked by the tests above)")
def test_docker_compose_config_parses():
    r = subprocess.run(["docker", "compose", "config", "--quiet"], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "DISCORD_TOKEN": "x"}, timeout=120)
    assert r.returncode == 0, r.stderr


def test_makefile_install_steps_and_ci():
    r = subprocess.run(["make", "-n", "-B", "install"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "torch==2.13.0" in out and "install -e '.[worker,dev]'" in out
    assert "--no-deps taming-transformers-rom1504==0.0.6" in out and "touch .venv/.clipbot-installed" in out
    r = subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "-m pytest tests/" in r.stdout
    ci = (ROOT / ".ci" / "run").read_text()
    assert "set -euo pipefail" in ci and "make test" in ci and os.access(ROOT / ".ci" / "run", os.X_OK)
