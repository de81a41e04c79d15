"""The autoencoder family and latent diffusion standing on it: contracts, the KL against a reference, the
round trip, the running latent scale, and the chain through ``genforge train`` / ``sample`` / ``inpaint``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from genforge import models
from genforge.cli import main
from genforge.config import ConfigError
from genforge.models.autoencoder import Autoencoder, AutoencoderConfig
from genforge.models.conditions import Condition
from genforge.models.latent_diffusion import LatentDiffusion, LatentDiffusionConfig
from genforge.rundir import weights_sha256
from tests.models.contract import ImageModelContract, image_batch
from tests.models.test_text_to_image import cfg as t2i_cfg
from tests.models.test_text_to_image import prompted_batch, served_images


def ae_config(**kw) -> AutoencoderConfig:
    return AutoencoderConfig(**{"channels": 3, "image_size": 8, "factor": 2, "latent_channels": 4, "width": 8, **kw})


def make_autoencoder(seed: int = 0, **kw) -> Autoencoder:
    torch.manual_seed(seed)
    return Autoencoder(ae_config(**kw)).eval()


class TestAutoencoder(ImageModelContract):
    def tiny_config(self):
        return ae_config()

    def sample_condition(self, model, n):
        return Condition(image=torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8,
                                             generator=torch.Generator().manual_seed(5)))


class TestAutoencoderGray(TestAutoencoder):
    def tiny_config(self):
        return ae_config(channels=1, image_size=16, factor=4, recon="mse")

    def sample_condition(self, model, n):
        return Condition(image=torch.rand(n, 1, 16, 16, generator=torch.Generator().manual_seed(5)))


def test_the_kl_term_is_the_closed_form_of_two_gaussians(monkeypatch):
    model = make_autoencoder().train()
    batch = image_batch(model.config, n=4)
    x = batch["x"].float() / 255 * 2 - 1
    mean, logvar = model.encoder(x)
    q = torch.distributions.Normal(mean, torch.exp(0.5 * logvar))
    want_kl = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).mean()
    torch.manual_seed(3)
    noise = torch.randn(mean.shape)
    torch.manual_seed(3)
    loss = model.losses(batch)["loss"]
    recon = F.l1_loss(model.decoder(mean + torch.exp(0.5 * logvar) * noise), x)
    assert torch.allclose(loss, recon + model.config.kl_weight * want_kl, atol=1e-5)


def test_the_round_trip_and_the_running_latent_scale():
    model = make_autoencoder()
    x = torch.rand(4, 3, 8, 8)
    with torch.no_grad():
        z = model.encode(x)
        out = model.decode(z)
    assert z.shape == (4, 4, 4, 4) and model.latent_shape == (4, 4, 4)
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    assert float(model.latent_std) == 1.0
    model.train()
    model.losses(image_batch(model.config, n=4))
    with torch.no_grad():
        std = float(model.encoder(image_batch(model.config, n=4)["x"].float() / 255 * 2 - 1)[0].std())
    assert float(model.latent_std) == pytest.approx(0.99 + 0.01 * std, rel=1e-5)
    model.eval()
    before = model.latent_std.clone()
    model.losses(image_batch(model.config, n=4))
    assert torch.equal(model.latent_std, before)  # evaluation does not move it
    name, base = model.baseline((x * 255).round().to(torch.uint8))
    assert base.shape == (4, 3, 8, 8) and base.dtype == torch.uint8 and "area /2" in name


def ldm_config(**kw) -> LatentDiffusionConfig:
    base = t2i_cfg(objective="flow")
    fields = {k: getattr(base, k) for k in ("channels", "image_size", "prompted", "text_words", "text_len", "width",
                                            "text_width", "text_layers", "timesteps", "sample_prompts")}
    return LatentDiffusionConfig(**{**fields, "latent_channels": 4, "latent_factor": 2, **kw})


class TestLatentDiffusion(ImageModelContract):
    def tiny_config(self):
        return ldm_config()

    def dummy_batch(self):
        return prompted_batch(self.tiny_config())

    def make_model(self, seed: int = 0):
        ae = make_autoencoder(seed + 1)
        ae.latent_std.fill_(0.7)
        torch.manual_seed(seed)
        return models.build(self.tiny_config(), {"autoencoder": ae})

    from tests.models.test_text_to_image import TestPromptedFlow as _T

    test_condition_argument = _T.test_condition_argument
    test_conditional_batch_without_labels_is_a_value_error = _T.test_conditional_batch_without_labels_is_a_value_error

    def test_save_load_round_trip(self, tmp_path):
        """As the contract's, with the autoencoder saved as a run and recorded under ``parents``."""
        model = self.make_model()
        batch = self.dummy_batch()
        self.adam_step(model, batch, "loss")
        model.autoencoder.save_pretrained(tmp_path / "ae")
        record = {"path": str(tmp_path / "ae"), "sha256": weights_sha256(tmp_path / "ae" / "model.safetensors")}
        model.save_pretrained(tmp_path / "ldm", run_config={"parents": {"autoencoder": record}})
        loaded = models.load(tmp_path / "ldm")
        assert type(loaded) is LatentDiffusion and float(loaded.autoencoder.latent_std) == pytest.approx(0.7)
        g = [torch.Generator().manual_seed(1) for _ in range(2)]
        assert torch.equal(model.sample(2, generator=g[0], steps=2), loaded.sample(2, generator=g[1], steps=2))


