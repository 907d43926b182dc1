"""A straightforward VQGAN+CLIP loop: the yardstick the engine's step is measured against.

The same algorithm as worker/imagine/engine.py (Crowson's notebook): a latent of the encoded plain
canvas held near it by an init-weight term (or of random codebook entries), straight-through
quantisation, decode, random square cutouts of a fraction of the side with a flip, a small
rotation/scale/translation and Gaussian noise, CLIP, squared spherical distance to the prompt
embeddings times their weights, Adam, clamp to the codebook's range.
Written the plain way, as in the notebook: one job, each cutout cropped with a slice and resized
on its own with F.interpolate in a Python loop, its augmentation applied on its own, nothing
fused or batched across jobs. It uses the same loaded models as the engine, CLIP as transformers
ships it (`get_image_features` on normalised pixels, as the notebook calls `encode_image`), and
nothing of the engine's step.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from jobs.settings import ImagineConfig
from jobs.validation.prompts import parse_prompts
from worker.imagine.maths import clamp_with_grad, spherical_distance


class ReferenceImagine:
    def __init__(self, clip, vqgan, prompt: str, seed: int, width: int, height: int,
                 config: ImagineConfig | None = None):
        self.clip, self.vqgan = clip, vqgan
        self.cfg = config or ImagineConfig()
        prompts = parse_prompts(prompt)
        self.targets = clip.embed_texts([p.text for p in prompts]).float()
        self.weights = torch.tensor([p.weight for p in prompts], dtype=torch.float32)
        self.gen = torch.Generator().manual_seed(seed)
        f = vqgan.factor
        rgb = self.cfg.canvas_rgb() if vqgan.has_encoder else None
        if rgb is None:  # random codes
            self.z = vqgan.random_latent(height // f, width // f, self.gen, self.cfg.init_grid)
            self.z_canvas = None
        else:  # the plain canvas, encoded; the loss holds the latent near it
            self.z = vqgan.plain_latent(rgb, height // f, width // f)
            self.z_canvas = self.z.clone()
        self.z.requires_grad_(True)
        self.opt = torch.optim.Adam([self.z], lr=self.cfg.lr)
        self.loss = math.nan

    def image(self) -> Tensor:
        z_q = self.vqgan.quantize(self.z)
        x = self.vqgan.decode(z_q)
        return clamp_with_grad(x.add(1).div(2), 0.0, 1.0)

    def cutouts(self, image: Tensor) -> Tensor:
        cfg, s = self.cfg, self.clip.image_size
        _, _, h, w = image.shape
        side = min(h, w)
        cuts = []
        for _ in range(cfg.cutouts):
            u = torch.rand(8, generator=self.gen).tolist()
            size = int(u[0] ** cfg.cut_pow * (side - side * cfg.cut_min_size) + side * cfg.cut_min_size)
            x0 = int(u[1] * (w - size + 1))
            y0 = int(u[2] * (h - size + 1))
            cut = image[:, :, y0:y0 + size, x0:x0 + size]
            cut = F.interpolate(cut, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
            if u[3] < cfg.flip:
                cut = cut.flip(-1)
            # the notebook's kornia RandomAffine, one cutout at a time
            angle = (u[4] * 2 - 1) * math.radians(cfg.rotate_degrees)
            scale = 1 + (u[5] * 2 - 1) * cfg.scale_jitter
            tx, ty = (u[6] * 2 - 1) * cfg.translate, (u[7] * 2 - 1) * cfg.translate
            c, sn = math.cos(angle) * scale, math.sin(angle) * scale
            theta = torch.tensor([[[c, -sn, tx], [sn, c, ty]]], dtype=cut.dtype)
            grid = F.affine_grid(theta, [1, 3, s, s], align_corners=False)
            cut = F.grid_sample(cut, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
            if cfg.noise > 0:
                std = torch.rand(1, generator=self.gen).item() * cfg.noise
                cut = cut + std * torch.randn(cut.shape, generator=self.gen)
            cuts.append(cut)
        return torch.cat(cuts)

    def embed(self, pixels: Tensor) -> Tensor:
        x = (pixels - self.clip.mean) / self.clip.std
        out = self.clip.model.get_image_features(pixel_values=x.to(self.clip.dtype)).pooler_output
        return F.normalize(out.float(), dim=-1)

    def step(self) -> Tensor:
        image = self.image()
        emb = self.embed(self.cutouts(image))  # (n, D)
        dists = spherical_distance(emb[:, None, :], self.targets[None])  # (n, P)
        loss = (dists.mean(0) * self.weights).sum()
        if self.z_canvas is not None and self.cfg.canvas_weight > 0:
            loss = loss + F.mse_loss(self.z, self.z_canvas) * (self.cfg.canvas_weight / 2)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.vqgan.clamp_(self.z)
        self.loss = float(loss.detach())
        return image.detach()

    @torch.no_grad()
    def final_image(self) -> Tensor:
        return self.image()
