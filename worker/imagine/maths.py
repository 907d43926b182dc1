"""The VQGAN+CLIP maths, as in the community notebooks (Crowson; nerdyrodent/VQGAN-CLIP, pixray):
the clamp that lets gradients back into range, the spherical distance loss, and the cutouts.

Batched: every function works on K jobs at once, each with its own torch.Generator, so a job's
randomness never depends on its batch-mates.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from jobs.settings import ImagineConfig


class ClampWithGrad(torch.autograd.Function):
    """Clamp in the forward pass; in the backward pass let gradients through unless they push
    further out of range (Crowson), so saturated pixels can still be pulled back."""

    @staticmethod
    def forward(ctx, x: Tensor, lo: float, hi: float) -> Tensor:
        ctx.lo, ctx.hi = lo, hi
        ctx.save_for_backward(x)
        return x.clamp(lo, hi)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        return grad * (grad * (x - x.clamp(ctx.lo, ctx.hi)) >= 0), None, None


def clamp_with_grad(x: Tensor, lo: float, hi: float) -> Tensor:
    return ClampWithGrad.apply(x, lo, hi)


def spherical_distance(a: Tensor, b: Tensor) -> Tensor:
    """Squared great-circle distance between unit vectors (broadcasting over leading dims)."""
    return (a - b).norm(dim=-1).div(2).arcsin().pow(2).mul(2)


def cutouts(image: Tensor, gens: list[torch.Generator], cfg: ImagineConfig, size: int) -> Tensor:
    """cfg.cutouts random augmented square crops per image, resized to `size` (CLIP's input side).
    image (K, 3, H, W); gens[k] draws image k's crops. Returns (K * cutouts, 3, size, size)."""
    s = size
    k, _, h, w = image.shape
    side = min(h, w)
    # Supersample only as far as cutouts are downscaled (anti-aliasing); never when upscaling.
    n, ss = cfg.cutouts, max(1, min(cfg.cut_supersample, math.ceil(side / s)))
    # Per job: one draw of 8 uniforms per cutout and one of noise, from that job's generator only.
    u = torch.stack([torch.rand(n, 8, generator=g, device=g.device) for g in gens]).to(image.device)
    cut_side = u[..., 0].pow(cfg.cut_pow) * (side - side * cfg.cut_min_size) + side * cfg.cut_min_size
    cx = (u[..., 1] * (w - cut_side) + cut_side / 2) / w * 2 - 1  # centre, normalised to [-1, 1]
    cy = (u[..., 2] * (h - cut_side) + cut_side / 2) / h * 2 - 1
    flip = torch.where(u[..., 3] < cfg.flip, -1.0, 1.0)
    angle = (u[..., 4] * 2 - 1) * math.radians(cfg.rotate_degrees)
    scale = 1 + (u[..., 5] * 2 - 1) * cfg.scale_jitter
    cos, sin = angle.cos() * scale, angle.sin() * scale
    # Output (x, y) in [-1, 1]^2 of the cutout -> input coords: centre + half-size * R(angle) * flip.
    ax, ay = cut_side / w, cut_side / h
    tx, ty = (u[..., 6] * 2 - 1) * cfg.translate, (u[..., 7] * 2 - 1) * cfg.translate
    theta = torch.stack([
        torch.stack([ax * cos * flip, -ax * sin, cx + ax * tx], -1),
        torch.stack([ay * sin * flip, ay * cos, cy + ay * ty], -1),
    ], -2)  # (K, n, 2, 3)
    grid = F.affine_grid(theta.view(k * n, 2, 3), [k * n, 3, s * ss, s * ss], align_corners=False)
    # Per job, one grid_sample of its n cutouts, each reading the job's image through a broadcast
    # view (no copy): the CPU backward then scatters in parallel over the n samples.
    cut = torch.cat([
        F.grid_sample(image[j:j + 1].expand(n, -1, -1, -1), grid[j * n:(j + 1) * n], mode="bilinear",
                      padding_mode="reflection", align_corners=False)
        for j in range(k)
    ])
    if ss > 1:
        cut = F.avg_pool2d(cut, ss)
    if cfg.noise > 0:
        noise = torch.stack([
            torch.randn(n, 3, s, s, generator=g, device=g.device)
            * torch.rand(n, 1, 1, 1, generator=g, device=g.device) for g in gens
        ])
        cut = cut + cfg.noise * noise.view(k * n, 3, s, s).to(cut.device)
    return cut
