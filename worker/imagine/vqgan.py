"""Load a taming-transformers VQGAN (yaml config + Lightning checkpoint) for generation, offline.

The same code loads the shipped small model (models/vqgan-shapes) and real taming releases such
as vqgan_imagenet_f16_16384 (`VQModel`) and vqgan_gumbel_f8_8192 (`GumbelVQ`, whose codebook is
`quantize.embed`; VQGAN+CLIP uses it exactly like VQModel's, with nearest-code quantisation, and
only the encoder differs: its codes are the argmax of `quantize.proj`'s logits). Generation needs only the decoder, post_quant_conv and the codebook,
so that is all we keep; the encoder (for init images) is loaded lazily on first use. Modules are
built on the meta device and the checkpoint tensors assigned to them, so nothing is randomly
initialised and thrown away, and the discriminator/LPIPS weights under `loss.*` are never kept.

Checkpoints are read with `torch.load(weights_only=True)`. Real taming checkpoints also pickle
Lightning training bookkeeping (`callbacks` keyed by `pytorch_lightning...ModelCheckpoint`
classes), which the safe unpickler refuses. Those globals are only ever needed as dict keys and
plain state, so we map each `pytorch_lightning.*`/`lightning.*` global to an inert stand-in class
and load again with weights_only=True: no code from the file runs and Lightning need not be
installed. Anything else (a checkpoint pickling other objects) is refused unless the operator
passes `allow_pickle=True` (CLI `--vqgan-allow-pickle`), which does a full `torch.load` and
therefore must only be used on trusted local files (a pickle can run arbitrary code).
"""
from __future__ import annotations

import contextlib
import pickle
import sys
import threading
import zipfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import Tensor, nn

from worker.vqgan_compat import import_vqmodel

_LIGHTNING_MODULES = ("pytorch_lightning.", "lightning.", "lightning_fabric.")
# What each model class keeps: (decoder + codebook, encoder) state-dict prefixes.
_KEYS = {
    "VQModel": (("decoder.", "post_quant_conv.", "quantize.embedding."), ("encoder.", "quant_conv.")),
    "GumbelVQ": (("decoder.", "post_quant_conv.", "quantize.embed."), ("encoder.", "quant_conv.", "quantize.proj.")),
}


class VQGANLoadError(RuntimeError):
    """The config or checkpoint cannot be used (operator error, not a user's)."""


class _Inert:
    """Stand-in for a pickled training-only class: accepts and ignores any state."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _inert_globals(path: Path) -> list[tuple[type, str]]:
    names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    others = [n for n in names if not n.startswith(_LIGHTNING_MODULES)]
    if others:
        raise VQGANLoadError(
            f"{path} pickles objects that are not safe to load ({', '.join(sorted(others)[:5])}). "
            "If this is a trusted local file, load it with allow_pickle=True (--vqgan-allow-pickle)."
        )
    return [(type(n.rsplit(".", 1)[-1], (_Inert,), {}), n) for n in names]


def load_checkpoint_state(path: str | Path, allow_pickle: bool = False) -> dict[str, Tensor]:
    """The model state dict of a taming/Lightning checkpoint (or of a bare state dict file)."""
    path = Path(path)
    if not path.is_file():
        raise VQGANLoadError(f"VQGAN checkpoint not found: {path}")
    mmap = zipfile.is_zipfile(path)  # memory-map modern checkpoints: read only the tensors we keep
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError:
        try:
            with torch.serialization.safe_globals(_inert_globals(path)):
                ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except (pickle.UnpicklingError, VQGANLoadError):
            if not allow_pickle:
                raise
            # Trusted local file only (operator opt-in): a full unpickle can execute code.
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise VQGANLoadError(f"{path} holds no model state dict")
    return state


def _model_params(config_path: Path) -> tuple[str, dict[str, Any]]:
    if not config_path.is_file():
        raise VQGANLoadError(f"VQGAN config not found: {config_path}")
    config = yaml.safe_load(config_path.read_text())
    model = config.get("model", config) if isinstance(config, dict) else None
    if not isinstance(model, dict) or not isinstance(model.get("params"), dict):
        raise VQGANLoadError(f"{config_path} has no model.params section")
    target = model.get("target", "taming.models.vqgan.VQModel")
    kind = target.rsplit(".", 1)[-1]
    if kind not in _KEYS:
        raise VQGANLoadError(f"{config_path}: only taming VQModel and GumbelVQ are supported, not {target}")
    params = dict(model["params"])
    params.pop("ckpt_path", None)  # we load the checkpoint ourselves
    params.pop("ignore_keys", None)
    params["lossconfig"] = {"target": "torch.nn.Identity"}  # the training loss (LPIPS, GAN) is not needed
    if kind == "GumbelVQ":  # the Gumbel temperature's annealing schedule: training only
        params["temperature_scheduler_config"] = {"target": "torch.nn.Identity"}
    return kind, params


def _prune(module: nn.Module, keep: tuple[str, ...], prefix: str = "") -> None:
    """Drop every submodule that holds none of the `keep` prefixes (they stay on the meta device)."""
    for name, child in list(module.named_children()):
        full = f"{prefix}{name}."
        if any(full.startswith(k) for k in keep):
            continue  # wholly kept
        if any(k.startswith(full) for k in keep):
            _prune(child, keep, full)  # partly kept (e.g. GumbelQuantize: embed yes, proj no)
        else:
            delattr(module, name)


def _build(kind: str, params: dict[str, Any], state: dict[str, Tensor], keep: tuple[str, ...], device,
           dtype) -> nn.Module:
    """A VQModel / GumbelVQ whose modules under `keep` hold the checkpoint's tensors (others dropped)."""
    with torch.device("meta"), contextlib.redirect_stdout(sys.stderr):  # taming prints z shapes
        model = import_vqmodel(kind)(**params)
    _prune(model, keep)
    wanted = {k: v for k, v in state.items() if k.startswith(keep)}
    try:
        result = model.load_state_dict(wanted, strict=False, assign=True)
    except RuntimeError as e:  # shape mismatch: config and checkpoint disagree
        raise VQGANLoadError(f"the VQGAN checkpoint does not match its config: {e}") from None
    missing = [k for k in result.missing_keys if k.startswith(keep)]
    if missing:
        raise VQGANLoadError(f"the VQGAN checkpoint lacks {len(missing)} tensors, e.g. {missing[:3]}")
    model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return model


