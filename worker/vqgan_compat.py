"""Import taming-transformers' VQModel without its training stack.

`taming.models.vqgan` imports `taming.main` (which needs torchvision and an old
pytorch-lightning) only for `instantiate_from_config`, and subclasses
`pytorch_lightning.LightningModule` only for training hooks we never call. We register two
small stand-ins before the import so that the real taming architecture (Encoder, Decoder,
VectorQuantizer2) loads on a plain torch install. Installing torchvision here would pull a
5 GB CUDA build of torch, and Lightning adds seconds to every worker start for nothing we use.
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import Any

import torch


def instantiate_from_config(config: dict[str, Any]) -> Any:
    """taming.main.instantiate_from_config, without the rest of taming.main."""
    if "target" not in config:
        raise KeyError("config has no 'target' key")
    module, cls = config["target"].rsplit(".", 1)
    return getattr(importlib.import_module(module), cls)(**config.get("params", {}))


def _install_stand_ins() -> None:
    if "taming.main" not in sys.modules:
        main = types.ModuleType("taming.main")
        main.instantiate_from_config = instantiate_from_config  # type: ignore[attr-defined]
        sys.modules["taming.main"] = main
    try:
        import pytorch_lightning  # noqa: F401  (use the real one when it is installed)
    except ImportError:
        pl = types.ModuleType("pytorch_lightning")
        pl.LightningModule = torch.nn.Module  # type: ignore[attr-defined]
        sys.modules["pytorch_lightning"] = pl


def _fuse_swish() -> None:
    """taming's swish is `x * torch.sigmoid(x)`: two kernels and an extra saved tensor per activation.
    F.silu is the same function as one kernel forward and backward. The decoder looks the name up
    at call time, so replacing the module global is enough."""
    from taming.modules.diffusionmodules import model

    model.nonlinearity = torch.nn.functional.silu


def import_vqmodel(name: str = "VQModel") -> type:
    """taming's `VQModel` or `GumbelVQ` class (taming.models.vqgan), on the stand-ins above."""
    if name not in ("VQModel", "GumbelVQ"):
        raise ValueError(f"not a taming first-stage model class: {name}")
    _install_stand_ins()
    from taming.models import vqgan

    _fuse_swish()

    return getattr(vqgan, name)
