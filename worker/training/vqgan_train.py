"""Training of a small taming VQModel (encoder, vector quantiser, decoder) on the shapes world.

Loss: L1 + MSE reconstruction, an image-gradient (edge) term so edges stay sharp without a
perceptual network (none can be downloaded), and taming's codebook/commitment loss. No adversarial
term: on flat-coloured shapes it adds training time and instability for little gain.

Codebook collapse is the usual failure of VQ training, so the codebook starts as a sample of encoder
outputs and every `restart_every` steps codes that no input chose are moved onto random current
encoder outputs. Saved in taming's own formats: model.yaml + a Lightning-style last.ckpt.
"""
from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from worker.training.data import ScenePool, flip_rotate
from worker.training.schedule import lr_at, time_frac
from worker.vqgan_compat import import_vqmodel

DEFAULT_DDCONFIG = dict(
    double_z=False, z_channels=32, resolution=64, in_channels=3, out_ch=3, ch=32,
    ch_mult=[1, 1, 2], num_res_blocks=1, attn_resolutions=[], dropout=0.0,
)  # factor 4: a 64x64 image is 16x16 codes. 32 channels (GroupNorm's minimum) at the two finer
# levels keeps the decoder cheap: imagine runs it forward and backward every step on the CPU.


@dataclass
class VqganModelConfig:
    embed_dim: int = 32
    n_embed: int = 512
    ddconfig: dict = field(default_factory=lambda: copy.deepcopy(DEFAULT_DDCONFIG))

    def params(self) -> dict:
        return {
            "embed_dim": self.embed_dim, "n_embed": self.n_embed, "ddconfig": copy.deepcopy(self.ddconfig),
            "lossconfig": {"target": "torch.nn.Identity"},
        }


@dataclass
class VqganTrainConfig:
    steps: int = 3000
    batch_size: int = 16
    crop: int = 32  # the model is convolutional: training on crops costs a quarter of full 64x64 images
    lr: float = 1e-3
    warmup: int = 100
    min_lr_frac: float = 0.05
    edge_weight: float = 0.5
    restart_every: int = 25
    autoencoder_frac: float = 0.1  # first steps skip quantisation so the codebook starts from useful features
    pool_size: int = 4096
    refresh_per_step: int = 8
    seed: int = 1
    minutes: float | None = None  # wall-clock cap: the cosine schedule follows the clock when it is the tighter limit
    save_every: int = 100
    log_every: int = 25


def build_vqgan(mcfg: VqganModelConfig = VqganModelConfig()) -> torch.nn.Module:
    return import_vqmodel()(**mcfg.params())


def save_vqgan(model: torch.nn.Module, mcfg: VqganModelConfig, out: Path, meta: dict | None = None) -> tuple[Path, Path]:
    """taming-style model.yaml and a Lightning-style {"state_dict": ...} last.ckpt."""
    out.mkdir(parents=True, exist_ok=True)
    cfg_path, ckpt_path = out / "model.yaml", out / "last.ckpt"
    cfg_path.write_text(yaml.safe_dump({"model": {"target": "taming.models.vqgan.VQModel", "params": mcfg.params()}}))
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    tmp = ckpt_path.with_suffix(".tmp")
    torch.save({"state_dict": state}, tmp)
    tmp.replace(ckpt_path)  # readers never see a half-written checkpoint
    if meta is not None:
        (out / "training.json").write_text(json.dumps(meta, indent=2) + "\n")
    return cfg_path, ckpt_path


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 (N,3,H,W) -> float in [-1, 1], taming's input range."""
    return x.float() / 127.5 - 1.0


def _diff_x(t: torch.Tensor) -> torch.Tensor:
    return t[..., :, 1:] - t[..., :, :-1]


def _diff_y(t: torch.Tensor) -> torch.Tensor:
    return t[..., 1:, :] - t[..., :-1, :]


def edge_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(_diff_x(x), _diff_x(y)) + F.l1_loss(_diff_y(x), _diff_y(y))


