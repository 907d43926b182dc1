"""The shipped models: generic loading, the quality bars on freshly drawn and foreign-rendered data,
size, and a tiny training run of each trainer that really lowers its loss."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from transformers import CLIPModel, CLIPProcessor

from worker.training import evaluate as E
from worker.training import foreign
from worker.training import shapes as S
from worker.training.clip_train import (
    TRAIN_PAIRS,
    ClipModelConfig,
    ClipTrainConfig,
    build_clip,
    composition_captions,
    greyscale,
    init_vision_tower,
    train_clip,
)
from worker.training.tokenizer import train_tokenizer
from worker.training.vqgan_train import VqganModelConfig, VqganTrainConfig, train_vqgan
from worker.vqgan_compat import import_vqmodel

MODELS = Path(__file__).resolve().parents[1] / "models"
CLIP_DIR, VQGAN_DIR = MODELS / "clip-shapes", MODELS / "vqgan-shapes"
FRESH_SEED = 424242  # never used by training (training seeds are 0 and 1..1001)


@pytest.fixture(scope="module")
def clip():
    # The generic hub loaders, exactly as for openai/clip-vit-base-patch32.
    model = CLIPModel.from_pretrained(str(CLIP_DIR)).eval()
    return model, CLIPProcessor.from_pretrained(str(CLIP_DIR))


@pytest.fixture(scope="module")
def vqgan():
    config = yaml.safe_load((VQGAN_DIR / "model.yaml").read_text())["model"]
    assert config["target"] == "taming.models.vqgan.VQModel"
    model = import_vqmodel()(**config["params"])
    ckpt = torch.load(VQGAN_DIR / "last.ckpt", map_location="cpu", weights_only=True)
    model.load_state_dict(ckpt["state_dict"], strict=True)
    return model.eval(), config["params"]


def test_shipped_weights_fit_the_size_budget():
    total = sum(p.stat().st_size for d in (CLIP_DIR, VQGAN_DIR) for p in d.iterdir() if p.is_file())
    assert total <= 25 * 1024 * 1024, total


def test_clip_config_matches_tokenizer(clip):
    model, processor = clip
    tok = processor.tokenizer
    cfg = model.config.text_config
    assert tok.pad_token_id == tok.eos_token_id == cfg.eos_token_id == cfg.pad_token_id
    assert cfg.bos_token_id == tok.bos_token_id
    ids = tok("a red circle")["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    size = model.config.vision_config.image_size
    px = processor(images=[foreign.draw("red", "circle", "grey", 0.5, 0.5, 0.5, size=200)], return_tensors="pt")
    assert tuple(px["pixel_values"].shape) == (1, 3, size, size)


def test_clip_zero_shot_on_fresh_scenes(clip):
    scenes = S.scenes(FRESH_SEED, 320, "test", n_shapes=1)
    labels = [(s.shapes[0].colour, s.shapes[0].shape) for s in scenes]
    result = E.zero_shot(*clip, [s.image for s in scenes], labels)
    assert result["accuracy"] >= 0.90, result


def test_clip_zero_shot_on_a_foreign_renderer(clip):
    drawn = foreign.sample(256, FRESH_SEED)
    result = E.zero_shot(*clip, [d[0] for d in drawn], [(d[1], d[2]) for d in drawn])
    assert result["accuracy"] >= 0.90, result


def test_clip_zero_shot_on_held_out_pairs(clip):
    """Colour-shape pairs never drawn in training: the model must compose colour and shape."""
    scenes = S.scenes(FRESH_SEED, 128, "heldout", n_shapes=1)
    labels = [(s.shapes[0].colour, s.shapes[0].shape) for s in scenes]
    result = E.zero_shot(*clip, [s.image for s in scenes], labels)
    assert result["colour_accuracy"] >= 0.9 and result["shape_accuracy"] >= 0.85, result
    assert result["accuracy"] >= 0.75, result


def test_clip_text_to_image_recall_at_5(clip):
    result = E.retrieval(*clip, FRESH_SEED, n=500)
    assert result["recall@5"] >= 0.90, result


def test_vqgan_reconstruction_psnr(vqgan):
    model, params = vqgan
    size = params["ddconfig"]["resolution"]
    images = [s.image for s in S.scenes(FRESH_SEED, 200, "test", size=size)]
    rec, codes = E.reconstruct(model, images)
    psnr = E.psnr(np.stack([np.asarray(im) for im in images]), rec)
    assert psnr.mean() >= 26.0, psnr.mean()
    assert len(np.unique(codes)) >= 0.25 * params["n_embed"]  # no codebook collapse


def test_vqgan_reconstructs_a_foreign_renderer(vqgan):
    """Generalisation check, not one of the bars in models/README.md (those are on shapes-world data): measured ~25.9 dB."""
    model, params = vqgan
    images = [d[0] for d in foreign.sample(64, FRESH_SEED, size=params["ddconfig"]["resolution"])]
    rec, _ = E.reconstruct(model, images)
    assert E.psnr(np.stack([np.asarray(im) for im in images]), rec).mean() >= 24.0


@pytest.fixture(scope="module")
def imagine_panel():
    """The imagine panel of models/README.md through the worker's engine at its default size and steps: 16
    "a <colour> <shape>" prompts, each picture judged by its dominant colours and the shipped CLIP."""
    report = E.imagine_report(CLIP_DIR, VQGAN_DIR, seed=FRESH_SEED, log=lambda m: None)
    assert report["prompts"] == 16
    return report, [(r["prompt"], r["background"], r["dominant"], r["clip_top"]) for r in report["rows"]]


# Each picture ends a chaotic 100-step optimisation, so another CPU's kernels can move single
# prompts; on this seed each bar holds with two prompts to spare (models/README.md).
def test_imagine_panel_paints_the_asked_colour_on_a_background(imagine_panel):
    report, rows = imagine_panel
    assert report["dominant_colour_rate"] >= 0.80, rows


# The shipped CLIP's own verdict is circular (the picture was optimised against it) and falls as the
# cutouts' jitter stops the picture from fooling it from one view: 75% with the earlier mild jitter,
# 62.5% with the default. The independent judge is the measure that counts (`eval`'s fidelity panel,
# 62.5% over 64 pictures); on these 16 prompts, half of them squares and stars, it names colour and
# shape for 6 of 16 with either jitter.
def test_imagine_panel_clip_ranks_the_asked_caption_first(imagine_panel):
    report, rows = imagine_panel
    assert report["clip_top1_rate"] >= 0.50, rows


def test_imagine_panel_independent_judge_names_the_asked_shape(imagine_panel):
    report, rows = imagine_panel
    assert report["judge_both_rate"] >= 0.25, [(r["prompt"], r["judged"]) for r in rows]


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from threads, and on a shared CPU extra threads only wait."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_tiny_clip_training_lowers_its_loss(one_thread):
    mcfg = ClipModelConfig(image_size=32, patch_size=8, vision_width=32, vision_layers=1, vision_heads=2,
                           text_width=32, text_layers=1, text_heads=2, projection_dim=32, vocab_size=400)
    cfg = ClipTrainConfig(steps=30, batch_size=32, lr=3e-3, warmup=3, pool_size=96, refresh_per_step=0, blob_frac=0.15, adv_frac=0.25,
                          save_every=10**9, log_every=10**9)
    out = train_clip(None, cfg, mcfg, log=lambda m: None)
    losses = out["losses"]
    assert len(losses) == 30 and np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.2, losses


def test_structured_init_gives_the_vit_locality_and_still_loads_as_clip(tmp_path):
    tok = train_tokenizer(S.caption_corpus(0, n=200), vocab_size=400)
    mcfg = ClipModelConfig(vision_width=64, vision_layers=2, vision_heads=4)
    model = build_clip(tok, mcfg)
    init_vision_tower(model, torch.Generator().manual_seed(0))
    vm = model.vision_model
    pos = vm.embeddings.position_embedding.weight[1:]  # row 0 is CLS
    grid = mcfg.image_size // mcfg.patch_size
    sim = torch.nn.functional.normalize(pos, dim=-1) @ torch.nn.functional.normalize(pos, dim=-1).t()
    # a patch's embedding is closer to its right-hand neighbour than to the far corner
    assert sim[0, 1] > sim[0, grid * grid - 1] + 0.2  # random init: both near 0
    head = 64 // 4
    attn = vm.encoder.layers[0].self_attn
    qk = attn.q_proj.weight[:head].t() @ attn.k_proj.weight[:head]  # W_q^T W_k of head 0 (~0.7 Z + 0.7 I)
    assert qk.diagonal().mean() > 3 * qk.abs().mean() / 2
    vo = attn.v_proj.weight.t() @ attn.out_proj.weight.t()  # ~0.4 Z - 0.4 I
    assert vo.diagonal().mean() < -0.2
    model.save_pretrained(tmp_path)
    again = CLIPModel.from_pretrained(str(tmp_path))
    assert torch.equal(again.vision_model.embeddings.position_embedding.weight, vm.embeddings.position_embedding.weight)


def test_grey_twins_and_composition_captions_never_show_a_held_out_pair():
    x = torch.from_numpy(np.stack([np.asarray(s.image) for s in S.scenes(3, 8, "train")])).permute(0, 3, 1, 2)
    g = greyscale(x, torch.Generator().manual_seed(0))
    assert g.dtype == torch.uint8 and g.shape == x.shape
    assert torch.equal(g[:, 0], g[:, 1]) and torch.equal(g[:, 1], g[:, 2])  # no colour left
    assert len(TRAIN_PAIRS) == 32 - len(S.HELD_OUT_PAIRS)
    full, colour_only, shape_only = composition_captions()
    assert len(full) == len(colour_only) == len(shape_only) == len(TRAIN_PAIRS)
    for c, sh in S.HELD_OUT_PAIRS:
        assert not any(c in f and sh in f for f in full)
    assert "an orange shape" in colour_only and "a star" in shape_only


def test_tiny_vqgan_training_lowers_its_loss(tmp_path, one_thread):
    dd = dict(double_z=False, z_channels=32, resolution=16, in_channels=3, out_ch=3, ch=32,
              ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[], dropout=0.0)
    mcfg = VqganModelConfig(embed_dim=8, n_embed=64, ddconfig=dd)
    cfg = VqganTrainConfig(steps=40, batch_size=8, crop=16, lr=2e-3, warmup=3, pool_size=8, refresh_per_step=0,
                           restart_every=10, save_every=10**9, log_every=10**9)
    out = train_vqgan(tmp_path / "vq", cfg, mcfg, log=lambda m: None)
    losses = out["losses"]
    assert len(losses) == 40 and np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses
    # What it saved loads through the generic taming path.
    model = E.load_vqgan(tmp_path / "vq" / "model.yaml", tmp_path / "vq" / "last.ckpt")
    assert model.quantize.n_e == 64


def test_adversarial_twins_stay_within_eps_and_raise_the_shape_loss(one_thread):
    from worker.training.clip_train import SHAPE_NAMES, adversarial
    from worker.training.data import CLIP_STD, normalise_clip, to_tensor

    tok = train_tokenizer(S.caption_corpus(0, n=200), vocab_size=400)
    mcfg = ClipModelConfig(image_size=32, patch_size=8, vision_width=32, vision_layers=1, vision_heads=2,
                           text_width=32, text_layers=1, text_heads=2, projection_dim=32)
    torch.manual_seed(0)
    model, head = build_clip(tok, mcfg), torch.nn.Linear(32, len(SHAPE_NAMES))
    scenes = S.scenes(2, 16, "train", size=32, n_shapes=1)
    pixels = normalise_clip(to_tensor([s.image for s in scenes]))
    shapes = torch.tensor([SHAPE_NAMES.index(s.shapes[0].shape) for s in scenes])
    moved = adversarial(model, head, pixels, shapes, 8.0, torch.Generator().manual_seed(0))
    step = (moved - pixels) * torch.tensor(CLIP_STD).view(1, 3, 1, 1) * 255  # back to 0-255 units
    assert step.abs().max() <= 8.0 + 1e-3 and step.abs().mean() > 4.0

    def loss(x):
        emb = torch.nn.functional.normalize(model.get_image_features(pixel_values=x).pooler_output, dim=-1)
        return torch.nn.functional.cross_entropy(head(emb * 10), shapes).item()

    with torch.no_grad():
        assert loss(moved) > loss(pixels)
