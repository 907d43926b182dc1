"""Small, randomly initialised models written to disk in the real formats, for tests.

They are loaded by exactly the code that loads hub CLIPs and taming checkpoints, so a test
that uses them exercises the real loading path. Trained shipped models live in models/.
"""
from __future__ import annotations

from pathlib import Path

import torch
import yaml
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

from worker.training.tokenizer import save_tokenizer, train_tokenizer

_CORPUS = [
    f"a photo of a {size} {colour} {shape} on a {bg} background"
    for size in ("small", "big", "")
    for colour in ("red", "green", "blue", "yellow", "orange", "purple", "white", "black")
    for shape in ("circle", "square", "triangle", "star")
    for bg in ("grey", "white", "black")
]


def make_clip_dir(out: str | Path, image_size: int = 32, seed: int = 0) -> Path:
    """A tiny random CLIP (HF format, save_pretrained) with a project-made tokenizer."""
    out = Path(out)
    torch.manual_seed(seed)
    tokenizer = train_tokenizer(_CORPUS, vocab_size=400)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=32,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            image_size=image_size, patch_size=8,
        ),
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(out)
    save_tokenizer(tokenizer, out, max_length=32)
    processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    processor.save_pretrained(out)
    return out


TINY_VQGAN_PARAMS = dict(
    embed_dim=8,
    n_embed=64,
    ddconfig=dict(
        double_z=False, z_channels=8, resolution=32, in_channels=3, out_ch=3, ch=32,
        ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[], dropout=0.0,
    ),
    lossconfig={"target": "torch.nn.Identity"},
)


def make_vqgan_files(out: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """A tiny random taming VQModel (factor 2) as a taming-style yaml + Lightning-style checkpoint."""
    from worker.vqgan_compat import import_vqmodel  # the same shim production uses

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = import_vqmodel()(**TINY_VQGAN_PARAMS)
    config_path, ckpt_path = out / "model.yaml", out / "last.ckpt"
    config_path.write_text(
        yaml.safe_dump({"model": {"target": "taming.models.vqgan.VQModel", "params": TINY_VQGAN_PARAMS}})
    )
    torch.save({"state_dict": model.state_dict()}, ckpt_path)
    return config_path, ckpt_path


# taming's published configs carry their training setup too: the perceptual/GAN loss, a Gumbel
# temperature schedule and the data module. The loader must ignore all of it.
_REAL_LOSS = {
    "VQModel": {"target": "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator",
                "params": {"disc_conditional": False, "disc_in_channels": 3, "disc_start": 250001,
                           "disc_weight": 0.8, "codebook_weight": 1.0}},
    "GumbelVQ": {"target": "taming.modules.losses.vqperceptual.DummyLoss"},
}
_REAL_DATA = {"target": "main.DataModuleFromConfig", "params": {
    "batch_size": 3, "num_workers": 8,
    "train": {"target": "taming.data.imagenet.ImageNetTrain", "params": {"config": {"size": 256}}},
    "validation": {"target": "taming.data.imagenet.ImageNetValidation", "params": {"config": {"size": 256}}},
}}
_GUMBEL_EXTRA = {
    "kl_weight": 1.0e-08,
    "temperature_scheduler_config": {"target": "taming.lr_scheduler.LambdaWarmUpCosineScheduler", "params": {
        "warm_up_steps": 0, "max_decay_steps": 1000001, "lr_start": 0.9, "lr_max": 0.9, "lr_min": 1.0e-06}},
}


def write_real_layout_config(path: str | Path, kind: str = "VQModel") -> dict:
    """A tiny config in the layout of taming's published model.yaml files; returns its params."""
    params = {k: v for k, v in TINY_VQGAN_PARAMS.items() if k != "lossconfig"}
    params.update(monitor="val/rec_loss", lossconfig=_REAL_LOSS[kind], **(_GUMBEL_EXTRA if kind == "GumbelVQ" else {}))
    Path(path).write_text(yaml.safe_dump({
        "model": {"base_learning_rate": 4.5e-06, "target": f"taming.models.vqgan.{kind}", "params": params},
        "data": _REAL_DATA,
    }, sort_keys=False))
    return params


def tiny_taming_state(kind: str = "VQModel", seed: int = 0) -> dict:
    """The state dict of a tiny random taming VQModel / GumbelVQ (what a checkpoint's state_dict holds)."""
    from worker.vqgan_compat import import_vqmodel

    torch.manual_seed(seed)
    params = dict(TINY_VQGAN_PARAMS)
    if kind == "GumbelVQ":
        params.update(_GUMBEL_EXTRA)
    return import_vqmodel(kind)(**params).state_dict()