def random_crop(x: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    if size >= x.shape[-1]:
        return x
    top, left = torch.randint(0, x.shape[-1] - size + 1, (2,), generator=gen).tolist()
    return x[..., top : top + size, left : left + size]


def encode_pre_quant(model, x: torch.Tensor) -> torch.Tensor:
    """Encoder outputs before quantisation, flattened to (N, embed_dim)."""
    h = model.quant_conv(model.encoder(x))
    return h.permute(0, 2, 3, 1).reshape(-1, h.shape[1])


@torch.no_grad()
def restart_dead_codes(model, z: torch.Tensor, usage: torch.Tensor, gen: torch.Generator) -> int:
    dead = (usage == 0).nonzero().flatten()
    if len(dead):
        pick = torch.randint(0, len(z), (len(dead),), generator=gen)
        noise = 0.01 * z.std() * torch.randn(len(dead), z.shape[1], generator=gen)
        model.quantize.embedding.weight.data[dead] = z[pick] + noise
    return len(dead)


def train_vqgan(
    out: str | Path | None,
    cfg: VqganTrainConfig = VqganTrainConfig(),
    mcfg: VqganModelConfig = VqganModelConfig(),
    log: Callable[[str], None] = print,
    resume: str | Path | None = None,
) -> dict:
    """Train from scratch (or continue the checkpoint in folder `resume` with a fresh schedule)."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    t0 = time.time()
    model = build_vqgan(mcfg)
    if resume is not None:
        state = torch.load(Path(resume) / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
        model.load_state_dict(state)
        log(f"vqgan: continuing from {resume}")
    n_params = sum(p.numel() for p in model.parameters())
    log(f"vqgan: {n_params / 1e6:.2f}M params; rendering a pool of {cfg.pool_size} scenes")
    pool = ScenePool(cfg.seed + 1000, cfg.pool_size, mcfg.ddconfig["resolution"], "train")
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.5, 0.9))
    out = Path(out) if out is not None else None
    usage, used_frac = torch.zeros(mcfg.n_embed), float("nan")
    total, history, t_train, restarted, started_vq = cfg.steps, [], time.time(), 0, resume is not None
    step = 0
    while step < total:
        idx = torch.from_numpy(rng.choice(len(pool), cfg.batch_size, replace=False))
        x = to_unit(random_crop(flip_rotate(pool.images[idx], gen), cfg.crop, gen))
        quantising = started_vq or max(step / total, time_frac(t0, cfg.minutes)) >= cfg.autoencoder_frac
        if quantising and not started_vq:  # start the codebook on the trained encoder's own outputs
            started_vq = True
            with torch.no_grad():
                z = torch.cat([encode_pre_quant(model, to_unit(pool.images[torch.from_numpy(
                    rng.choice(len(pool), min(64, len(pool)), replace=False))])) for _ in range(2)])
                model.quantize.embedding.weight.data.copy_(z[torch.randperm(len(z), generator=gen)[: mcfg.n_embed]])
            log(f"vqgan: quantising from step {step}")
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, cfg, time_frac(t0, cfg.minutes))
        h = model.quant_conv(model.encoder(x))
        if quantising:
            quant, qloss, (_, _, indices) = model.quantize(h)
        else:
            quant, qloss, indices = h, torch.zeros(()), torch.zeros(0, dtype=torch.long)
        rec = model.decode(quant)
        l1, l2 = F.l1_loss(rec, x), F.mse_loss(rec, x)
        loss = l1 + l2 + cfg.edge_weight * edge_loss(rec, x) + qloss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        usage += torch.bincount(indices.flatten(), minlength=mcfg.n_embed).float()
        step += 1
        if step % cfg.restart_every == 0 and quantising:
            if step < 0.85 * total:
                z = h.detach().permute(0, 2, 3, 1).reshape(-1, h.shape[1])
                restarted += restart_dead_codes(model, z, usage, gen)
            used_frac = (usage > 0).float().mean().item()
            usage.zero_()
        with torch.no_grad():
            psnr = 10 * math.log10(4.0 / max(l2.item(), 1e-10))  # signal range 2 ([-1, 1])
        history.append((loss.item(), psnr))
        pool.refresh(cfg.refresh_per_step)
        if cfg.minutes is not None and step < total and time.time() - t0 >= cfg.minutes * 60:
            total = step  # wall-clock budget spent: stop here (the schedule below already reached its end)
            log(f"vqgan: time budget reached at step {step}")
        if step % cfg.log_every == 0 or step == total:
            h_arr = np.array(history[-cfg.log_every:])
            log(
                f"vqgan step {step}/{total} loss {h_arr[:, 0].mean():.4f} psnr {h_arr[:, 1].mean():.2f} "
                f"codes used {used_frac:.2f} restarted {restarted} "
                f"{step / (time.time() - t_train):.2f} steps/s"
            )
        if out is not None and (step % cfg.save_every == 0 or step == total):
            save_vqgan(model, mcfg, out)
    h_arr = np.array(history)
    summary = {
        "params": n_params, "steps": total, "resumed_from": str(resume) if resume else None, "batch_size": cfg.batch_size,
        "seconds": round(time.time() - t0, 1), "steps_per_s": round(total / (time.time() - t_train), 3),
        "first_loss": round(float(h_arr[:10, 0].mean()), 4), "final_loss": round(float(h_arr[-50:, 0].mean()), 4),
        "final_train_psnr": round(float(h_arr[-50:, 1].mean()), 2), "codes_restarted": restarted,
        "train_config": asdict(cfg), "model_config": asdict(mcfg),
    }
    if out is not None:
        save_vqgan(model, mcfg, out, meta=summary)
    return {**summary, "losses": [h[0] for h in history]}