class SampleWiseConv2d(nn.Conv2d):
    """A Conv2d that can run sample by sample. On a CPU, oneDNN picks batch-size-dependent conv
    kernels whose rounding differs by ~1e-6, which the hard argmin of vector quantisation can grow
    into a visibly different picture (measured: 31 dB for one of 4 shipped-model jobs after 100
    steps). With `sample_wise` set, each image's conv sees batch 1, so a batched decode is
    bit-identical to decoding each image alone (forward and backward), while GroupNorm, SiLU,
    adds and upsampling (batch-size-independent) still run once for the batch: fewer, bigger ops."""

    sample_wise = False

    def forward(self, x: Tensor) -> Tensor:
        if not self.sample_wise or len(x) == 1:
            return self._conv_forward(x, self.weight, self.bias)
        return torch.cat([self._conv_forward(xi, self.weight, self.bias) for xi in x.split(1)])


class VQGAN(nn.Module):
    """A VQGAN decoder and codebook: latents (B, C, H/f, W/f) <-> images (B, 3, H, W) in [0, 1]."""

    autocast_dtype: torch.dtype | None = None  # decode under autocast in this dtype (see decode)

    def __init__(
        self, config_path: str | Path, checkpoint_path: str | Path, device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32, allow_pickle: bool = False,
    ) -> None:
        super().__init__()
        self.config_path, self.checkpoint_path = Path(config_path), Path(checkpoint_path)
        self.name = self.checkpoint_path.parent.name or self.checkpoint_path.stem
        self._allow_pickle = allow_pickle
        self.kind, self._params = _model_params(self.config_path)
        decoder_keys, self._encoder_keys = _KEYS[self.kind]
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        state = load_checkpoint_state(self.checkpoint_path, allow_pickle)
        model = _build(self.kind, self._params, state, decoder_keys, device, dtype)
        # Generation needs only the decoder; the encoder (init images, plain canvases) is optional.
        self.has_encoder = all(any(k.startswith(prefix) for k in state) for prefix in self._encoder_keys)
        self.decoder, self.post_quant_conv = model.decoder, model.post_quant_conv
        self._convs = [m for m in (self.post_quant_conv, *self.decoder.modules()) if type(m) is nn.Conv2d]
        for m in self._convs:
            m.__class__ = SampleWiseConv2d  # same parameters and state dict; see decode(sample_wise=)
        quantize = model.quantize
        codebook = (quantize.embed if self.kind == "GumbelVQ" else quantize.embedding).weight.detach()
        self.register_buffer("codebook", codebook, persistent=False)  # (n_embed, embed_dim)
        self.register_buffer("codebook_sq", codebook.pow(2).sum(1), persistent=False)
        # Crowson's clamp: keep each latent channel inside the range the codebook spans.
        self.register_buffer("z_min", codebook.min(0).values[None, :, None, None], persistent=False)
        self.register_buffer("z_max", codebook.max(0).values[None, :, None, None], persistent=False)
        self.factor = 2 ** (len(self._params["ddconfig"]["ch_mult"]) - 1)
        self._encoder: nn.Module | None = None
        self._code_logits: nn.Module | None = None
        self._encoder_lock = threading.Lock()

    @property
    def device(self) -> torch.device:
        return self.codebook.device

    @property
    def dtype(self) -> torch.dtype:
        return self.codebook.dtype

    @property
    def n_embed(self) -> int:
        return self.codebook.shape[0]

    @property
    def embed_dim(self) -> int:
        return self.codebook.shape[1]

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": self.kind, "factor": self.factor, "n_embed": self.n_embed, "embed_dim": self.embed_dim,
            "z_min": round(self.z_min.min().item(), 4), "z_max": round(self.z_max.max().item(), 4),
        }

    def nearest(self, z: Tensor) -> Tensor:
        """The nearest codebook vector at every position of z (B, C, h, w); no gradient."""
        with torch.no_grad():
            flat = z.movedim(1, -1)
            dist = flat.pow(2).sum(-1, keepdim=True) + self.codebook_sq - 2 * flat @ self.codebook.T
            return self.codebook[dist.argmin(-1)].movedim(-1, 1).contiguous()

    def quantize(self, z: Tensor) -> Tensor:
        """Nearest codebook vectors in the forward pass, identity in the backward (straight-through)."""
        return z + (self.nearest(z) - z).detach()

    def clamp_(self, z: Tensor) -> Tensor:
        with torch.no_grad():
            return z.copy_(torch.maximum(torch.minimum(z, self.z_max), self.z_min))

    def decode(self, z_q: Tensor, sample_wise: bool = False) -> Tensor:
        """Images in about [-1, 1] (unclamped) from quantised latents. sample_wise: convs run image by
        image (each result bit-identical to decoding that image alone; see SampleWiseConv2d).
        With `autocast_dtype` set (a GPU worker: bfloat16, or float16 where bf16 is missing), the
        decoder runs under autocast (convs in half precision, GroupNorm in float32) and the image
        comes back in float32: the latent, its gradient and the optimiser stay float32."""
        with torch.autocast(z_q.device.type, dtype=self.autocast_dtype or torch.float32,
                            enabled=self.autocast_dtype is not None):
            if not sample_wise or len(z_q) == 1:
                return self.decoder(self.post_quant_conv(z_q)).float()
            for m in self._convs:
                m.sample_wise = True
            try:
                return self.decoder(self.post_quant_conv(z_q)).float()
            finally:
                for m in self._convs:
                    m.sample_wise = False

    def random_latent(self, h: int, w: int, generator: torch.Generator, grid: int = 0) -> Tensor:
        """(1, C, h, w) latent of codebook entries drawn uniformly with `generator`: one per position
        (grid=0, Crowson's init), or one per cell of a grid x grid layout (larger, calmer regions)."""
        gh, gw = (h, w) if grid <= 0 else (min(grid, h), min(grid, w))
        idx = torch.randint(self.n_embed, (gh * gw,), generator=generator, device=generator.device)
        z = self.codebook[idx.to(self.device)].T.reshape(1, self.embed_dim, gh, gw)
        z = F.interpolate(z, size=(h, w), mode="nearest") if (gh, gw) != (h, w) else z
        return z.contiguous().clone()  # plain NCHW: kernels (and their rounding) depend on strides

    def plain_latent(self, rgb: tuple[float, float, float], h: int, w: int) -> Tensor:
        """(1, C, h, w) latent of a plain picture of colour `rgb` (in [0, 1]), through the encoder."""
        plain = torch.tensor(rgb, dtype=torch.float32).view(1, 3, 1, 1).expand(1, 3, h * self.factor, w * self.factor)
        return self.encode(plain.contiguous()).contiguous()

    def encode(self, x: Tensor) -> Tensor:
        """Quantised latents of images x (B, 3, H, W) in [0, 1]; loads the encoder on first use."""
        with torch.no_grad():
            h = self._load_encoder()(x.to(self.device, self.dtype) * 2 - 1)
            if self.kind == "GumbelVQ":  # hard Gumbel quantisation in eval: the most likely code
                idx = self._code_logits(h).argmax(1)  # (B, h, w)
                return self.codebook[idx].movedim(-1, 1).contiguous()
            return self.nearest(h)

    def _load_encoder(self) -> nn.Module:
        with self._encoder_lock:
            if self._encoder is None:
                state = load_checkpoint_state(self.checkpoint_path, self._allow_pickle)
                model = _build(self.kind, self._params, state, self._encoder_keys, self.device, self.dtype)
                if self.kind == "GumbelVQ":
                    self._code_logits = model.quantize.proj  # -> (B, n_embed, h, w)
                self._encoder = nn.Sequential(model.encoder, model.quant_conv)
            return self._encoder


def load_vqgan(config_path: str | Path, checkpoint_path: str | Path, device=None, **kwargs: Any) -> VQGAN:
    return VQGAN(config_path, checkpoint_path, device, **kwargs)
