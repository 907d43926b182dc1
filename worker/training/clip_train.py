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
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

from worker.training import shapes as S
from worker.training.data import (
    CLIP_MEAN,
    CLIP_STD,
    ScenePool,
    captions_with_facts,
    fit_matrix,
    flip_rotate,
    normalise_clip,
    scene_truth,
)
from worker.training.schedule import lr_at, time_frac
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
    # Generalising to colour-shape pairs never seen in training (HELD_OUT_PAIRS). Left alone, both
    # towers learn the training set's colour prior: green is never a circle there, so a green circle
    # was called a green square (held-out pairs 37%, shape-only captions on them 14%: below chance).
    # Three remedies, each cheap:
    # - grey twins: this fraction of a batch is greyscale copies (random channel weights) of its
    #   single-shape scenes, captioned with the shape alone ("a star"). Greyscale carries no colour,
    #   so shape features must stand on their own (supervised proxy, 4 min: held-out 26% -> 52%);
    grey_frac: float = 0.3
    # - colour must not change what shape an image is: the image's similarities to the four
    #   shape-only captions are pulled towards its grey twin's (KL, the twin's side detached);
    consistency_weight: float = 1.0
    # - captions compose: the embedding of "a green square" is pulled towards the normalised sum of
    #   "a green shape" and "a square" over the training pairs, a rule that carries over to
    #   "a green circle", which the text tower never saw.
    composition_weight: float = 1.0
    # Hard negatives: this fraction of objects are blobs (shapes.BLOB: lumps, wobbly discs, ovals,
    # blunt stars, cut or half-hidden shapes) captioned "a {colour} blob", never with a shape name,
    # so that "a star" stops fitting a lump with a point. Off in `make models`: at 0.15 within its
    # 38.5 minutes, zero-shot fell from 95% to 76% and /imagine's shape fidelity from 31% to 22%
    # (stars 1/8 -> 6/8, every other shape worse); models/README.md.
    blob_frac: float = 0.0
    # Adversarial twins (fast adversarial training, Wong et al. 2020): this fraction of the batch's
    # single-shape images is replaced by a copy pushed one signed-gradient step of `adv_eps` (in
    # 0-255 pixel units, from a random start) away from its own shape under the shape head. A model
    # that keeps its answer under such pushes has gradients that change the shape, not the texture,
    # which is what /imagine follows. Off in `make models`: with blobs at 0.15 and 0.25 of the batch
    # at eps 8, zero-shot fell to 56% and shape fidelity to 16% in the same budget.
    adv_frac: float = 0.0
    adv_eps: float = 8.0
    # Mimetic attention init + 2-D sin-cos position embeddings for the vision tower (init_vision_tower).
    structured_init: bool = True


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


