"""Settings: every knob from the environment or .env, validated, errors naming the variable."""
from __future__ import annotations

from pathlib import Path

import pytest

from jobs.settings import ImagineConfig, Settings, SettingsError, env_name, load_settings, markdown_table

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for field in Settings.model_fields:
        monkeypatch.delenv(env_name(field), raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_defaults():
    s = load_settings()
    assert s.redis_url is None and s.user_max_jobs == 3 and s.max_deliveries == 3
    assert s.clip_model == "models/clip-shapes" and s.vqgan_checkpoint == "models/vqgan-shapes/last.ckpt"
    assert s.data_dir == Path("data") and s.device == "auto"


def test_well_known_names_have_no_prefix_others_do(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://h:1/0")
    monkeypatch.setenv("CLIP_MODEL", "/m/clip")
    monkeypatch.setenv("DATA_DIR", "/tmp/x")
    monkeypatch.setenv("CLIPBOT_USER_MAX_JOBS", "7")
    monkeypatch.setenv("CLIPBOT_DEVICE", "cuda")
    monkeypatch.setenv("USER_MAX_JOBS", "99")  # unprefixed: not ours, ignored
    s = load_settings()
    assert (s.redis_url, s.clip_model, s.data_dir, s.user_max_jobs, s.device) == (
        "redis://h:1/0", "/m/clip", Path("/tmp/x"), 7, "cuda")
    assert env_name("redis_url") == "REDIS_URL" and env_name("user_max_jobs") == "CLIPBOT_USER_MAX_JOBS"


def test_dotenv_file_is_read_and_env_wins(monkeypatch, tmp_path):
    (tmp_path / ".env").write_text("DISCORD_TOKEN=from-file\nCLIPBOT_MAX_DELIVERIES=5\n")
    monkeypatch.setenv("CLIPBOT_MAX_DELIVERIES", "4")
    s = load_settings()
    assert s.discord_token == "from-file" and s.max_deliveries == 4


@pytest.mark.parametrize("var,value,needle", [
    ("CLIPBOT_USER_MAX_JOBS", "three", "valid integer"),
    ("CLIPBOT_USER_MAX_JOBS", "0", "greater than or equal to 1"),
    ("CLIPBOT_DEVICE", "tpu", "'auto', 'cpu' or 'cuda'"),
    ("CLIPBOT_VISIBILITY_TIMEOUT_S", "-1", "greater than 0"),
    ("CLIPBOT_BLOB_MAX_BYTES", "12", "greater than or equal to 1024"),
    ("CLIPBOT_IMAGINE_CANVAS", "#12345", "use white, black, grey, #rrggbb or nothing"),
    ("CLIPBOT_IMAGINE_CANVAS", "teal", "use white, black, grey, #rrggbb or nothing"),
    ("CLIPBOT_IMAGINE_CANVAS_WEIGHT", "-1", "greater than or equal to 0"),
])
def test_invalid_value_names_the_variable(monkeypatch, var, value, needle):
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError) as e:
        load_settings()
    assert var in str(e.value) and repr(value) in str(e.value) and needle in str(e.value)


def test_heartbeat_must_be_well_under_visibility(monkeypatch):
    monkeypatch.setenv("CLIPBOT_HEARTBEAT_S", "10")
    monkeypatch.setenv("CLIPBOT_VISIBILITY_TIMEOUT_S", "15")
    with pytest.raises(SettingsError, match="CLIPBOT_HEARTBEAT_S .* CLIPBOT_VISIBILITY_TIMEOUT_S"):
        load_settings()


def test_readme_configuration_table_is_in_sync():
    readme = (ROOT / "README.md").read_text()
    table = markdown_table()
    assert table in readme, "README's configuration table is stale: paste `python -m jobs.settings`"
    for field in Settings.model_fields:
        if field != "imagine":  # a group: one row per ImagineConfig field instead
            assert f"`{env_name(field)}`" in table
    for field in ImagineConfig.model_fields:
        assert f"`CLIPBOT_IMAGINE_{field.upper()}`" in table


def test_canvas_colours(monkeypatch):
    assert load_settings().imagine.canvas_rgb() == (128 / 255,) * 3  # grey by default
    monkeypatch.setenv("CLIPBOT_IMAGINE_CANVAS", "#FF8000")
    assert load_settings().imagine.canvas_rgb() == (1.0, 128 / 255, 0.0)
    monkeypatch.setenv("CLIPBOT_IMAGINE_CANVAS", "")
    assert load_settings().imagine.canvas_rgb() is None  # random codes
