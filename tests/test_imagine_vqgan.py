"""Loading taming VQGANs: the factory model, Lightning checkpoints with training state, bad files."""
import pickle
import sys
import types

import pytest
import torch
import yaml

from tests.factories import TINY_VQGAN_PARAMS, make_vqgan_files
from tests.imagine_support import _one_thread  # noqa: F401
from worker.imagine.vqgan import VQGANLoadError, load_checkpoint_state, load_vqgan


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return make_vqgan_files(tmp_path_factory.mktemp("vqgan"))


def test_loads_only_what_generation_needs(files):
    vq = load_vqgan(*files, "cpu")
    state = torch.load(files[1], weights_only=True)["state_dict"]
    codebook = state["quantize.embedding.weight"]
    assert vq.factor == 2 and vq.n_embed == 64 and vq.embed_dim == 8
    assert torch.equal(vq.codebook, codebook)
    assert torch.equal(vq.z_min.flatten(), codebook.min(0).values)
    assert torch.equal(vq.z_max.flatten(), codebook.max(0).values)
    assert torch.equal(vq.decoder.conv_in.weight, state["decoder.conv_in.weight"])
    names = {n for n, _ in vq.named_parameters()}
    assert names and all(n.startswith(("decoder.", "post_quant_conv.")) for n in names)
    assert not any(p.requires_grad for p in vq.parameters())
    info = vq.info()
    assert info["factor"] == 2 and info["z_min"] == pytest.approx(codebook.min().item(), abs=1e-4)


def test_quantize_is_nearest_codebook_vector_with_straight_through_gradient(files):
    vq = load_vqgan(*files, "cpu")
    z = torch.randn(2, vq.embed_dim, 3, 4, generator=torch.Generator().manual_seed(0)) * 0.01
    z.requires_grad_(True)
    z_q = vq.quantize(z)
    flat = z.detach().movedim(1, -1).reshape(-1, vq.embed_dim)
    nearest = vq.codebook[torch.cdist(flat, vq.codebook).argmin(1)]
    assert torch.allclose(z_q.detach().movedim(1, -1).reshape(-1, vq.embed_dim), nearest, atol=1e-6)
    z_q.sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))


def test_random_latent_is_seeded_codebook_entries(files):
    vq = load_vqgan(*files, "cpu")
    a = vq.random_latent(3, 5, torch.Generator().manual_seed(7))
    b = vq.random_latent(3, 5, torch.Generator().manual_seed(7))
    assert a.shape == (1, vq.embed_dim, 3, 5) and torch.equal(a, b)
    rows = a[0].movedim(0, -1).reshape(-1, vq.embed_dim)
    assert all((vq.codebook == r).all(1).any() for r in rows)
    assert torch.equal(vq.quantize(a), a)


def test_encoder_loads_lazily_and_round_trips_shapes(files):
    vq = load_vqgan(*files, "cpu")
    assert vq._encoder is None
    z = vq.encode(torch.rand(1, 3, 16, 12))
    assert z.shape == (1, vq.embed_dim, 8, 6) and vq._encoder is not None
    assert torch.equal(vq.quantize(z), z)  # already on codebook vectors
    assert vq.decode(z).shape == (1, 3, 16, 12)


def _lightning_checkpoint(path, monkeypatch, state):
    """A checkpoint shaped like taming's real ones: Lightning callbacks keyed by their class,
    optimizer states, loss.* weights (discriminator) in the state dict."""
    mod = types.ModuleType("pytorch_lightning.callbacks.model_checkpoint")

    class ModelCheckpoint:
        def __init__(self):
            self.monitor, self.best_model_score = "val/rec_loss", torch.tensor(0.5)

    ModelCheckpoint.__module__, ModelCheckpoint.__qualname__ = mod.__name__, "ModelCheckpoint"
    mod.ModelCheckpoint = ModelCheckpoint
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    full = dict(state)
    full["loss.discriminator.main.0.weight"] = torch.randn(4, 3, 4, 4)
    torch.save({
        "epoch": 3, "global_step": 1000, "pytorch-lightning_version": "1.0.8",
        "callbacks": {ModelCheckpoint: {"best_model_score": torch.tensor(0.5)}},
        "hparams": ModelCheckpoint(),
        "optimizer_states": [{"state": {0: {"exp_avg": torch.zeros(3)}}, "param_groups": [{"lr": 4.5e-6}]}],
        "lr_schedulers": [], "state_dict": full,
    }, path)
    monkeypatch.delitem(sys.modules, mod.__name__)  # loading must not need Lightning


def test_real_taming_style_checkpoint_loads_with_weights_only(files, tmp_path, monkeypatch):
    config, ckpt = files
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    path = tmp_path / "last.ckpt"
    _lightning_checkpoint(path, monkeypatch, state)
    with pytest.raises(pickle.UnpicklingError):  # what a plain safe load says about such files
        torch.load(path, weights_only=True)
    loaded = load_checkpoint_state(path)
    assert "loss.discriminator.main.0.weight" in loaded  # present in the file ...
    vq = load_vqgan(config, path, "cpu")  # ... but never kept by the model
    assert torch.equal(vq.codebook, state["quantize.embedding.weight"])
    assert not any("loss" in n for n, _ in vq.named_parameters())


class Payload:  # an arbitrary class: a pickle of it could run code on load
    def __reduce__(self):
        return (print, ("pwned",))


