"""Loading a Hugging Face CLIP once per process, and embedding texts, images and pixel tensors with it.

Any `CLIPModel` checkpoint works: the project's shipped `models/clip-shapes`, a tiny test model, or
`openai/clip-vit-base-patch32` from a folder or the local hub cache. Loading is offline-first:
the local folder / hub cache is tried before any network, and a model that is nowhere gives one
clear `ClipLoadError` naming it, instead of transformers' retries and tracebacks.
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from jobs.validation.images import shrink
from worker.clip.vision import VisionTower

log = logging.getLogger(__name__)

TEXT_BATCH = 256
IMAGE_BATCH = 32
TEXT_CACHE_SIZE = 4096  # prompt-ensembled label sets repeat a lot: cache per (model, text)


class ClipLoadError(RuntimeError):
    """The CLIP model could not be loaded (not on disk and no hub, or not a CLIP checkpoint)."""


def _hub_offline() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    try:
        from huggingface_hub import is_offline_mode

        return bool(is_offline_mode())
    except ImportError:  # older huggingface_hub
        return False


def _looks_like_path(name: str) -> bool:
    """A name to treat as a folder even if it does not exist (so no hub lookup and a clear error).

    "org/model" is a hub id unless "org" is a local folder (as "models" is for models/clip-shapes).
    """
    if name.startswith(("/", ".", "~")) or name.count("/") > 1 or (os.sep != "/" and os.sep in name):
        return True
    parent = Path(name).parent
    return str(parent) not in ("", ".") and parent.is_dir()


def _from_pretrained(name: str, local_only: bool, dtype: torch.dtype):
    from transformers import AutoProcessor, CLIPModel

    model = CLIPModel.from_pretrained(name, local_files_only=local_only, dtype=dtype)
    processor = AutoProcessor.from_pretrained(name, local_files_only=local_only)
    return model, processor


def load_clip(name_or_path: str | os.PathLike, device: str | torch.device | None = None,
              dtype: torch.dtype | None = None) -> Clip:
    """Load a CLIP checkpoint (folder or hub id). device: auto (cuda, else cpu); dtype: fp16 on GPU, else fp32."""
    name = str(name_or_path)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
    path = Path(name).expanduser()
    if path.exists() or _looks_like_path(name):
        if not path.is_dir():
            raise ClipLoadError(f"CLIP model folder {name!r} does not exist.")
        if not (path / "config.json").is_file():
            raise ClipLoadError(f"{name!r} is not a Hugging Face CLIP folder (no config.json in it).")
        try:
            model, processor = _from_pretrained(str(path), True, dtype)
        except (OSError, ValueError, KeyError) as e:
            raise ClipLoadError(f"Could not load the CLIP model in {name!r}: {e}") from e
    else:
        try:  # offline-first: the hub cache (HF_HOME) before any network
            model, processor = _from_pretrained(name, True, dtype)
        except OSError as cached_error:
            if _hub_offline():
                raise ClipLoadError(
                    f"CLIP model {name!r} is not on disk (no such folder, not in the Hugging Face cache) "
                    "and the hub is off (HF_HUB_OFFLINE). Download it on a connected machine, then pass "
                    "its folder with --clip-model PATH."
                ) from cached_error
            try:
                model, processor = _from_pretrained(name, False, dtype)
            except Exception as e:  # connection, 404, gated repo...: one message that names the model
                raise ClipLoadError(
                    f"CLIP model {name!r} is not on disk (no such folder, not in the Hugging Face cache) "
                    f"and could not be downloaded: {str(e).splitlines()[0] if str(e) else type(e).__name__}. "
                    "Pass a local folder with --clip-model PATH."
                ) from e
    return Clip(model, processor, device=device, dtype=dtype, name=name)


_shared: dict[tuple[str, str, str], Clip] = {}
_shared_lock = threading.Lock()


def get_clip(name_or_path: str | os.PathLike, device: str | torch.device | None = None,
             dtype: torch.dtype | None = None) -> Clip:
    """`load_clip`, but once per process: the CLIP and VQGAN+CLIP engines of one worker share the model."""
    key = (str(name_or_path), str(device or ""), str(dtype or ""))
    with _shared_lock:
        if key not in _shared:
            _shared[key] = load_clip(name_or_path, device, dtype)
        return _shared[key]


class Clip:
    """A loaded CLIP: model, tokenizer, image processor and the embedding calls every engine uses."""

    def __init__(self, model, processor, *, device: torch.device, dtype: torch.dtype, name: str):
        self.model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.image_processor = processor.image_processor
        self.device, self.dtype, self.name = device, dtype, name
        crop = getattr(self.image_processor, "crop_size", None)
        crop_h = crop.get("height") if hasattr(crop, "get") else getattr(crop, "height", None)
        self.image_size: int = int(crop_h or model.config.vision_config.image_size)
        self.mean = torch.tensor(self.image_processor.image_mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(self.image_processor.image_std, dtype=torch.float32).view(1, 3, 1, 1)
        self.dim: int = int(model.config.projection_dim)
        self.max_tokens: int = min(
            int(self.tokenizer.model_max_length), int(model.config.text_config.max_position_embeddings)
        )
        self.fingerprint = _fingerprint(self.model)
        self._text_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self._tower: VisionTower | None = None

    def __repr__(self) -> str:
        return f"Clip({self.name!r}, dim={self.dim}, image_size={self.image_size}, {self.device}, {self.dtype})"

    @property
    def model_id(self) -> str:
        """Name plus a weights fingerprint: what caches of embeddings are keyed by."""
        return f"{self.name}@{self.fingerprint}"

    @property
    def logit_scale(self) -> float:
        # CLIP clamps the learned temperature at 100 (log 4.6052) in training; do the same here.
        return float(self.model.logit_scale.detach().float().clamp(max=4.6052).exp())

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str], cache: bool = True) -> torch.Tensor:
        """[N, D] float32 on cpu, L2-normalised. Cached per text (LRU), unless cache=False: a caller
        with its own cache (1,000 labels x 8 templates) would only flush everybody else's texts."""
        texts = list(texts)
        if not cache:
            fresh = self._encode(list(dict.fromkeys(texts)))
            return torch.stack([fresh[t] for t in texts]) if texts else torch.empty(0, self.dim)
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._text_cache))
        fresh = self._encode(missing)
        with self._lock:
            for t, e in fresh.items():
                self._text_cache[t] = e
            rows = []
            for t in texts:
                e = fresh.get(t)
                if e is None:
                    e = self._text_cache[t]
                    self._text_cache.move_to_end(t)
                rows.append(e)
            while len(self._text_cache) > TEXT_CACHE_SIZE:
                self._text_cache.popitem(last=False)
        return torch.stack(rows) if rows else torch.empty(0, self.dim)

    @torch.no_grad()
    def _encode(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """text -> its embedding, TEXT_BATCH texts per forward pass."""
        fresh: dict[str, torch.Tensor] = {}
        for i in range(0, len(texts), TEXT_BATCH):
            batch = texts[i: i + TEXT_BATCH]
            tokens = self.tokenizer(
                batch, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
            ).to(self.device)
            out = self.model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
            emb = _normalise(_pooled(out)).cpu()
            fresh.update(zip(batch, emb))
        return fresh

    @torch.no_grad()
    def embed_images(self, images: Sequence[Image.Image], batch_size: int = IMAGE_BATCH) -> torch.Tensor:
        """[N, D] float32 on cpu, L2-normalised, preprocessed by the checkpoint's own image processor."""
        chunks = []
        for i in range(0, len(images), batch_size):
            batch = [self._prepare(im) for im in images[i: i + batch_size]]
            pixels = self.image_processor(images=batch, return_tensors="pt")["pixel_values"]
            out = self.model.get_image_features(pixel_values=pixels.to(self.device, self.dtype))
            chunks.append(_normalise(_pooled(out)).cpu())
        return torch.cat(chunks) if chunks else torch.empty(0, self.dim)

    def _prepare(self, im: Image.Image) -> Image.Image:
        im = im if im.mode == "RGB" else im.convert("RGB")
        # A 12 MP photo costs the PIL processor ~0.4 s to resize; a box reduce to >= 2x the model's
        # input first costs ~25 ms and changes the result only by the resampling filter.
        if min(im.size) >= 4 * self.image_size:
            im = shrink(im, 2 * self.image_size)
        return im

    def embed_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable: x [B, 3, S, S] in [0, 1] -> [B, D] float32 on x's device, L2-normalised.

        For VQGAN+CLIP, whose cutouts are already square. A size other than `image_size` is resized
        bilinearly; the checkpoint's mean/std normalisation is applied here. Runs `vision_tower`
        (the same maths as `get_image_features` with cheaper kernels; weights are frozen).
        """
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return _normalise(self.vision_tower(x.to(self.device)).float())

    @property
    def vision_tower(self) -> VisionTower:
        """The image tower for the gradient path (worker/clip/vision.py), built on first use."""
        if self._tower is None:
            with self._lock:
                if self._tower is None:
                    self._tower = VisionTower(self.model, self.mean, self.std)
        return self._tower


def _pooled(out) -> torch.Tensor:
    # transformers 5 returns an output object whose pooler_output holds the projected features.
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.float(), dim=-1)


def _fingerprint(model: torch.nn.Module) -> str:
    """Cheap hash of the weights (a slice of every tensor): retrained weights under the same name differ."""
    h = hashlib.sha256()
    for key, t in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(t.detach().flatten()[:64].float().cpu().numpy().tobytes())
    return h.hexdigest()[:12]
