"""CLIP's image tower as plain PyTorch over a loaded checkpoint's own weights: the path VQGAN+CLIP
differentiates through on every step (~32 cutouts x 100 steps per job).

Same maths as transformers' `CLIPModel.get_image_features` (pre-LN ViT, class token, learned
positions, post-LN on the class token, projection), written with fewer and cheaper kernels for
the forward *and* backward pass, which is where an imagine step spends most of its time:

* the checkpoint's mean/std normalisation is folded into the patch projection, and the patch
  projection (a convolution whose stride equals its kernel) is one matmul over unfolded patches:
  on a CPU, `convolution_backward` for it cost ~7 ms of a ~85 ms step with the shipped models;
* quick_gelu, x * sigmoid(1.702 x), is computed as silu(1.702 x) / 1.702 with both scalings folded
  into copies of the neighbouring linear layers' weights: one fused activation kernel forward and
  one backward instead of five elementwise passes over the widest activation (~20% of a step);
* only the class token leaves the tower, so the last layer computes only its row (its query and
  its MLP; keys and values of every token): a third of the shipped tower's work, 1/12 of ViT-B/32's;
* q/k/v projections and attention as in the checkpoint (three linears, scaled_dot_product_attention).

Copied weights: the patch projection, and the MLPs' for quick_gelu checkpoints (ViT-B/32: ~230 MB
in float32, ~115 MB in float16; the shipped model: 0.6 MB).
Outputs match `get_image_features` to float rounding (tests/test_clip_model.py compares both, values
and input gradients, for the shipped model and random quick_gelu / gelu checkpoints).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_QUICK_GELU = 1.702  # quick_gelu(x) = x * sigmoid(1.702 x) = silu(1.702 x) / 1.702


class VisionTower:
    """`VisionTower(model, mean, std)(x)`: x [B, 3, S, S] in [0, 1] (S = the model's image size)
    -> [B, D] projected image features (not normalised), differentiable with respect to x."""

    def __init__(self, model, mean: Tensor, std: Tensor) -> None:
        vm = model.vision_model
        cfg = model.config.vision_config
        self.vm, self.projection = vm, model.visual_projection
        self.patch = int(cfg.patch_size)
        self.grid = int(cfg.image_size) // self.patch
        self.heads = int(cfg.num_attention_heads)
        # quick_gelu(h) = silu(a h) / a: fold a into copies of fc1's weight and bias and 1/a into
        # fc2's weight (the MLP's two thirds of the tower's weights, copied once). Per layer:
        # (layer, folded (w1, b1, w2) or None for any other activation).
        quick = cfg.hidden_act == "quick_gelu"
        self.layers = [
            (layer, (layer.mlp.fc1.weight.detach() * _QUICK_GELU, layer.mlp.fc1.bias.detach() * _QUICK_GELU,
                     layer.mlp.fc2.weight.detach() / _QUICK_GELU) if quick else None)
            for layer in vm.encoder.layers
        ]
        emb = vm.embeddings
        w = emb.patch_embedding.weight.detach().float()  # (D, 3, P, P), no bias in CLIP
        mean, std = mean.detach().float().view(1, 3, 1, 1).to(w.device), std.detach().float().view(1, 3, 1, 1).to(w.device)
        dtype = emb.patch_embedding.weight.dtype
        # ((x - mean) / std) * w summed over a patch == x * (w / std) - sum(w * mean / std)
        self.patch_w = (w / std).reshape(len(w), -1).t().contiguous().to(dtype)  # (3 P P, D)
        self.patch_b = -(w * mean / std).sum((1, 2, 3)).to(dtype)
        pos = emb.position_embedding.weight.detach()
        self.cls_pos = (emb.class_embedding.detach() + pos[0]).view(1, 1, -1)
        self.pos = pos[1:]

    def __call__(self, x: Tensor) -> Tensor:
        b, p, g = len(x), self.patch, self.grid
        d = self.patch_w.shape[1]
        x = x.to(self.patch_w.dtype)
        patches = x.reshape(b, 3, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(b * g * g, 3 * p * p)
        h = torch.addmm(self.patch_b, patches, self.patch_w).view(b, g * g, d) + self.pos
        h = torch.cat([self.cls_pos.expand(b, 1, d), h], 1)
        h = self.vm.pre_layrnorm(h)
        *body, (last, last_mlp) = self.layers
        for layer, folded in body:
            h = h + self._attention(layer.self_attn, layer.layer_norm1(h))
            h = h + self._mlp(layer.mlp, folded, layer.layer_norm2(h))
        # Only the class token leaves the last layer, so only its row is computed there: its query
        # (against every token's key and value) and its MLP.
        cls = h[:, :1] + self._attention(last.self_attn, last.layer_norm1(h), queries=1)
        cls = cls + self._mlp(last.mlp, last_mlp, last.layer_norm2(cls))
        return self.projection(self.vm.post_layernorm(cls[:, 0]))

    def _attention(self, attn, y: Tensor, queries: int | None = None) -> Tensor:
        """Self-attention of y (B, T, D); with `queries`, only the first that many rows attend."""
        b, t, d = y.shape
        q, k, v = (F.linear(x, lin.weight, lin.bias).view(b, len(x[0]), self.heads, -1).transpose(1, 2)
                   for x, lin in ((y[:, :queries], attn.q_proj), (y, attn.k_proj), (y, attn.v_proj)))
        o = F.scaled_dot_product_attention(q, k, v, scale=attn.scale)
        return F.linear(o.transpose(1, 2).reshape(b, -1, d), attn.out_proj.weight, attn.out_proj.bias)

    @staticmethod
    def _mlp(mlp, folded: tuple[Tensor, Tensor, Tensor] | None, y: Tensor) -> Tensor:
        if folded is None:  # any other activation: the checkpoint's own modules
            return mlp.fc2(mlp.activation_fn(mlp.fc1(y)))
        w1, b1, w2 = folded
        return F.linear(F.silu(F.linear(y, w1, b1)), w2, mlp.fc2.bias)
