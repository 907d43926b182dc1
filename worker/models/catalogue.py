"""The catalogue of real checkpoints `python -m worker models fetch` knows, with every known mirror.

CLIP: OpenAI's checkpoints on the Hugging Face hub, only the files `CLIPModel.from_pretrained`
and `AutoProcessor` read (safetensors weights, config, tokenizer, processor). Their URLs are the
hub's plain `resolve` URLs under `HF_ENDPOINT` (huggingface_hub's variable; default the hub), so a
hub mirror works as it does for huggingface_hub.

VQGAN: taming-transformers' published config + checkpoint. Mirrors, in order, and where each
address comes from (none is guessed):
- heibox: the links of CompVis/taming-transformers README.md ("Overview of pretrained models"),
  with the `files/?p=...&dl=1` form used by nerdyrodent/VQGAN-CLIP download_models.sh and
  pixray/pixray pixray/vqgan.py (`vqgan_config_table` / `vqgan_checkpoint_table`);
- mirror.io.community: nerdyrodent/VQGAN-CLIP download_models.sh and pixray/vqgan.py ("...m" keys);
- github.com/pixray/pixray/releases/download/v1.7.1: pixray/vqgan.py (the wikiart files);
- eaidata.bmk.sh: pixray/vqgan.py ("wikiart_16384m"; the original wikiart host).
Sizes are approximate (nerdyrodent's download_models.sh comments), for `list` only: a download is
checked against the size the server announces. No trustworthy sha256 is published for taming's
files, so theirs is recorded on first download and verified on every later load (store.py).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal

HF_DEFAULT_ENDPOINT = "https://huggingface.co"
MIB = 1024 * 1024


@dataclass(frozen=True)
class RemoteFile:
    """One file of a model: its name in the model folder and where to get it."""

    name: str
    urls: tuple[str, ...] = ()  # mirrors in order (VQGAN); CLIP files are built from the hub repo
    sha256: str | None = None  # pinned where a trustworthy published hash exists
    size: int | None = None  # exact bytes where published
    required: bool = True  # optional files (e.g. a fast tokenizer) may be missing everywhere


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: Literal["clip", "vqgan"]
    approx_bytes: int
    files: tuple[RemoteFile, ...]
    hf_repo: str | None = None
    hf_revision: str = "main"
    about: str = ""
    # imagine defaults this model needs (ImagineConfig fields); explicit CLIPBOT_IMAGINE_* win
    profile: dict[str, Any] = field(default_factory=dict)

    def urls(self, f: RemoteFile, mirror: str | None = None) -> list[str]:
        """Where `f` can be fetched, in order: the operator's mirror (CLIPBOT_MODEL_MIRROR) first,
        then the hub (under HF_ENDPOINT, huggingface_hub's variable) or the catalogue's mirrors."""
        urls = []
        if mirror and mirror.strip():
            urls.append(f"{mirror.strip().rstrip('/')}/{self.name}/{f.name}")  # the models folder's layout
        if self.hf_repo:
            endpoint = (os.environ.get("HF_ENDPOINT") or HF_DEFAULT_ENDPOINT).rstrip("/")
            urls.append(f"{endpoint}/{self.hf_repo}/resolve/{self.hf_revision}/{f.name}")
        urls.extend(f.urls)
        return urls


def _clip(name: str, approx_mib: int, about: str) -> ModelSpec:
    files = (
        RemoteFile("config.json"),
        RemoteFile("model.safetensors"),  # never pytorch_model.bin: no pickle from the network
        RemoteFile("preprocessor_config.json"),
        RemoteFile("tokenizer_config.json"),
        RemoteFile("tokenizer.json"),  # the fast tokenizer: all transformers needs
        RemoteFile("vocab.json", required=False),  # the slow tokenizer's files, for older transformers
        RemoteFile("merges.txt", required=False),
        RemoteFile("special_tokens_map.json", required=False),
    )
    return ModelSpec(name, "clip", approx_mib * MIB, files, hf_repo=f"openai/{name}", about=about)


def _heibox(share: str, path: str) -> str:
    return f"https://heibox.uni-heidelberg.de/d/{share}/files/?p={path}&dl=1"


_IO = "http://mirror.io.community/blob/vqgan"
_PIXRAY = "https://github.com/pixray/pixray/releases/download/v1.7.1"


def _vqgan(name: str, approx_mib: int, yaml_urls: list[str], ckpt_urls: list[str], about: str,
           profile: dict[str, Any]) -> ModelSpec:
    files = (RemoteFile("model.yaml", tuple(yaml_urls)), RemoteFile("last.ckpt", tuple(ckpt_urls)))
    return ModelSpec(name, "vqgan", approx_mib * MIB, files, about=about, profile=profile)


# The community's settings for ViT-B/32 + an f16 VQGAN (Crowson's notebook, nerdyrodent's
# generate.py): a random start of codebook entries (no canvas), Adam lr 0.1, 32 cutouts from
# CLIP's input size (224 px, i.e. half of a 448 px side) to the whole picture, cut_pow 1, mild
# jitter (10 degrees, 10% zoom, 5% shift), ~300 steps.
F16_PROFILE: dict[str, Any] = dict(
    width=448, height=448, max_pixels=512 * 512, min_side=64, steps=300, max_steps=1000,
    cutouts=32, cut_min_size=0.5, cut_pow=1.0, lr=0.1, canvas="", canvas_weight=0.0, init_grid=0,
    rotate_degrees=10.0, scale_jitter=0.1, translate=0.05,
    preview_size=256, gif_size=448, time_budget_s=900.0,
)
# An f8 decoder has 4x as many latent positions per pixel: the same picture costs about twice
# the memory and time, so its default side is smaller.
F8_PROFILE: dict[str, Any] = dict(F16_PROFILE, width=320, height=320, cut_min_size=0.7, gif_size=320)

CATALOGUE: dict[str, ModelSpec] = {spec.name: spec for spec in (
    _clip("clip-vit-base-patch32", 577, "OpenAI CLIP ViT-B/32 (224 px, 32 px patches): the usual VQGAN+CLIP perceptor"),
    _clip("clip-vit-base-patch16", 572, "OpenAI CLIP ViT-B/16: finer detail, about 4x the compute of B/32"),
    _clip("clip-vit-large-patch14", 1631, "OpenAI CLIP ViT-L/14: best /classify and /find, slow for /imagine"),
    _vqgan("vqgan_imagenet_f16_16384", 980,
           [_heibox("a7530b09fed84f80a887", "%2Fconfigs%2Fmodel.yaml"), f"{_IO}/vqgan_imagenet_f16_16384.yaml"],
           [_heibox("a7530b09fed84f80a887", "%2Fckpts%2Flast.ckpt"), f"{_IO}/vqgan_imagenet_f16_16384.ckpt"],
           "taming VQGAN, ImageNet, factor 16, 16384 codes: the usual VQGAN+CLIP generator", F16_PROFILE),
    _vqgan("vqgan_imagenet_f16_1024", 958,
           [_heibox("8088892a516d4e3baf92", "%2Fconfigs%2Fmodel.yaml"), f"{_IO}/vqgan_imagenet_f16_1024.yaml"],
           [_heibox("8088892a516d4e3baf92", "%2Fckpts%2Flast.ckpt"), f"{_IO}/vqgan_imagenet_f16_1024.ckpt"],
           "taming VQGAN, ImageNet, factor 16, 1024 codes", F16_PROFILE),
    _vqgan("vqgan_wikiart_16384", 1000,
           [f"{_PIXRAY}/vqgan_wikiart_16384.yaml",
            "http://eaidata.bmk.sh/data/Wikiart_16384/wikiart_f16_16384_8145600.yaml",
            f"{_IO}/wikiart_16384.yaml"],
           [f"{_PIXRAY}/vqgan_wikiart_16384.ckpt",
            "http://eaidata.bmk.sh/data/Wikiart_16384/wikiart_f16_16384_8145600.ckpt",
            f"{_IO}/wikiart_16384.ckpt"],
           "VQGAN trained on WikiArt, factor 16, 16384 codes (paintings)", F16_PROFILE),
    _vqgan("vqgan_wikiart_1024", 958,
           [f"{_PIXRAY}/vqgan_wikiart_1024.yaml", f"{_IO}/wikiart.yaml"],
           [f"{_PIXRAY}/vqgan_wikiart_1024.ckpt", f"{_IO}/wikiart.ckpt"],
           "VQGAN trained on WikiArt, factor 16, 1024 codes", F16_PROFILE),
    _vqgan("vqgan_gumbel_f8_8192", 376,
           [_heibox("2e5662443a6b4307b470", "%2Fconfigs%2Fmodel.yaml")],
           [_heibox("2e5662443a6b4307b470", "%2Fckpts%2Flast.ckpt")],
           "taming GumbelVQ, OpenImages, factor 8, 8192 codes", F8_PROFILE),
)}

# `make models-real`: the pair the profiles above were taken from.
RECOMMENDED = ("clip-vit-base-patch32", "vqgan_imagenet_f16_16384")


class UnknownModel(KeyError):
    def __str__(self) -> str:
        return f"unknown model {self.args[0]!r}: known are {', '.join(CATALOGUE)}"


def get(name: str) -> ModelSpec:
    try:
        return CATALOGUE[name]
    except KeyError:
        raise UnknownModel(name) from None
