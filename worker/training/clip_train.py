"""Contrastive training of a small transformers CLIPModel on the shapes world (CLIP paper, sec. 2.3).

The loss is the symmetric cross-entropy over the batch's image-caption similarity matrix with a
learned temperature. One change from the paper: in a world of 32 (colour, shape) classes a batch of
256 holds several true captions per image, so each row's target spreads evenly over every caption
that fits the image (`data.fit_matrix`) instead of calling true captions negatives.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

from worker.training import shapes as S
from worker.training.schedule import lr_at, time_frac
from worker.training.data import (
    CLIP_MEAN, CLIP_STD, ScenePool, captions_with_facts, fit_matrix, flip_rotate, normalise_clip, scene_truth,
)
from worker.training.tokenizer import save_tokenizer, train_tokenizer


@dataclass
class ClipModelConfig:
    image_size: int = 64
    patch_size: int = 8
    vision_width: int = 96
    vision_layers: int = 3
    vision_heads: int = 4
    text_width: int = 96
    text_layers: int = 2
    text_heads: int = 4
    projection_dim: int = 96
    context_length: int = 32
    vocab_size: int = 600  # bytes + a few hundred merges learned from our captions


@dataclass
class ClipTrainConfig:
    steps: int = 3000
    batch_size: int = 128
    lr: float = 1e-3
    warmup: int = 150
    min_lr_frac: float = 0.03
    weight_decay: float = 0.1
    pool_size: int = 6144
    refresh_per_step: int = 24
    seed: int = 0
    minutes: float | None = None  # wall-clock cap: the cosine schedule follows the clock when it is the tighter limit
    save_every: int = 100
    log_every: int = 25
    # Auxiliary shape classifier on the image embeddings (dropped when saving). Colour is learnt from
    # the contrastive loss alone within a few hundred steps; shape is not, and a direct 4-way signal
    # on single-shape images speeds up the vision tower's shape features.
    shape_aux_weight: float = 1.0


def build_clip(tokenizer, cfg: ClipModelConfig) -> CLIPModel:
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=cfg.text_width, intermediate_size=4 * cfg.text_width,
            num_hidden_layers=cfg.text_layers, num_attention_heads=cfg.text_heads,
            max_position_embeddings=cfg.context_length,
            # pad == eos: the text pooler takes the first eos, i.e. the end of the caption.
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(
            hidden_size=cfg.vision_width, intermediate_size=4 * cfg.vision_width,
            num_hidden_layers=cfg.vision_layers, num_attention_heads=cfg.vision_heads,
            image_size=cfg.image_size, patch_size=cfg.patch_size,
        ),
        projection_dim=cfg.projection_dim,
    )
    return CLIPModel(config)


def image_processor(cfg: ClipModelConfig) -> CLIPImageProcessor:
    return CLIPImageProcessor(
        size={"shortest_edge": cfg.image_size},
        crop_size={"height": cfg.image_size, "width": cfg.image_size},
        image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD),
    )


def save_clip(model: CLIPModel, tokenizer, cfg: ClipModelConfig, out: Path, meta: dict | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    save_tokenizer(tokenizer, out, max_length=cfg.context_length)
    CLIPProcessor(image_processor=image_processor(cfg), tokenizer=tokenizer).save_pretrained(out)
    if meta is not None:
        (out / "training.json").write_text(json.dumps(meta, indent=2) + "\n")


class CaptionTokens:
    """Tokenise captions once each (a batch repeats many), padded to the batch's longest."""

    def __init__(self, tokenizer, context_length: int):
        self.tok, self.n, self.cache = tokenizer, context_length, {}

    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = []
        for t in texts:
            if t not in self.cache:
                self.cache[t] = self.tok(t, truncation=True, max_length=self.n)["input_ids"]
            ids.append(self.cache[t])
        width = max(len(x) for x in ids)
        pad = self.tok.pad_token_id
        input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in ids])
        mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])
        return input_ids, mask


def contrastive_loss(image_embeds, text_embeds, logit_scale, fits: torch.Tensor) -> torch.Tensor:
    """Symmetric cross-entropy; `fits[i, j]` = caption j fits image i (targets spread over the fits)."""
    logits = logit_scale.exp() * image_embeds @ text_embeds.t()
    t_img = fits / fits.sum(1, keepdim=True)
    t_txt = fits.t() / fits.t().sum(1, keepdim=True)
    loss_i = -(t_img * F.log_softmax(logits, 1)).sum(1).mean()
    loss_t = -(t_txt * F.log_softmax(logits.t(), 1)).sum(1).mean()
    return (loss_i + loss_t) / 2


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=lr, betas=(0.9, 0.98), eps=1e-6,
    )