def init_vision_tower(model: CLIPModel, gen: torch.Generator) -> None:
    """Give the freshly initialised ViT the locality a CNN has for free, by initialisation alone.

    - Position embeddings start as 2-D sin-cos (MoCo v3), so patches know their neighbours at step 0.
    - Mimetic initialisation (Trockman & Kolter 2023, "Mimetic Initialization of Self-Attention
      Layers"): each head's W_q^T W_k starts near 0.7 Z + 0.7 I (attend to similar, i.e. nearby,
      tokens) and W_v^T W_o^T near 0.4 Z - 0.4 I, the pattern trained ViTs show.
    The architecture is unchanged, so the saved model still loads as a plain CLIPModel. Measured with
    a supervised 4-way shape proxy (4 minutes, one thread): 34% -> 57% test accuracy.
    """
    vm = model.vision_model
    width, heads = vm.config.hidden_size, vm.config.num_attention_heads
    head_dim, grid = width // heads, vm.config.image_size // vm.config.patch_size

    def near(alpha: float, sign: float) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.randn(width, width, generator=gen) / math.sqrt(width)
        u, s, vh = torch.linalg.svd(alpha * z + sign * alpha * torch.eye(width))
        return u * s.sqrt(), vh.t() * s.sqrt()  # a @ b.T == the target matrix

    with torch.no_grad():
        ys, xs = torch.meshgrid(torch.arange(grid, dtype=torch.float32), torch.arange(grid, dtype=torch.float32), indexing="ij")
        omega = 1.0 / 10000 ** (torch.arange(width // 4) / (width // 4))
        ox, oy = xs.flatten()[:, None] * omega, ys.flatten()[:, None] * omega
        pos = torch.cat([ox.sin(), ox.cos(), oy.sin(), oy.cos()], 1)
        vm.embeddings.position_embedding.weight.copy_(torch.cat([torch.zeros(1, width), pos]))  # row 0: CLS
        for layer in vm.encoder.layers:
            attn = layer.self_attn
            for h in range(heads):
                a, b = near(0.7, 1.0)
                rows = slice(h * head_dim, (h + 1) * head_dim)
                attn.q_proj.weight[rows] = a[:, :head_dim].t()
                attn.k_proj.weight[rows] = b[:, :head_dim].t()
            a, b = near(0.4, -1.0)
            attn.v_proj.weight.copy_(a.t())
            attn.out_proj.weight.copy_(b)


def greyscale(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """uint8 (N,3,H,W) -> the same images in grey, each with its own random channel weights."""
    w = torch.rand(len(x), 3, 1, 1, generator=gen)
    grey = (x.float() * (w / w.sum(1, keepdim=True))).sum(1, keepdim=True)
    return grey.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1)


# The training partial captions that name the shape and nothing else: "a {s}", "a photo of a {s}".
GREY_TEMPLATES = tuple(t for t in S.PARTIAL_TEMPLATES if t.count("{") == 1 and "{s}" in t)
SHAPE_NAMES = S.SHAPES + (S.BLOB,)  # the shape head's classes; "blob" only when training shows blobs
TRAIN_PAIRS = tuple((c, s) for c in S.COLOURS for s in S.SHAPES if (c, s) not in S.HELD_OUT_PAIRS)


def composition_captions() -> tuple[list[str], list[str], list[str]]:
    """Full, colour-only and shape-only captions of every training pair (templates all three seen in training)."""
    full = [f"{S.article(c)} {c} {s}" for c, s in TRAIN_PAIRS]
    return full, [f"{S.article(c)} {c} shape" for c, _ in TRAIN_PAIRS], [f"a {s}" for _, s in TRAIN_PAIRS]


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


def adversarial(model: CLIPModel, head: torch.nn.Linear, pixels: torch.Tensor, shapes: torch.Tensor, eps: float,
                gen: torch.Generator) -> torch.Tensor:
    """`pixels` (normalised) moved one signed-gradient step that raises the shape head's loss, from
    a random start inside the box of +-eps/255 per pixel (FGSM-RS, step 1.25 eps)."""
    scale = (eps / 255 / torch.tensor(CLIP_STD)).view(1, 3, 1, 1)
    lo, hi = normalise_clip(torch.zeros(1, 3, 1, 1)), normalise_clip(torch.full((1, 3, 1, 1), 255.0))
    delta = ((torch.rand(pixels.shape, generator=gen) * 2 - 1) * scale).requires_grad_(True)
    emb = model.get_image_features(pixel_values=pixels + delta).pooler_output
    loss = F.cross_entropy(head(F.normalize(emb, dim=-1) * 10), shapes, ignore_index=-100)
    (grad,) = torch.autograd.grad(loss, delta)
    delta = (delta.detach() + 1.25 * scale * grad.sign()).clamp(-scale, scale)
    return torch.maximum(torch.minimum(pixels + delta, hi), lo).detach()


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
        tokenizer = train_tokenizer(S.caption_corpus(cfg.seed, blobs=cfg.blob_frac > 0), vocab_size=mcfg.vocab_size)
        model = build_clip(tokenizer, mcfg)
        if cfg.structured_init:
            init_vision_tower(model, torch.Generator().manual_seed(cfg.seed))
    tokens = CaptionTokens(tokenizer, mcfg.context_length)
    n_twins = int(cfg.batch_size * cfg.grey_frac)
    shape_names = SHAPE_NAMES if cfg.blob_frac else S.SHAPES
    shape_captions = [f"a {s}" for s in shape_names]
    # Captions embedded every step besides the batch's: the four shape-only ones, then the
    # composition triples (full, colour-only, shape-only) of every training pair.
    extra = shape_captions + [c for group in composition_captions() for c in group] \
        if (cfg.consistency_weight or cfg.composition_weight) else []
    n_params = sum(p.numel() for p in model.parameters())
    log(f"clip: {n_params / 1e6:.2f}M params, vocab {len(tokenizer)}; rendering a pool of {cfg.pool_size} scenes")
    pool = ScenePool(cfg.seed, cfg.pool_size, mcfg.image_size, "train", blob_frac=cfg.blob_frac)
    log(f"clip: pool ready in {time.time() - t0:.0f}s")
    shape_head = torch.nn.Linear(model.config.projection_dim, len(shape_names))
    opt = make_optimizer(torch.nn.ModuleList([model, shape_head]), cfg.lr, cfg.weight_decay)
    total, losses, t_train = cfg.steps, [], time.time()
    out = Path(out) if out is not None else None
    step = 0
    while step < total:
        idx = rng.choice(len(pool), cfg.batch_size - n_twins, replace=False)
        texts, facts = captions_with_facts(pool, idx, rng)
        truths = [scene_truth(*pool.specs[i]) for i in idx]
        images = flip_rotate(pool.images[torch.from_numpy(idx)], gen)
        singles = [j for j, i in enumerate(idx) if len(pool.specs[i][0]) == 1]
        twins = [singles[k] for k in rng.permutation(len(singles))[:n_twins]]
        if twins:
            images = torch.cat([images, greyscale(images[twins], gen)])
            for j in twins:
                shape = truths[j]["shape"]
                texts.append(GREY_TEMPLATES[rng.integers(len(GREY_TEMPLATES))].format(s=shape))
                facts.append({"shapes": None, "colour": None, "shape": shape, "bg": None, "size": None})
                # Matches only captions that name the shape and nothing else.
                truths.append({**truths[j], "shapes": (("greyscale", shape),), "colour": "greyscale", "bg": "greyscale"})
        n_img = len(texts)
        fits = fit_matrix(facts, truths)
        pixels = normalise_clip(images)
        shapes = torch.tensor([shape_names.index(t["shape"]) if t["shape"] is not None else -100 for t in truths])
        if cfg.adv_frac and step >= cfg.warmup:
            chosen = [singles[k] for k in rng.permutation(len(singles))[: int(cfg.batch_size * cfg.adv_frac)]]
            if chosen:
                pixels[chosen] = adversarial(model, shape_head, pixels[chosen], shapes[chosen], cfg.adv_eps, gen)
        input_ids, mask = tokens(texts + extra)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, cfg, time_frac(t0, cfg.minutes))
        outputs = model(input_ids=input_ids, attention_mask=mask, pixel_values=pixels)
        img, txt = outputs.image_embeds, outputs.text_embeds
        loss = contrastive_loss(img, txt[:n_img], model.logit_scale, fits)
        if cfg.shape_aux_weight:
            loss = loss + cfg.shape_aux_weight * F.cross_entropy(shape_head(img * 10), shapes, ignore_index=-100)
        if extra:
            k = len(shape_captions)
            shape_txt, (full, colour_only, shape_only) = txt[n_img : n_img + k], txt[n_img + k :].chunk(3)
            if cfg.consistency_weight and twins:
                logits = model.logit_scale.exp() * img @ shape_txt.t()
                colour_side = F.log_softmax(logits[twins], 1)
                grey_side = F.log_softmax(logits[n_img - len(twins) : n_img], 1).detach()
                loss = loss + cfg.consistency_weight * F.kl_div(colour_side, grey_side, log_target=True, reduction="batchmean")
            if cfg.composition_weight:
                composed = F.normalize(colour_only + shape_only, dim=-1)
                loss = loss + cfg.composition_weight * (1 - (full * composed).sum(-1)).mean()
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
