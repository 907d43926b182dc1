"""Catalogue names in the settings -> the fetched, verified folders, and the models' imagine profiles.

`CLIP_MODEL=clip-vit-base-patch32` and `VQGAN_MODEL=vqgan_imagenet_f16_16384` resolve to
`<CLIPBOT_MODELS_DIR>/<name>` after `store.verify` (every file re-hashed against the manifest
written when it was fetched). Paths and hub ids keep working as before. A catalogue model that
is not fetched gives one message naming the fetch command.

Each catalogue model brings the imagine defaults it needs (`ModelSpec.profile`), so switching to
real models needs no tuning by hand; a `CLIPBOT_IMAGINE_*` value that was set explicitly (in the
environment or .env: pydantic's `model_fields_set`) still wins.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from jobs.settings import ImagineConfig
from worker.models.catalogue import CATALOGUE, ModelSpec
from worker.models.store import ModelError, verify

log = logging.getLogger(__name__)


def apply_profile(imagine: ImagineConfig, *profiles: dict[str, Any]) -> ImagineConfig:
    """`imagine` with the profiles' values (later ones win) for every field not set explicitly."""
    explicit = imagine.model_fields_set
    merged: dict[str, Any] = {}
    for profile in profiles:
        merged.update(profile)
    chosen = {k: v for k, v in merged.items() if k not in explicit}
    if not chosen:
        return imagine
    # Validated like any other value; the fields set explicitly stay marked as explicit.
    return ImagineConfig.model_validate({**chosen, **imagine.model_dump(include=explicit)})


def _catalogue(name: str | None, kind: str) -> ModelSpec | None:
    spec = CATALOGUE.get(name or "")
    if spec is not None and spec.kind != kind:
        raise ModelError(f"{name} is a {spec.kind.upper()} model, not a {kind.upper()} one")
    return spec


def _vqgan_folder_files(folder: Path) -> tuple[Path, Path]:
    config = folder / "model.yaml"
    ckpts = [folder / "last.ckpt"] if (folder / "last.ckpt").is_file() else sorted(folder.glob("*.ckpt"))
    if not config.is_file() or len(ckpts) != 1:
        raise ModelError(f"VQGAN_MODEL={str(folder)!r}: a VQGAN folder holds model.yaml and one checkpoint "
                         "(last.ckpt); or name a catalogue VQGAN (python -m worker models list)")
    return config, ckpts[0]


def resolve_models(settings):
    """A copy of `settings` whose model names are verified folders and whose imagine knobs carry
    the models' profiles. Raises ModelError (a RuntimeError) with what to do."""
    update: dict[str, Any] = {}
    profiles: list[dict[str, Any]] = []
    models_dir = settings.models_dir
    vq_name = settings.vqgan_model
    if vq_name:
        if {"vqgan_config", "vqgan_checkpoint"} & settings.model_fields_set:
            log.warning("VQGAN_CONFIG / VQGAN_CHECKPOINT are set: they win over VQGAN_MODEL=%s", vq_name)
        else:
            spec = _catalogue(vq_name, "vqgan")
            if spec is not None:
                folder = verify(spec, models_dir)
                profiles.append(spec.profile)
            elif Path(vq_name).expanduser().is_dir():
                folder = Path(vq_name).expanduser()
            else:
                raise ModelError(f"VQGAN_MODEL={vq_name!r} is neither a folder nor a catalogue VQGAN "
                                 f"({', '.join(n for n, s in CATALOGUE.items() if s.kind == 'vqgan')})")
            config, ckpt = _vqgan_folder_files(folder)
            update.update(vqgan_config=str(config), vqgan_checkpoint=str(ckpt))
    clip = _catalogue(settings.clip_model, "clip")
    if clip is not None:
        update["clip_model"] = str(verify(clip, models_dir))
        profiles.append(clip.profile)
    imagine = apply_profile(settings.imagine, *profiles)
    if imagine is not settings.imagine:
        update["imagine"] = imagine
    return settings.model_copy(update=update) if update else settings
