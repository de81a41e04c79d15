"""Masks, seeded inpainting of uint8 images, interpolation strips and synthetic datasets (the sampling layer)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from genforge.config import DataConfig
from genforge.data import load_images
from genforge.data.samples import load_samples
from genforge.models.diffusion import Diffusion, DiffusionConfig
from genforge.models.gan import GAN, GANConfig
from genforge.models.gpt import GPT, GPTConfig
from genforge.models.vae import VAE, VAEConfig
from genforge.rundir import RunDirError
from genforge.sampling.images import ImagePipeline
from genforge.sampling.inpaint import inpaint_images
from genforge.sampling.interpolate import interpolate, slerp
from genforge.sampling.masks import builtin_mask, check_mask, check_size, read_mask
from genforge.sampling.synth import class_counts, folder_names, manifest, synthesize, write_dataset

S = 8


def gan(conditional=True):
    return GAN(GANConfig(channels=1, image_size=S, conditional=conditional, num_classes=3 if conditional else 0,
                         g_width=4, d_width=4, z_dim=4, class_names=["zero", "one", "two"] if conditional else []))


def vae():
    return VAE(VAEConfig(channels=1, image_size=S, conditional=True, num_classes=3, latent_dim=3, width=4))


def flow():
    return Diffusion(DiffusionConfig(channels=1, image_size=S, conditional=True, num_classes=3, width=8,
                                     objective="flow", timesteps=50))


# ---------------------------------------------------------------- masks
def test_builtin_masks_cover_the_named_regions():
    c = builtin_mask("center", 28)[0, 0]
    assert int(c.sum()) == 14 * 14 and bool(c[7:21, 7:21].all())
    assert int(builtin_mask("left", 28)[0, 0, :, :14].sum()) == 28 * 14 == int(builtin_mask("left", 28).sum())
    assert bool(builtin_mask("bottom", 8)[0, 0, 4:].all()) and not bool(builtin_mask("bottom", 8)[0, 0, :4].any())
    r = builtin_mask("random:0.3", 28, n=50, seed=1)
    assert r.shape == (50, 1, 28, 28) and abs(float(r.float().mean()) - 0.3) < 0.02
    assert not torch.equal(r[0], r[1]) and torch.equal(r, builtin_mask("random:0.3", 28, n=50, seed=1))


@pytest.mark.parametrize("spec,match", [("middle", "unknown mask 'middle'"), ("random:2", "FRACTION"),
                                        ("random:x", "FRACTION")])
def test_bad_builtin_masks_name_the_problem(spec, match):
    with pytest.raises(ValueError, match=match):
        builtin_mask(spec, 8)


def test_mask_images_and_their_checks(tmp_path):
    a = np.zeros((8, 8), np.uint8)
    a[2:4, 2:4] = 255
    Image.fromarray(a).save(tmp_path / "m.png")
    m = read_mask(tmp_path / "m.png")
    assert m.shape == (1, 8, 8) and int(m.sum()) == 4
    image = torch.zeros(1, 8, 8, dtype=torch.uint8)
    assert check_mask(m, image, "x.png") is m
    with pytest.raises(ValueError, match="mask is 8x8 but x.png is 9x9"):
        check_mask(m, torch.zeros(1, 9, 9, dtype=torch.uint8), "x.png")
    with pytest.raises(ValueError, match="marks no pixel to fill"):
        check_mask(torch.zeros_like(m), image, "x.png")
    with pytest.raises(ValueError, match="is 16x16 but the model works on 8x8 images; pass --resize"):
        check_size(torch.zeros(1, 16, 16, dtype=torch.uint8), 8, "big.png")
    assert check_size(torch.zeros(1, 16, 16, dtype=torch.uint8), 8, "big.png", resize=True).shape == (1, 8, 8)


# ---------------------------------------------------------------- inpainting uint8 images
def test_inpaint_images_keeps_known_pixels_bit_identical_and_does_not_depend_on_the_batch():
    model = flow().eval()
    x = torch.randint(0, 256, (4, 1, S, S), dtype=torch.uint8)
    fill = builtin_mask("random:0.5", S, n=4, seed=3)
    opts = {"steps": 4, "jump_length": 2, "resamples": 2, "classify": 2}
    a = inpaint_images(model, x, fill, seed=5, batch_size=4, options=opts)
    b = inpaint_images(model, x, fill, seed=5, batch_size=1, options=opts)
    assert a.dtype == torch.uint8 and torch.equal(a, b)
    assert torch.equal(a[~fill.expand_as(a)], x[~fill.expand_as(x)])
    assert not torch.equal(a, inpaint_images(model, x, fill, seed=6, options=opts))


def test_inpaint_images_refuses_what_cannot_be_inpainted():
    gpt = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=1, n_embd=8))
    x = torch.zeros(1, 1, S, S, dtype=torch.uint8)
    with pytest.raises(ValueError, match="gpt model, which cannot inpaint"):
        inpaint_images(gpt, x, builtin_mask("center", S))
    with pytest.raises(ValueError, match="at least one pixel"):
        inpaint_images(gan(), x, torch.zeros(1, 1, S, S, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"images must be uint8 \[B, 1, 8, 8\]"):
        inpaint_images(gan(), torch.zeros(1, 3, S, S, dtype=torch.uint8), builtin_mask("center", S))


# ---------------------------------------------------------------- interpolation
@pytest.mark.parametrize("make,opts", [(gan, {}), (vae, {}), (flow, {"steps": 5})])
def test_interpolation_ends_are_the_plain_samples_of_the_seeds(make, opts):
    model = make().eval()
    pipe = ImagePipeline(model)
    for labels in ((None, None), (1, 2)):
        strip = interpolate(model, 6, seeds=(3, 7), labels=labels, options=opts)
        assert strip.shape == (6, 1, S, S) and strip.dtype == torch.uint8
        first = pipe.generate(1, condition=labels[0], seed=3, options=opts)
        last = pipe.generate(1, condition=labels[1], seed=7, options=opts)
        assert torch.equal(strip[0], first[0]) and torch.equal(strip[-1], last[0])
        assert not torch.equal(strip[2], strip[0])


def test_interpolation_between_real_images_needs_an_inverting_family():
    x = torch.zeros(1, S, S, dtype=torch.uint8), torch.full((1, S, S), 255, dtype=torch.uint8)
    with pytest.raises(ValueError, match="cannot map real images to latents"):
        interpolate(gan(), 4, images=x, labels=(0, 1))
    with pytest.raises(ValueError, match="needs the label of each image"):
        interpolate(vae(), 4, images=x)
    strip = interpolate(vae(), 4, images=x, labels=(0, 1))
    assert strip.shape == (4, 1, S, S)
    with pytest.raises(ValueError, match=r"steps must be in \[2, 256\]"):
        interpolate(gan(), 1)


def test_slerp_ends_norm_and_parallel_case():
    a, b = torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 3.0]])
    assert torch.allclose(slerp(a, b, 0.0), a) and torch.allclose(slerp(a, b, 1.0), b)
    mid = slerp(a, b, 0.5)
    assert torch.allclose(mid.norm(), torch.tensor(3.0)) and torch.allclose(mid[0, 0], mid[0, 1])
    assert torch.allclose(slerp(a, 2 * a, 0.5), 1.5 * a)  # parallel: linear


# ---------------------------------------------------------------- synthetic datasets
def test_synth_folder_reads_back_through_imagefolder_with_balanced_classes(tmp_path):
    pipe = ImagePipeline(gan(), name="g")
    x, y = synthesize(pipe, 31, seed=2, batch_size=8)
    assert x.shape == (31, 1, S, S) and torch.bincount(y).tolist() == class_counts(31, 3) == [11, 10, 10]
    meta = manifest(pipe, y, seed=2, options=pipe.model.parse_sample_options({}), run="runs/g")
    out = write_dataset(x, y, tmp_path / "syn", meta)
    data = load_images(DataConfig(name=f"imagefolder:{out}"))
    assert data.num_classes == 3 and data.classes == ["0-zero", "1-one", "2-two"]
    allx = torch.cat([data.train_x, data.test_x])
    ally = torch.cat([data.train_y, data.test_y])
    assert torch.bincount(ally).tolist() == [11, 10, 10]
    # every image came back with its label: match pixels
    for k in range(3):
        want = {bytes(t.numpy().tobytes()) for t in x[y == k]}
        assert {bytes(t.numpy().tobytes()) for t in allx[ally == k]} == want
    saved = json.loads((out / "manifest.json").read_text())
    assert saved["class_counts"] == [11, 10, 10] and saved["seed"] == 2 and saved["family"] == "gan"


def test_synth_npz_and_refusals(tmp_path):
    pipe = ImagePipeline(gan(), name="g")
    x, y = synthesize(pipe, 9, seed=0)
    meta = manifest(pipe, y, seed=0, options=pipe.model.parse_sample_options({}), run="g")
    f = write_dataset(x, y, tmp_path / "s.npz", meta)
    assert torch.equal(load_samples(f), x)
    with np.load(f) as z:
        assert z["y"].tolist() == y.tolist() and json.loads(str(z["manifest"]))["n"] == 9
    before = f.read_bytes()
    with pytest.raises(RunDirError, match="already exists"):
        write_dataset(x, y, f, meta)
    assert f.read_bytes() == before
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(RunDirError, match="already exists"):
        write_dataset(x, y, tmp_path / "full", meta)
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="unconditional model"):
        synthesize(ImagePipeline(gan(conditional=False)), 4)


def test_folder_names_sort_in_label_order():
    names = folder_names(12, ["ankle boot", "bag"] + [str(i) for i in range(2, 12)])
    assert names[:3] == ["00-ankle_boot", "01-bag", "02"] and sorted(names) == names
