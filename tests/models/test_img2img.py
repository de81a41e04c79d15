"""img2img (SDEdit): strength 0 gives the source back, strength 1 is sampling seed for seed, the level a
source is noised to, folder seeding, and the ``genforge img2img`` command's refusals."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

from genforge import models
from genforge.cli import main
from genforge.config import FieldError
from genforge.models.conditions import Condition
from genforge.models.diffusion import DiffusionConfig
from genforge.models.img2img import first_step, noised_to
from genforge.models.samplers import make_sampler
from genforge.models.schedules import FlowSchedule, NoiseSchedule
from genforge.sampling.img2img import img2img_images
from tests.models.test_latent_diffusion import ldm_config, make_autoencoder
from tests.models.test_text_to_image import cfg as t2i_cfg

LABELLED = DiffusionConfig(channels=1, image_size=8, width=8, timesteps=50, conditional=True, num_classes=3,
                           vlb_timesteps=4)
CASES = [(t2i_cfg(objective="flow"), "euler", {"text": ("red apple",)}),
         (t2i_cfg(), "dpm++", {"text": ("cat face",)}), (LABELLED, "ddim", {"label": 1}),
         (LABELLED, "ddpm", {"label": 2})]


def build(config):
    torch.manual_seed(0)
    return models.build(config).eval()


def sources(config, n: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(9)
    return torch.randint(0, 256, (n, config.channels, 8, 8), dtype=torch.uint8, generator=g)


@pytest.mark.parametrize("config, sampler, cond", CASES)
def test_strength_zero_returns_the_source_and_one_is_sampling_seed_for_seed(config, sampler, cond):
    model, src = build(config), sources(config)
    g = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    zero = model.sample(3, condition=Condition(image=src, strength=0.0, **cond), generator=g(), steps=6,
                        sampler=sampler)
    assert torch.equal((zero * 255).round().to(torch.uint8), src)
    one = model.sample(3, condition=Condition(image=src, strength=1.0, **cond), generator=g(), steps=6, sampler=sampler)
    assert torch.equal(one, model.sample(3, condition=Condition(**cond), generator=g(), steps=6, sampler=sampler))
    half = model.sample(3, condition=Condition(image=src, strength=0.5, **cond), generator=g(), steps=6,
                        sampler=sampler)
    assert not torch.equal(half, one) and not torch.equal(half, zero)


def test_the_source_is_noised_to_the_level_of_the_first_step_that_runs():
    assert [first_step(10, s) for s in (0.0, 0.25, 0.6, 1.0)] == [10, 8, 4, 0]
    x0, noise = torch.full((1, 2), 0.5), torch.full((1, 2), -1.0)
    ddpm = make_sampler("ddim", NoiseSchedule("linear", 100), 10)
    ab = float(ddpm.schedule.alphas_cumprod[int(ddpm.timesteps[4])])
    assert torch.allclose(noised_to(ddpm, x0, noise, 4), math.sqrt(ab) * x0 + math.sqrt(1 - ab) * noise)
    flow = make_sampler("euler", FlowSchedule(100), 10)
    sigma = float(flow.sigmas[4])
    assert torch.allclose(noised_to(flow, x0, noise, 4), (1 - sigma) * x0 + sigma * noise)
    assert noised_to(flow, x0, noise, 0) is noise and noised_to(flow, x0, noise, 10) is x0
    with pytest.raises(FieldError, match="strength"):
        first_step(10, 1.5)


def test_latent_img2img_at_strength_zero_is_the_autoencoders_round_trip():
    ae = make_autoencoder(1)
    ae.latent_std.fill_(0.7)
    torch.manual_seed(0)
    model = models.build(ldm_config(), {"autoencoder": ae}).eval()
    src = sources(model.config, 2)
    out = model.sample(2, condition=Condition(image=src, strength=0.0), generator=torch.Generator().manual_seed(0),
                       steps=4)
    assert torch.allclose(out, model.from_space(model.to_space(src.float() / 255)), atol=1e-6)


def test_each_image_of_a_folder_has_its_own_seed_whatever_the_batch():
    model, src = build(LABELLED), sources(LABELLED, 4)
    kw = {"strength": 0.5, "condition": Condition(label=1), "options": {"steps": 5}}
    whole = img2img_images(model, src, seed=3, batch_size=4, **kw)
    split = img2img_images(model, src, seed=3, batch_size=3, **kw)
    alone = img2img_images(model, src[2:3], seed=5, **kw)
    assert torch.equal(whole, split) and torch.equal(whole[2:3], alone)
    with pytest.raises(FieldError, match="image"):
        model.sample(2, condition=Condition(image=sources(LABELLED, 2)[:, :, :4, :4]), steps=2)


def test_the_command_regenerates_a_folder_and_refuses_bad_input_in_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "tiny-diffusion", "--out", str(run), "--no-progress", "--set", "train.max_steps=2",
                 "--set", "train.num_threads=1"]) == 0
    model = models.load(run)
    c, s, _ = model.image_shape
    folder = tmp_path / "in"
    folder.mkdir()
    for i, img in enumerate(sources(model.config, 2)):
        Image.fromarray(img[0].numpy() if c == 1 else img.permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
    assert main(["img2img", str(run), "--image", str(folder), "--strength", "0", "-o", str(tmp_path / "out")]) == 0
    for i in range(2):  # strength 0: the sources come back, pixel for pixel
        assert Image.open(tmp_path / "out" / f"{i}.png").tobytes() == Image.open(folder / f"{i}.png").tobytes()
    capsys.readouterr()
    for args, words in ((["--strength", "1.5"], "strength must be"), (["--prompt", "a cat"], "prompt"),
                        (["--label", "12"], "label")):
        code = main(["img2img", str(run), "--image", str(folder / "0.png"), *args, "-o", str(tmp_path / "x.png")])
        err = capsys.readouterr().err
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x.png").exists()
    gan = tmp_path / "gan"
    assert main(["train", "tiny-gan", "--out", str(gan), "--no-progress", "--set", "train.max_steps=2"]) == 0
    code = main(["img2img", str(gan), "--image", str(folder / "0.png"), "-o", str(tmp_path / "x.png")])
    assert code == 2 and "cannot do img2img" in capsys.readouterr().err


@pytest.mark.parametrize("objective, sampler", [("flow", "euler"), ("ddpm", "ddim")])
def test_ddib_round_trip_reconstructs_the_models_own_samples(objective, sampler):
    from genforge.sampling.images import to_uint8
    from genforge.sampling.translate import translate_images

    model = build(DiffusionConfig(channels=1, image_size=8, width=8, timesteps=100, conditional=True, num_classes=3,
                                  vlb_timesteps=4, objective=objective))
    opts = {"steps": 50, "sampler": sampler}
    x = to_uint8(model.sample(4, condition=1, generator=torch.Generator().manual_seed(0), **opts))
    same = translate_images(model, x, source=Condition(label=1), target=Condition(label=1), options=opts)
    mse = float(((same.float() - x.float()) ** 2).mean())
    assert 10 * math.log10(255 ** 2 / max(mse, 1e-9)) > 40  # the ODE run backwards, then forwards
    other = translate_images(model, x, source=Condition(label=1), target=Condition(label=2), options=opts)
    assert not torch.equal(other, same)
    assert torch.equal(other, translate_images(model, x, source=Condition(label=1), target=Condition(label=2),
                                               options=opts))  # deterministic


def test_translation_refuses_what_it_cannot_do():
    from genforge.sampling.translate import translate_images

    model, src = build(LABELLED), sources(LABELLED, 2)
    with pytest.raises(ValueError, match="method must be"):
        translate_images(model, src, source=None, target=Condition(label=1), method="cyclegan")
    with pytest.raises(ValueError, match="sdedit translates within one model"):
        translate_images(model, src, source=None, target=None, method="sdedit", target_model=build(LABELLED))
    bigger = build(DiffusionConfig(channels=1, image_size=16, width=8, timesteps=50, vlb_timesteps=4))
    with pytest.raises(ValueError, match="latents differ in shape"):
        translate_images(model, src, source=Condition(label=0), target=None, target_model=bigger,
                         options={"steps": 2, "sampler": "ddim"})


def test_the_translate_command_writes_a_folder(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "tiny-diffusion", "--out", str(run), "--no-progress", "--set", "train.max_steps=2",
                 "--set", "train.num_threads=1"]) == 0
    folder = tmp_path / "in"
    folder.mkdir()
    for i, img in enumerate(sources(LABELLED, 2)):
        Image.fromarray(img[0].numpy()).save(folder / f"{i}.png")
    assert main(["translate", str(run), "--image", str(folder), "--from", "1", "--to", "7", "--steps", "4",
                 "-o", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0.png", "1.png"]
    assert Image.open(tmp_path / "out" / "0.png").text["method"] == "ddib"
    capsys.readouterr()
    code = main(["translate", str(run), "--image", str(folder), "--from", "1", "--to", "12", "-o",
                 str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and "label" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "x").exists()


@pytest.mark.parametrize("objective, sampler", [("flow", "euler"), ("ddpm", "ddim")])
def test_fixed_point_refinement_solves_the_samplers_own_step(objective, sampler):
    """Trained briefly so the ODE bends: refined inversion renders back closer than the explicit one."""
    from genforge.sampling.images import to_uint8

    model = build(DiffusionConfig(channels=1, image_size=8, width=8, timesteps=100, conditional=True, num_classes=3,
                                  vlb_timesteps=4, objective=objective)).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    batch = {"x": sources(LABELLED, 8), "y": torch.arange(8) % 3}
    for _ in range(20):
        opt.zero_grad()
        model.losses(batch)["loss"].backward()
        opt.step()
    model.eval()
    x = to_uint8(model.sample(4, condition=1, generator=torch.Generator().manual_seed(0), steps=8, sampler=sampler))
    y = torch.full((4,), 1)
    errors = []
    for refine in (0, 4):
        z = model.invert(x.float() / 255, y, refine=refine, steps=8, sampler=sampler)
        errors.append(float((model.render(z, y, steps=8, sampler=sampler) * 255 - x.float()).abs().mean()))
    assert errors[1] < errors[0] / 2, errors
    with pytest.raises(FieldError, match="refine"):
        model.invert(x.float() / 255, y, refine=-1, steps=8, sampler=sampler)