def test_checkpoint_pickling_other_objects_needs_explicit_trust(files, tmp_path, capsys):
    state = torch.load(files[1], weights_only=True)["state_dict"]
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": state, "extra": Payload()}, path)
    with pytest.raises((pickle.UnpicklingError, VQGANLoadError)):
        load_vqgan(files[0], path, "cpu")
    assert "pwned" not in capsys.readouterr().out
    vq = load_vqgan(files[0], path, "cpu", allow_pickle=True)  # the documented opt-in for trusted files
    assert "pwned" in capsys.readouterr().out and vq.n_embed == 64


def test_bare_state_dict_and_real_config_layout(files, tmp_path):
    """A plain state dict file, and a config written like taming's (base_learning_rate, ckpt_path,
    a perceptual loss we must not instantiate)."""
    state = torch.load(files[1], weights_only=True)["state_dict"]
    torch.save(state, tmp_path / "bare.pt")
    params = dict(TINY_VQGAN_PARAMS, ckpt_path="/nonexistent.ckpt",
                  lossconfig={"target": "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator",
                              "params": {"disc_start": 250001}})
    (tmp_path / "real.yaml").write_text(yaml.safe_dump({"model": {
        "base_learning_rate": 4.5e-6, "target": "taming.models.vqgan.VQModel", "params": params}}))
    vq = load_vqgan(tmp_path / "real.yaml", tmp_path / "bare.pt", "cpu")
    assert torch.equal(vq.codebook, state["quantize.embedding.weight"])


def test_clear_errors_for_bad_files(files, tmp_path):
    config, ckpt = files
    with pytest.raises(VQGANLoadError, match="not found"):
        load_vqgan(tmp_path / "missing.yaml", ckpt)
    with pytest.raises(VQGANLoadError, match="not found"):
        load_vqgan(config, tmp_path / "missing.ckpt")
    (tmp_path / "transformer.yaml").write_text(yaml.safe_dump(
        {"model": {"target": "taming.models.cond_transformer.Net2NetTransformer", "params": TINY_VQGAN_PARAMS}}))
    with pytest.raises(VQGANLoadError, match="only taming VQModel and GumbelVQ"):
        load_vqgan(tmp_path / "transformer.yaml", ckpt)
    bigger = dict(TINY_VQGAN_PARAMS, n_embed=128)
    (tmp_path / "big.yaml").write_text(yaml.safe_dump({"model": {"params": bigger}}))
    with pytest.raises(VQGANLoadError, match="does not match"):
        load_vqgan(tmp_path / "big.yaml", ckpt)
    partial = {k: v for k, v in torch.load(ckpt, weights_only=True)["state_dict"].items()
               if not k.startswith("decoder.up")}
    torch.save({"state_dict": partial}, tmp_path / "partial.ckpt")
    with pytest.raises(VQGANLoadError, match="lacks"):
        load_vqgan(config, tmp_path / "partial.ckpt")


def test_decoder_has_no_batch_coupled_op(files):
    """Batched decoding (the GPU path) equals decoding image by image up to float rounding,
    forward and backward: GroupNorm, attention and convs are all per sample."""
    vq = load_vqgan(*files, "cpu")
    g = torch.Generator().manual_seed(0)
    z = torch.cat([vq.random_latent(6, 5, g) for _ in range(3)]).requires_grad_(True)
    w = torch.randn(3, 3, 12, 10, generator=g)
    (vq.decode(vq.quantize(z)) * w).sum().backward()
    batched, grad = vq.decode(vq.quantize(z)).detach(), z.grad.clone()
    for i in range(3):
        zi = z.detach()[i:i + 1].clone().requires_grad_(True)
        out = vq.decode(vq.quantize(zi))
        (out * w[i:i + 1]).sum().backward()
        assert torch.allclose(out.detach(), batched[i:i + 1], atol=1e-4)
        assert torch.allclose(zi.grad, grad[i:i + 1], atol=1e-3, rtol=1e-3)


def test_taming_swish_is_the_fused_silu(files):
    """vqgan_compat swaps taming's `x * sigmoid(x)` for F.silu (one kernel): the same function."""
    from taming.modules.diffusionmodules import model

    load_vqgan(*files, "cpu")
    assert model.nonlinearity is torch.nn.functional.silu
    x = torch.linspace(-8, 8, 1001, dtype=torch.float64)
    assert torch.allclose(model.nonlinearity(x), x * torch.sigmoid(x), rtol=1e-12, atol=1e-12)


def test_sample_wise_decode_is_bit_identical_to_decoding_each_image(files):
    """The CPU path: convs image by image, everything else batched; forward and backward exact."""
    vq = load_vqgan(*files, "cpu")
    g = torch.Generator().manual_seed(1)
    z = torch.cat([vq.random_latent(6, 5, g) for _ in range(3)]).requires_grad_(True)
    w = torch.randn(3, 3, 12, 10, generator=g)
    out = vq.decode(vq.quantize(z), sample_wise=True)
    (out * w).sum().backward()
    for i in range(3):
        zi = z.detach()[i:i + 1].clone().requires_grad_(True)
        single = vq.decode(vq.quantize(zi))
        (single * w[i:i + 1]).sum().backward()
        assert torch.equal(single.detach(), out.detach()[i:i + 1])
        assert torch.equal(zi.grad, z.grad[i:i + 1])
    assert not any(m.sample_wise for m in vq._convs)  # the flag does not leak into later calls