def train_clip(
    out: str | Path | None,
    cfg: ClipTrainConfig = ClipTrainConfig(),
    mcfg: ClipModelConfig = ClipModelConfig(),
    log: Callable[[str], None] = print,
    resume: str | Path | None = None,
) -> dict:
    """Train from scratch (or continue the model saved in `resume` with a fresh schedule); saves to
    `out` every `save_every` steps and at the end. Returns a summary with the loss history."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    t0 = time.time()
    if resume is not None:
        tokenizer = CLIPTokenizer.from_pretrained(str(resume))
        model = CLIPModel.from_pretrained(str(resume))
        model.train()
        log(f"clip: continuing from {resume}")
    else:
        tokenizer = train_tokenizer(S.caption_corpus(cfg.seed), vocab_size=mcfg.vocab_size)
        model = build_clip(tokenizer, mcfg)
    tokens = CaptionTokens(tokenizer, mcfg.context_length)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"clip: {n_params / 1e6:.2f}M params, vocab {len(tokenizer)}; rendering a pool of {cfg.pool_size} scenes")
    pool = ScenePool(cfg.seed, cfg.pool_size, mcfg.image_size, "train")
    log(f"clip: pool ready in {time.time() - t0:.0f}s")
    shape_head = torch.nn.Linear(model.config.projection_dim, len(S.SHAPES))
    opt = make_optimizer(torch.nn.ModuleList([model, shape_head]), cfg.lr, cfg.weight_decay)
    total, losses, t_train = cfg.steps, [], time.time()
    out = Path(out) if out is not None else None
    step = 0
    while step < total:
        idx = rng.choice(len(pool), cfg.batch_size, replace=False)
        texts, facts = captions_with_facts(pool, idx, rng)
        fits = fit_matrix(facts, [scene_truth(*pool.specs[i]) for i in idx])
        pixels = normalise_clip(flip_rotate(pool.images[torch.from_numpy(idx)], gen))
        input_ids, mask = tokens(texts)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, cfg, time_frac(t0, cfg.minutes))
        outputs = model(input_ids=input_ids, attention_mask=mask, pixel_values=pixels)
        loss = contrastive_loss(outputs.image_embeds, outputs.text_embeds, model.logit_scale, fits)
        if cfg.shape_aux_weight:
            shapes = torch.tensor([S.SHAPES.index(pool.specs[i][0][0].shape) if len(pool.specs[i][0]) == 1 else -100 for i in idx])
            loss = loss + cfg.shape_aux_weight * F.cross_entropy(shape_head(outputs.image_embeds * 10), shapes, ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(loss.item())
        step += 1
        pool.refresh(cfg.refresh_per_step)
        if cfg.minutes is not None and step < total and time.time() - t0 >= cfg.minutes * 60:
            total = step  # wall-clock budget spent: stop here (the schedule below already reached its end)
            log(f"clip: time budget reached at step {step}")
        if step % cfg.log_every == 0 or step == total:
            rate = step / (time.time() - t_train)
            log(
                f"clip step {step}/{total} loss {np.mean(losses[-cfg.log_every:]):.4f} "
                f"T {model.logit_scale.exp().item():.1f} lr {opt.param_groups[0]['lr']:.2e} {rate:.2f} steps/s"
            )
        if out is not None and (step % cfg.save_every == 0 or step == total):
            save_clip(model, tokenizer, mcfg, out)
    summary = {
        "params": n_params, "steps": total, "resumed_from": str(resume) if resume else None, "batch_size": cfg.batch_size,
        "seconds": round(time.time() - t0, 1), "steps_per_s": round(total / (time.time() - t_train), 3),
        "first_loss": round(float(np.mean(losses[:10])), 4), "final_loss": round(float(np.mean(losses[-50:])), 4),
        "train_config": asdict(cfg), "model_config": asdict(mcfg),
    }
    if out is not None:
        save_clip(model, tokenizer, mcfg, out, meta=summary)
    return {**summary, "losses": losses}
