"""Models by name: catalogue names resolve to fetched, verified folders; profiles; clear errors."""
from __future__ import annotations

import pytest

from jobs.settings import ImagineConfig, load_settings
from tests.imagine_support import RecordingContext, _one_thread  # noqa: F401
from tests.model_server import ModelServer
from worker.models import catalogue
from worker.models.resolve import apply_profile, resolve_models
from worker.models.store import ModelError, fetch_model

CLIP, VQ = "clip-vit-base-patch32", "vqgan_imagenet_f16_16384"


@pytest.fixture(scope="module")
def fetched(tmp_path_factory):
    """The tiny test CLIP and VQGAN, fetched by their catalogue names from a loopback hub/mirror."""
    from tests.factories import make_clip_dir, make_vqgan_files

    root = tmp_path_factory.mktemp("resolve")
    clip = make_clip_dir(root / "src-clip")
    config, ckpt = make_vqgan_files(root / "src-vq")
    with ModelServer() as srv, pytest.MonkeyPatch.context() as mp:
        for p in clip.iterdir():
            srv.files[f"/openai/{CLIP}/resolve/main/{p.name}"] = p.read_bytes()
        srv.files[f"/mirror/{VQ}/model.yaml"] = config.read_bytes()
        srv.files[f"/mirror/{VQ}/last.ckpt"] = ckpt.read_bytes()
        mp.setenv("HF_ENDPOINT", srv.url)
        models = root / "models"
        fetch_model(catalogue.get(CLIP), models, progress=False)
        fetch_model(catalogue.get(VQ), models, mirror=f"{srv.url}/mirror", progress=False)
    return models


def test_names_resolve_to_verified_folders_with_the_profile(fetched, monkeypatch):
    monkeypatch.setenv("CLIPBOT_IMAGINE_CUTOUTS", "12")  # explicit: wins over the profile
    monkeypatch.setenv("CLIP_MODEL", CLIP)
    monkeypatch.setenv("VQGAN_MODEL", VQ)
    monkeypatch.setenv("CLIPBOT_MODELS_DIR", str(fetched))
    s = resolve_models(load_settings())
    assert s.clip_model == str(fetched / CLIP)
    assert (s.vqgan_config, s.vqgan_checkpoint) == (str(fetched / VQ / "model.yaml"), str(fetched / VQ / "last.ckpt"))
    profile = catalogue.get(VQ).profile
    assert s.imagine.cutouts == 12
    assert (s.imagine.width, s.imagine.lr, s.imagine.canvas, s.imagine.cut_min_size) == (
        profile["width"], profile["lr"], profile["canvas"], profile["cut_min_size"])
    monkeypatch.setenv("VQGAN_CONFIG", "/elsewhere/model.yaml")  # explicit paths win over the name
    s = resolve_models(load_settings())
    assert s.vqgan_config == "/elsewhere/model.yaml" and s.imagine.width == ImagineConfig().width


def test_resolved_models_load_and_paint(fetched, monkeypatch):
    """The production wiring (worker.handlers.build) with catalogue names: a few imagine steps."""
    from worker.handlers import build
    from worker.imagine.engine import imagine

    settings = load_settings(clip_model=CLIP, vqgan_model=VQ, models_dir=fetched, engines="imagine", device="cpu")
    engine = build(settings).imagine_engine
    assert engine.config.width == catalogue.get(VQ).profile["width"]
    engine.config = engine.config.model_copy(update=dict(cutouts=4, min_side=8))
    out = imagine(engine.clip, engine.vqgan, {"prompt": "a red circle", "steps": 3, "width": 32, "height": 32,
                                              "seed": 1}, RecordingContext(), engine.config)
    assert out.data["steps"] == 3 and out.blobs["png"][:4] == b"\x89PNG"


def test_missing_or_damaged_models_say_how_to_fetch(fetched, tmp_path):
    with pytest.raises(ModelError, match=f"python -m worker models fetch {CLIP} --dir {tmp_path}"):
        resolve_models(load_settings(clip_model=CLIP, models_dir=tmp_path))
    with pytest.raises(ModelError, match="is a VQGAN model, not a CLIP one"):
        resolve_models(load_settings(clip_model=VQ, models_dir=fetched))
    with pytest.raises(ModelError, match="neither a folder nor a catalogue VQGAN"):
        resolve_models(load_settings(vqgan_model="vqgan_nonesuch", models_dir=fetched))
    # a plain folder works as VQGAN_MODEL too (no profile: it is not a catalogue model)
    s = resolve_models(load_settings(vqgan_model=str(fetched / VQ)))
    assert s.vqgan_checkpoint == str(fetched / VQ / "last.ckpt") and s.imagine == ImagineConfig()


def test_cli_names_the_fetch_command_for_a_missing_model(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "CLIP_MODEL": CLIP, "CLIPBOT_MODELS_DIR": str(tmp_path), "CLIPBOT_ENGINES": "clip"}
    img = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (32, 32)).save(img)
    r = subprocess.run([sys.executable, "-m", "worker", "classify", str(img), "--labels", "a,b"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"error: CLIP model {CLIP} is not in {tmp_path}/" in r.stderr
    assert f"python -m worker models fetch {CLIP} --dir {tmp_path}" in r.stderr


def test_apply_profile_keeps_explicit_values_explicit():
    cfg = ImagineConfig(width=96)
    out = apply_profile(cfg, {"width": 256, "height": 256}, {"height": 320})
    assert (out.width, out.height) == (96, 320) and out.model_fields_set == {"width", "height"}
    assert apply_profile(cfg) is cfg
    with pytest.raises(ValueError):
        apply_profile(ImagineConfig(), {"cutouts": 0})  # profiles are validated like any value