def test_the_unet_denoises_scaled_latents_and_samples_are_decoded():
    ae = make_autoencoder(1)
    ae.latent_std.fill_(0.5)
    model = models.build(ldm_config(), {"autoencoder": ae})
    assert model.space == (4, 4, 4) and model.image_shape == (3, 8, 8)
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(model.to_space(x), ae.encode(x) / 0.5)
    z = torch.randn(2, 4, 4, 4)
    assert torch.allclose(model.from_space(z), ae.decode(z * 0.5))
    out = model.sample(2, generator=torch.Generator().manual_seed(0), steps=2)
    assert out.shape == (2, 3, 8, 8)
    fill = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    fill[:, :, :3, :3] = True
    assert model.space_mask(fill)[:, :, :2, :2].all() and not model.space_mask(fill)[:, :, 2:, :].any()
    painted = model.inpaint(x, fill, generator=torch.Generator().manual_seed(0), steps=2, jump_length=1)
    assert torch.equal(painted[~fill.expand_as(x)], x[~fill.expand_as(x)])  # known pixels come back as given


def test_the_autoencoder_must_match():
    with pytest.raises(ConfigError, match="latent_channels"):
        models.build(ldm_config(latent_channels=8), {"autoencoder": make_autoencoder()})
    with pytest.raises(ConfigError, match="latent_factor is 4 but the autoencoder run's factor is 2"):
        models.build(ldm_config(latent_factor=4), {"autoencoder": make_autoencoder()})
    with pytest.raises(ValueError, match="missing \\['autoencoder'\\]"):
        models.build(ldm_config())
    with pytest.raises(NotImplementedError, match="latent-diffusion family has no likelihood"):
        models.build(ldm_config(), {"autoencoder": make_autoencoder()}).log_likelihood(prompted_batch(ldm_config()))


def test_the_chain_trains_samples_and_refuses_a_changed_autoencoder(tmp_path, capsys):
    ae, ldm = tmp_path / "ae", tmp_path / "ldm"
    fast = ["--no-progress", "--set", "train.num_threads=1"]
    assert main(["train", "tiny-autoencoder", "--out", str(ae), *fast]) == 0
    assert (ae / "samples.png").is_file()  # originals, the baseline and the reconstructions
    assert main(["train", "tiny-t2i", "--out", str(ldm), *fast, "--set", "model.family=latent-diffusion",
                 "--set", "model.latent_factor=2", "--set", f"parents.autoencoder={ae}"]) == 0
    model = models.load(ldm)
    assert type(model) is LatentDiffusion and model.space == (4, 4, 4)
    assert main(["sample", str(ldm), "--prompt", "digit 3", "--n", "4", "-o", str(tmp_path / "3.png")]) == 0
    assert main(["export", str(ldm), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0  # the chain travels
    chain = json.loads((tmp_path / "hf" / "chain.json").read_text())["parents"]["autoencoder"]
    assert chain["sha256"] == weights_sha256(ae / "model.safetensors")
    assert (tmp_path / "hf" / chain["path"] / "model.safetensors").read_bytes() == (ae / "model.safetensors").read_bytes()
    images = served_images(ldm, {"digit 7": 2})["digit 7"]
    assert len(images) == 2 and images[0].size == (8, 8)
    weights = ae / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    capsys.readouterr()
    assert main(["sample", str(ldm), "--prompt", "digit 3", "-o", str(tmp_path / "x.png")]) != 0
    assert "autoencoder" in capsys.readouterr().err


@pytest.mark.parametrize("backbone", ["unet", "dit"])
def test_the_onnx_chain_samples_in_onnxruntime_what_pytorch_samples(tmp_path, backbone):
    """text_encoder → guided Euler loop over the denoiser → decoder, all in onnxruntime, against render()."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from genforge.export.onnx import export_onnx
    from genforge.models.samplers import FlowEuler

    ae = make_autoencoder(1)
    ae.latent_std.fill_(0.7)
    torch.manual_seed(0)
    kw = dict(objective="flow", **(dict(backbone="dit", width=16, depth=1, heads=2, patch=2) if backbone == "dit"
                                   else {}))
    model = models.build(ldm_config(**kw), {"autoencoder": ae}).eval()
    with torch.no_grad():
        for p in model.parameters():  # open the DiT's zero gates; any weights must agree
            p.add_(0.05 * torch.randn_like(p))
    report = export_onnx(model, tmp_path)
    assert set(report["graphs"]) == {"text_encoder", "denoiser", "decoder"}
    run = {n: ort.InferenceSession(str(tmp_path / f"{n}.onnx"), providers=["CPUExecutionProvider"]).run
           for n in report["graphs"]}
    prompts, w, steps = ["red apple", "cat face"], 3.0, 4
    ids = model.tokenizer.encode(prompts)
    z = torch.randn(2, *model.space, generator=torch.Generator().manual_seed(3))
    want = model.render(z, ids, steps=steps, guidance=w)  # [2, 3, 8, 8] in [0, 1]
    both = torch.cat([ids, model.tokenizer.empty(2)]).numpy()
    tokens, keep, caption = run["text_encoder"](None, {"ids": both})
    x = z.numpy()
    sampler = FlowEuler(model.schedule, steps)
    for i, t in enumerate(sampler.timesteps.tolist()):
        fed = torch.full((4,), t).numpy()
        out = run["denoiser"](None, {"x_t": np.concatenate([x, x]), "t": fed, "tokens": tokens, "keep": keep,
                                     "caption": caption})[0]
        cond, uncond = out[:2], out[2:]
        x = x + float(sampler.sigmas[i + 1] - sampler.sigmas[i]) * (uncond + w * (cond - uncond))
    got = run["decoder"](None, {"z": x.astype(np.float32)})[0]
    assert got.shape == (2, 3, 8, 8)
    assert np.abs(got - want.numpy()).max() < 1e-4
