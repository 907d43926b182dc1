"""taming's real file layouts: VQModel and GumbelVQ configs as published (loss, temperature
schedule, data sections) with Lightning checkpoints (pickled callback classes, loss.* weights)
load safely and paint."""
from __future__ import annotations

import math
import pickle
from pathlib import Path

import pytest
import torch

from tests.factories import tiny_taming_state, write_real_layout_config
from tests.imagine_support import RecordingContext, _one_thread  # noqa: F401
from tests.test_imagine_vqgan import _lightning_checkpoint
from worker.imagine.vqgan import load_vqgan

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def clip():
    from worker.clip.model import load_clip

    return load_clip(ROOT / "models" / "clip-shapes", "cpu")  # the shipped one: nothing to build


def _write(kind: str, folder: Path, monkeypatch) -> tuple[str, dict, Path]:
    state = tiny_taming_state(kind)
    write_real_layout_config(folder / "model.yaml", kind)
    _lightning_checkpoint(folder / "last.ckpt", monkeypatch, state)
    with pytest.raises(pickle.UnpicklingError):  # really needs the safe Lightning path
        torch.load(folder / "last.ckpt", weights_only=True)
    return kind, state, folder


@pytest.fixture(params=["VQModel", "GumbelVQ"])
def real_layout(request, tmp_path, monkeypatch):
    return _write(request.param, tmp_path, monkeypatch)


def test_real_layout_loads_only_the_generator(real_layout):
    kind, state, folder = real_layout
    vq = load_vqgan(folder / "model.yaml", folder / "last.ckpt", "cpu")
    key = "quantize.embed.weight" if kind == "GumbelVQ" else "quantize.embedding.weight"
    assert vq.kind == kind and torch.equal(vq.codebook, state[key]) and vq.factor == 2
    names = {n for n, _ in vq.named_parameters()}
    assert names and all(n.startswith(("decoder.", "post_quant_conv.")) for n in names)
    assert vq.has_encoder and vq.info()["kind"] == kind


def test_gumbel_encoder_picks_the_most_likely_code(tmp_path, monkeypatch):
    from tests.factories import _GUMBEL_EXTRA, TINY_VQGAN_PARAMS
    from worker.vqgan_compat import import_vqmodel

    _, state, folder = _write("GumbelVQ", tmp_path, monkeypatch)

    ref = import_vqmodel("GumbelVQ")(**dict(TINY_VQGAN_PARAMS, **_GUMBEL_EXTRA)).eval()
    ref.load_state_dict(state)
    x = torch.rand(2, 3, 16, 12, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = ref.quantize.proj(ref.encode_to_prequant(x * 2 - 1))
        expected = ref.quantize.embed.weight[logits.argmax(1)].movedim(-1, 1)
    vq = load_vqgan(folder / "model.yaml", folder / "last.ckpt", "cpu")
    z = vq.encode(x)
    assert z.shape == (2, 8, 8, 6) and torch.allclose(z, expected)
    assert torch.equal(vq.quantize(z), z)  # codes are codebook vectors: quantisation keeps them


def test_real_layout_paints_a_few_steps(real_layout, clip):
    from jobs.settings import ImagineConfig
    from worker.imagine.engine import imagine

    kind, _, folder = real_layout
    vq = load_vqgan(folder / "model.yaml", folder / "last.ckpt", "cpu")
    cfg = ImagineConfig(width=32, height=32, min_side=8, steps=3, cutouts=4, preview_every=1, gif_frames=4)
    ctx = RecordingContext()
    out = imagine(clip, vq, {"prompt": "a red circle", "seed": 3}, ctx, cfg)
    assert out.data["steps"] == 3 and out.data["width"] == 32 and out.blobs["png"][:4] == b"\x89PNG"
    assert [e[0] for e in ctx.events] == [1, 2, 3] and all(math.isfinite(e[2]) for e in ctx.events)
