"""The models the benchmarks run: the shipped ones, or random models of the same architecture.

Timing depends on the architecture, not on the weights, so when the shipped models are absent
(e.g. still training) we build random ones with the shipped shapes and say so in the results.
The real-size models (CLIP ViT-B/32, VQGAN f16_16384) are always random: no hub here, and the
same compute as the released weights.
"""
from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_CLIP = ROOT / "models" / "clip-shapes"
SHIPPED_VQGAN = ROOT / "models" / "vqgan-shapes"

# The shipped architectures (models/*/config), used for random stand-ins when the files are absent.
SHAPES_CLIP = dict(
    text=dict(hidden_size=96, intermediate_size=384, num_hidden_layers=2, num_attention_heads=4,
              max_position_embeddings=32),
    vision=dict(hidden_size=96, intermediate_size=384, num_hidden_layers=3, num_attention_heads=4,
                image_size=64, patch_size=8),
    projection_dim=96,
)
SHAPES_VQGAN = dict(
    embed_dim=32, n_embed=512,
    ddconfig=dict(double_z=False, z_channels=32, resolution=64, in_channels=3, out_ch=3, ch=32,
                  ch_mult=[1, 2, 2], num_res_blocks=1, attn_resolutions=[], dropout=0.0),
)
# taming's vqgan_imagenet_f16_16384 (configs/model.yaml of the release).
F16_16384_VQGAN = dict(
    embed_dim=256, n_embed=16384,
    ddconfig=dict(double_z=False, z_channels=256, resolution=256, in_channels=3, out_ch=3, ch=128,
                  ch_mult=[1, 1, 2, 2, 4], num_res_blocks=2, attn_resolutions=[16], dropout=0.0),
)

_cache: dict[str, Path] = {}
_tmp = Path(tempfile.mkdtemp(prefix="clipbot-bench-"))


def shipped_present() -> dict[str, bool]:
    return {
        "clip": (SHIPPED_CLIP / "config.json").is_file() and any(SHIPPED_CLIP.glob("*.safetensors")),
        "vqgan": (SHIPPED_VQGAN / "model.yaml").is_file() and (SHIPPED_VQGAN / "last.ckpt").is_file(),
    }


def _clip_config(arch: dict | None, vocab: int, bos: int, eos: int, pad: int):
    from transformers import CLIPConfig

    if arch is None:  # transformers' CLIPConfig defaults are exactly ViT-B/32's shapes
        cfg = CLIPConfig()
        # keep the 49408-row token embedding (same parameter count); our tokenizer uses the first ids
        cfg.text_config.bos_token_id, cfg.text_config.eos_token_id, cfg.text_config.pad_token_id = bos, eos, pad
        return cfg
    return CLIPConfig(
        text_config=dict(vocab_size=vocab, bos_token_id=bos, eos_token_id=eos, pad_token_id=pad, **arch["text"]),
        vision_config=dict(arch["vision"]), projection_dim=arch["projection_dim"],
    )


def random_clip_dir(kind: str) -> Path:
    """A random CLIP folder in HF format: kind 'shapes' (shipped architecture) or 'vit-b-32'."""
    if kind in _cache:
        return _cache[kind]
    from transformers import CLIPImageProcessor, CLIPModel

    from tests.factories import _CORPUS
    from worker.training.tokenizer import save_tokenizer, train_tokenizer

    out = _tmp / f"clip-{kind}"
    torch.manual_seed(0)
    tok = train_tokenizer(_CORPUS, vocab_size=400)
    arch = SHAPES_CLIP if kind == "shapes" else None
    config = _clip_config(arch, len(tok), tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
    CLIPModel(config).save_pretrained(out)
    save_tokenizer(tok, out, max_length=config.text_config.max_position_embeddings)
    s = config.vision_config.image_size
    CLIPImageProcessor(size={"shortest_edge": s}, crop_size={"height": s, "width": s}).save_pretrained(out)
    _cache[kind] = out
    return out


def random_vqgan_files(kind: str) -> tuple[Path, Path]:
    """A random taming VQGAN (yaml + checkpoint of the decoder side only, which is all generation
    loads): kind 'shapes' (shipped architecture) or 'f16_16384'."""
    key = "vq-" + kind
    if key in _cache:
        d = _cache[key]
        return d / "model.yaml", d / "last.ckpt"
    from worker.vqgan_compat import import_vqmodel

    params = dict(SHAPES_VQGAN if kind == "shapes" else F16_16384_VQGAN)
    params["lossconfig"] = {"target": "torch.nn.Identity"}
    out = _tmp / key
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    with contextlib.redirect_stdout(sys.stderr):
        model = import_vqmodel()(**params)
    keep = ("decoder.", "post_quant_conv.", "quantize.embedding.")
    state = {k: v for k, v in model.state_dict().items() if k.startswith(keep)}
    # taming initialises the codebook uniformly in +-1/n_embed: a real one spans a wider range
    state["quantize.embedding.weight"] = torch.randn_like(state["quantize.embedding.weight"])
    (out / "model.yaml").write_text(yaml.safe_dump({"model": {"target": "taming.models.vqgan.VQModel",
                                                              "params": params}}))
    torch.save({"state_dict": state}, out / "last.ckpt")
    _cache[key] = out
    return out / "model.yaml", out / "last.ckpt"


def shapes_models(device: str = "cpu"):
    """(clip, vqgan, note): the shipped models, or random ones of the shipped architecture."""
    from worker.clip.model import load_clip
    from worker.imagine.vqgan import load_vqgan

    have = shipped_present()
    clip_dir = SHIPPED_CLIP if have["clip"] else random_clip_dir("shapes")
    vq = (SHIPPED_VQGAN / "model.yaml", SHIPPED_VQGAN / "last.ckpt") if have["vqgan"] else random_vqgan_files("shapes")
    with contextlib.redirect_stdout(sys.stderr):
        clip, vqgan = load_clip(clip_dir, device), load_vqgan(*vq, device)
    note = {"clip": "shipped" if have["clip"] else "random (shipped architecture; models/clip-shapes absent)",
            "vqgan": "shipped" if have["vqgan"] else "random (shipped architecture; models/vqgan-shapes absent)"}
    return clip, vqgan, note


def tiny_models(device: str = "cpu"):
    """The test factories' tiny models (smoke mode)."""
    from tests.factories import make_clip_dir, make_vqgan_files
    from worker.clip.model import load_clip
    from worker.imagine.vqgan import load_vqgan

    if "tiny" not in _cache:
        make_clip_dir(_tmp / "tiny-clip")
        make_vqgan_files(_tmp / "tiny-vq")
        _cache["tiny"] = _tmp
    with contextlib.redirect_stdout(sys.stderr):
        return (load_clip(_tmp / "tiny-clip", device),
                load_vqgan(_tmp / "tiny-vq" / "model.yaml", _tmp / "tiny-vq" / "last.ckpt", device),
                {"clip": "tiny random (tests/factories)", "vqgan": "tiny random (tests/factories)"})
