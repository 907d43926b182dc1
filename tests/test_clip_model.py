"""worker.clip.model: loading (folder, hub cache, clear errors) and the three embedding calls."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import worker.clip.model as model_mod
from tests.clip_support import tiny_clip, tiny_clip_dir
from worker.clip.model import ClipLoadError, load_clip

REPO = Path(__file__).resolve().parent.parent


def test_loads_a_folder_with_its_own_processor():
    clip = tiny_clip()
    assert clip.device.type == "cpu" and clip.dtype == torch.float32  # auto on a CPU machine
    assert clip.image_size == 32 and clip.dim == 16
    assert clip.mean.flatten().tolist() == pytest.approx(clip.image_processor.image_mean)
    assert clip.logit_scale == pytest.approx(float(clip.model.logit_scale.exp()))
    assert clip.model_id.startswith(str(tiny_clip_dir()) + "@")


def test_embed_texts_normalised_and_cached():
    clip = tiny_clip()
    calls = []
    hook = clip.model.text_model.register_forward_hook(lambda *a: calls.append(1))
    try:
        a = clip.embed_texts(["a red circle", "a small blue star", "a red circle"])
        assert a.shape == (3, clip.dim) and a.dtype == torch.float32 and a.device.type == "cpu"
        assert torch.allclose(a.norm(dim=1), torch.ones(3), atol=1e-5)
        assert torch.equal(a[0], a[2]) and not torch.allclose(a[0], a[1])
        n = len(calls)
        b = clip.embed_texts(["a small blue star", "a red circle"])
        assert len(calls) == n  # both cached: the model did not run
        assert torch.equal(b[0], a[1])
    finally:
        hook.remove()


def test_text_cache_is_bounded(monkeypatch):
    clip = tiny_clip()
    monkeypatch.setattr(model_mod, "TEXT_CACHE_SIZE", 3)
    clip.embed_texts([f"shape number {i}" for i in range(10)])
    assert len(clip._text_cache) <= 3


def test_long_text_is_truncated_not_an_error():
    clip = tiny_clip()
    assert clip.embed_texts(["red " * 500]).shape == (1, clip.dim)


def test_embed_images_batching_does_not_change_results():
    clip = tiny_clip()
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (40 + i, 50, 3), dtype=np.uint8)) for i in range(5)]
    together = clip.embed_images(images, batch_size=32)
    one_by_one = clip.embed_images(images, batch_size=2)
    assert together.shape == (5, clip.dim)
    assert torch.allclose(together, one_by_one, atol=1e-5)
    assert torch.allclose(together.norm(dim=1), torch.ones(5), atol=1e-5)
    assert clip.embed_images([]).shape == (0, clip.dim)


def test_embed_pixels_matches_processor_path_and_is_differentiable():
    clip = tiny_clip()
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, (clip.image_size, clip.image_size, 3), dtype=np.uint8)
    via_processor = clip.embed_images([Image.fromarray(arr)])
    x = torch.tensor(arr).permute(2, 0, 1)[None].float().div(255).requires_grad_(True)
    via_pixels = clip.embed_pixels(x)
    assert via_pixels.shape == (1, clip.dim) and via_pixels.dtype == torch.float32
    assert torch.allclose(via_pixels.detach(), via_processor, atol=1e-4)
    (via_pixels @ clip.embed_texts(["a red circle"]).T).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    big = torch.rand(2, 3, clip.image_size * 2, clip.image_size * 2)  # other sizes are resized
    assert clip.embed_pixels(big).shape == (2, clip.dim)


def test_missing_folder_and_non_clip_folder_are_clear(tmp_path, monkeypatch):
    with pytest.raises(ClipLoadError, match="does not exist"):
        load_clip(tmp_path / "nope")
    with pytest.raises(ClipLoadError, match="no config.json"):
        load_clip(tmp_path)
    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)  # "models/clip-shapes" with a local models/ folder: a path, not a hub id
    with pytest.raises(ClipLoadError, match="'models/clip-shapes' does not exist"):
        load_clip("models/clip-shapes")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "clip"}')  # no weights, no processor
    with pytest.raises(ClipLoadError, match="Could not load the CLIP model in"):
        load_clip(broken)


def test_hub_ids_offline_from_cache_and_clear_error_when_missing(tmp_path):
    """In a fresh process (hub settings are read at import): HF_HUB_OFFLINE=1 and a private cache.

    A hub id present in the cache loads; one that is absent fails at once naming the model.
    """
    snapshot = tmp_path / "hub" / "models--clipbot-test--tiny-clip" / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_clip_dir(), snapshot)
    (tmp_path / "hub" / "models--clipbot-test--tiny-clip" / "refs").mkdir()
    (tmp_path / "hub" / "models--clipbot-test--tiny-clip" / "refs" / "main").write_text("0" * 40)
    script = textwrap.dedent("""
        from worker.clip.model import load_clip, ClipLoadError
        print(load_clip("clipbot-test/tiny-clip").dim)
        try:
            load_clip("openai/clip-vit-base-patch32")
        except ClipLoadError as e:
            print("ERROR:", e)
    """)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "hub"), PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "16"
    assert lines[1].startswith("ERROR: CLIP model 'openai/clip-vit-base-patch32' is not on disk")
    assert "HF_HUB_OFFLINE" in lines[1]


def test_big_images_are_box_reduced_first_with_the_same_embedding():
    clip = tiny_clip()
    yy, xx = np.mgrid[0:1000, 0:1300]
    arr = np.stack([xx * 255 // 1300, yy * 255 // 1000, (xx + yy) * 255 // 2300], -1).astype(np.uint8)
    big = Image.fromarray(arr)
    fast = clip.embed_images([big])  # reduced to >= 2x image_size before the processor
    with torch.no_grad():  # the processor alone, on the full-size image
        px = clip.image_processor(images=[big], return_tensors="pt")["pixel_values"]
        exact = torch.nn.functional.normalize(clip.model.get_image_features(pixel_values=px).pooler_output, dim=-1)
    assert float(fast[0] @ exact[0]) > 0.999


@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])
def test_vision_tower_matches_transformers_values_and_gradients(tmp_path, act):
    """embed_pixels runs worker/clip/vision.py's tower: the same numbers as get_image_features."""
    from transformers import CLIPModel

    from tests.factories import make_clip_dir

    path = make_clip_dir(tmp_path / "clip", image_size=32, seed=3)
    model = CLIPModel.from_pretrained(path)
    model.config.vision_config.hidden_act = act
    model = CLIPModel(model.config)  # fresh random weights with that activation
    for p in model.parameters():  # give every weight (biases, norms, class token) a real value
        torch.nn.init.normal_(p, std=0.2)
    model.save_pretrained(path)
    clip = load_clip(path, "cpu")
    assert clip.model.config.vision_config.hidden_act == act
    x = torch.rand(5, 3, 32, 32, dtype=torch.float64).float()
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ours = clip.embed_pixels(xa)
    plain = clip.model.get_image_features(pixel_values=(xb - clip.mean) / clip.std).pooler_output
    plain = torch.nn.functional.normalize(plain, dim=-1)
    assert torch.allclose(ours, plain, atol=1e-5), (ours - plain).abs().max()
    t = torch.randn(clip.dim)
    (ours @ t).sum().backward()
    (plain @ t).sum().backward()
    assert xa.grad.abs().max() > 0
    assert torch.allclose(xa.grad, xb.grad, atol=1e-5, rtol=1e-4), (xa.grad - xb.grad).abs().max()


def test_vision_tower_matches_transformers_on_the_shipped_model():
    from pathlib import Path

    shipped = Path(__file__).resolve().parent.parent / "models" / "clip-shapes"
    clip = load_clip(shipped, "cpu")
    x = torch.rand(8, 3, clip.image_size, clip.image_size)
    plain = clip.model.get_image_features(pixel_values=(x - clip.mean) / clip.std).pooler_output
    assert torch.allclose(clip.embed_pixels(x), torch.nn.functional.normalize(plain, dim=-1), atol=1e-5)
