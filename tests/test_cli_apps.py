"""``genforge inpaint / upscale / interpolate / synth`` from the command line: outputs and bad input."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from genforge.cli import main
from genforge.config import DataConfig
from genforge.data import load_images
from genforge.training.run import train


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("app-runs")
    corpus = root / "corpus.txt"
    corpus.write_text("a small corpus of words.\n" * 200, encoding="utf-8")
    extra = {"tiny-gpt": [f"data.name=text:{corpus}", "train.eval_every=1000"]}
    return {r: train(r, overrides=["train.max_steps=3", "train.sample_every=0", *extra.get(r, [])], out=root / r,
                     progress=False).run_dir
            for r in ("tiny-gan", "tiny-vae", "tiny-diffusion", "tiny-sr", "tiny-gpt")}


@pytest.fixture
def digit(tmp_path):
    a = (np.arange(64).reshape(8, 8) * 4).astype(np.uint8)
    p = tmp_path / "d.png"
    Image.fromarray(a).save(p)
    return p, a


def run(capsys, argv):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def error_line(capsys, argv, pattern):
    code, _, err = run(capsys, argv)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and pattern in lines[0], err
    return lines[0]


FAST = {"tiny-gan": ["--steps", "2"], "tiny-vae": ["--steps", "2", "--encode-iters", "1"],
        "tiny-diffusion": ["--steps", "4", "--jump-length", "2", "--resamples", "2"]}


@pytest.mark.parametrize("recipe", ["tiny-gan", "tiny-vae", "tiny-diffusion"])
def test_inpaint_writes_the_image_with_known_pixels_kept(runs, capsys, tmp_path, digit, recipe):
    path, a = digit
    out = tmp_path / f"{recipe}.png"
    label = [] if recipe == "tiny-vae" else ["--label", "3"]  # tiny-vae is unconditional
    code, stdout, err = run(capsys, ["inpaint", str(runs[recipe]), "--image", str(path), "--mask", "center",
                                     *label, "-o", str(out), *FAST[recipe]])
    assert code == 0, err
    b = np.array(Image.open(out))
    assert b.shape == (8, 8)
    known = np.ones((8, 8), bool)
    known[2:6, 2:6] = False
    assert (b[known] == a[known]).all()
    assert "inpaint" in Image.open(out).text and str(out) in stdout


def test_inpaint_a_folder_with_a_mask_image_and_refusals(runs, capsys, tmp_path, digit):
    path, _ = digit
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        Image.open(path).save(folder / f"{i}.png")
    mask = np.zeros((8, 8), np.uint8)
    mask[:, :4] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    gan = str(runs["tiny-gan"])
    code, _, err = run(capsys, ["inpaint", gan, "--image", str(folder), "--mask", str(tmp_path / "mask.png"),
                                "-o", str(tmp_path / "out"), "--steps", "2"])
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0.png", "1.png", "2.png"]
    digest = hashlib.sha256((tmp_path / "out" / "0.png").read_bytes()).hexdigest()
    error_line(capsys, ["inpaint", gan, "--image", str(folder), "--mask", "center", "-o", str(tmp_path / "out")],
               "already exists; pass --overwrite")
    assert hashlib.sha256((tmp_path / "out" / "0.png").read_bytes()).hexdigest() == digest  # nothing overwritten
    Image.fromarray(np.zeros((9, 9), np.uint8)).save(tmp_path / "small.png")
    error_line(capsys, ["inpaint", gan, "--image", str(path), "--mask", str(tmp_path / "small.png"), "-o",
                        str(tmp_path / "x.png")], "mask is 9x9 but")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "empty.png")
    error_line(capsys, ["inpaint", gan, "--image", str(path), "--mask", str(tmp_path / "empty.png"), "-o",
                        str(tmp_path / "x.png")], "marks no pixel to fill")
    error_line(capsys, ["inpaint", gan, "--image", str(path), "--mask", "middle", "-o", str(tmp_path / "x.png")],
               "'middle' is neither an image file nor a built-in mask")
    error_line(capsys, ["inpaint", str(runs["tiny-gpt"]), "--image", str(path), "--mask", "center", "-o",
                        str(tmp_path / "x.png")], "does not generate images")
    error_line(capsys, ["inpaint", gan, "--image", str(tmp_path / "nope.png"), "--mask", "center", "-o",
                        str(tmp_path / "x.png")], "no such image file")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    error_line(capsys, ["inpaint", gan, "--image", str(tmp_path / "bad.png"), "--mask", "center", "-o",
                        str(tmp_path / "x.png")], "not a readable image")
    error_line(capsys, ["inpaint", gan, "--image", str(path), "--mask", "center", "-o", str(tmp_path / "x.png"),
                        "--restarts", "0"], "restarts must be in")
    assert not (tmp_path / "x.png").exists()


def test_inpaint_converts_colour_and_refuses_far_sizes_unless_resized(runs, capsys, tmp_path):
    gan = str(runs["tiny-gan"])
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(tmp_path / "rgb.png")
    code, _, err = run(capsys, ["inpaint", gan, "--image", str(tmp_path / "rgb.png"), "--mask", "left", "-o",
                                str(tmp_path / "a.png"), "--steps", "1"])
    assert code == 0 and "colour (RGB) image; converted to grayscale" in err
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "big.png")
    error_line(capsys, ["inpaint", gan, "--image", str(tmp_path / "big.png"), "--mask", "left", "-o",
                        str(tmp_path / "b.png")], "is 64x64 but the model works on 8x8 images; pass --resize")
    code, _, err = run(capsys, ["inpaint", gan, "--image", str(tmp_path / "big.png"), "--mask", "left", "-o",
                                str(tmp_path / "b.png"), "--resize", "--steps", "1"])
    assert code == 0 and "resized from 64x64 to 8x8" in err and Image.open(tmp_path / "b.png").size == (8, 8)


def test_upscale_and_its_size_check(runs, capsys, tmp_path):
    sr = str(runs["tiny-sr"])
    Image.fromarray(np.full((4, 4), 90, np.uint8)).save(tmp_path / "low.png")
    code, _, err = run(capsys, ["upscale", sr, "--image", str(tmp_path / "low.png"), "-o", str(tmp_path / "up.png"),
                                "--steps", "2"])
    assert code == 0, err and Image.open(tmp_path / "up.png").size == (8, 8)
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "odd.png")
    error_line(capsys, ["upscale", sr, "--image", str(tmp_path / "odd.png"), "-o", str(tmp_path / "u2.png")],
               "is 5x5; this model upscales to 8x8 from 4x4 (x2)")
    error_line(capsys, ["upscale", str(runs["tiny-gan"]), "--image", str(tmp_path / "low.png"), "-o",
                        str(tmp_path / "u3.png")], "does not take a source image (image); it takes a class label")
    error_line(capsys, ["sample", sr, "-o", str(tmp_path / "s.png")], "generates from a source image; give one")
    code, _, err = run(capsys, ["sample", sr, "--image", str(tmp_path / "low.png"), "--n", "2", "--steps", "2",
                                "-o", str(tmp_path / "s.png")])
    assert code == 0, err
    assert Image.open(tmp_path / "s.png").text["image"] == "low.png"


def test_interpolate_writes_a_strip_whose_ends_are_the_seed_samples(runs, capsys, tmp_path):
    gan = str(runs["tiny-gan"])
    code, _, err = run(capsys, ["interpolate", gan, "--steps", "5", "--from", "2", "--to", "9", "--labels", "1,4",
                                "--rows", "2", "-o", str(tmp_path / "strip.png")])
    assert code == 0, err
    strip = np.array(Image.open(tmp_path / "strip.png"))
    for seed, label, col in ((2, 1, 0), (9, 4, 4)):
        assert main(["sample", gan, "--n", "1", "--seed", str(seed), "--label", str(label), "-o",
                     str(tmp_path / f"s{seed}.png")]) == 0
        one = np.array(Image.open(tmp_path / f"s{seed}.png"))  # 2 px padding, 8x scale for 8 px images
        tile = strip[2:2 + 64, 2 + col * 66:2 + col * 66 + 64]
        assert (tile == one[2:66, 2:66]).all()
    error_line(capsys, ["interpolate", gan, "--from-image", "a.png", "--to-image", "b.png", "--labels", "0,1",
                        "-o", str(tmp_path / "x.png")], "cannot map real images to latents")
    error_line(capsys, ["interpolate", gan, "--labels", "1", "-o", str(tmp_path / "x.png")], "two classes A,B")


def test_synth_writes_an_imagefolder_dataset_once(runs, capsys, tmp_path):
    gan = str(runs["tiny-gan"])
    out = tmp_path / "syn"
    code, _, err = run(capsys, ["synth", gan, "--n", "40", "--out", str(out), "--seed", "1"])
    assert code == 0, err
    data = load_images(DataConfig(name=f"imagefolder:{out}"))
    assert data.num_classes == 10
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["class_counts"] == [4] * 10 and manifest["n"] == 40
    error_line(capsys, ["synth", gan, "--n", "4", "--out", str(out)], "already exists")
    error_line(capsys, ["synth", str(runs["tiny-vae"]), "--n", "4", "--out", str(tmp_path / "v")],
               "unconditional model")
