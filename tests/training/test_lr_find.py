"""The learning-rate range test: a geometric sweep, a suggestion one decade below the lowest loss, clear refusals."""

from __future__ import annotations

import math

import pytest
import torch

from genforge.cli import main
from genforge.config import TrainConfig
from genforge.models.gpt import GPT, GPTConfig
from genforge.training.lr_find import LRFindError, lr_range_test, zero_phase
from tests.training.test_text_run import corpus  # noqa: F401 - the fixture


def _batches(vocab: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    data = torch.arange(4096) % vocab  # a periodic sequence: learnable, so the loss falls before it diverges
    while True:
        starts = torch.randint(0, 4096 - 33, (16,), generator=g)
        yield {"x": torch.stack([data[s:s + 33] for s in starts])}


def test_the_sweep_is_geometric_and_the_suggestion_is_the_lowest_point_of_the_zero_phase_curve():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=16, block_size=32, n_layer=1, n_head=2, n_embd=32))
    r = lr_range_test(model, TrainConfig(optimizer="adamw"), _batches(), start=1e-5, end=10.0, steps=60)
    ratios = [b / a for a, b in zip(r.lrs, r.lrs[1:])]
    assert max(ratios) == pytest.approx(min(ratios), rel=1e-9) and ratios[0] > 1
    assert r.lrs[0] == pytest.approx(1e-5)
    k = min(range(len(r.smoothed)), key=r.smoothed.__getitem__)
    assert r.best_lr == r.lrs[k] and r.suggestion == r.best_lr
    assert r.smoothed == zero_phase(r.losses, 0.9)
    assert r.stopped == "diverged" and len(r.lrs) < 60  # lr 10 breaks Adam on this model
    assert r.smoothed[k] < r.losses[0] - 0.5  # the loss fell well below its start before the minimum
    assert 1e-4 < r.suggestion < 1.0 and r.steepest <= r.best_lr
    assert r.csv().splitlines()[0] == "step,lr,loss,smoothed_loss" and len(r.csv().splitlines()) == len(r.lrs) + 1


def test_zero_phase_smoothing_has_no_lag():
    step = [0.0] * 20 + [1.0] * 20
    causal, centred = zero_phase(step, 0.0), zero_phase(step, 0.8)
    assert causal == step  # beta 0 is the identity
    assert centred[19] < 0.5 < centred[20]  # the edge stays between 19 and 20, in the middle of the jump
    assert centred == pytest.approx([1 - v for v in zero_phase([1 - v for v in step], 0.8)])  # symmetric


def test_bad_sweeps_and_two_player_models_are_refused():
    from genforge.models.gan import GAN, GANConfig

    model = GPT(GPTConfig(vocab_size=16, block_size=8, n_layer=1, n_head=1, n_embd=8))
    with pytest.raises(LRFindError, match="0 < start < end"):
        lr_range_test(model, TrainConfig(), _batches(), start=1.0, end=0.1)
    with pytest.raises(LRFindError, match="at least 10 steps"):
        lr_range_test(model, TrainConfig(), _batches(), steps=3)
    gan = GAN(GANConfig(channels=1, image_size=8, z_dim=4, g_width=4, d_width=4))
    with pytest.raises(LRFindError, match="gan model trains 2 parameter groups against each other"):
        lr_range_test(gan, TrainConfig(), iter(()))


def test_cli_find_lr_prints_the_suggestion_and_writes_the_plot(corpus, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "lr"
    argv = ["train", "tiny-gpt", "--data-dir", str(corpus), "--no-verify", "--find-lr", "--find-lr-steps", "30",
            "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    suggested = float(text.split("suggested train.lr: ")[1].split()[0])
    assert math.isfinite(suggested) and f"--set train.lr={suggested:.2e}" in text
    assert (out / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = (out / "lr_find.csv").read_text().splitlines()
    assert len(rows) >= 4 and not (out / "config.yaml").exists()  # not a run directory
    assert main(argv) == 2  # the folder is not empty any more: refused, files kept
    assert "exists and is not an empty folder" in capsys.readouterr().err
    assert (out / "lr_find.png").is_file()
    assert main(["train", "tiny-gan", "--find-lr", "--out", str(tmp_path / "g"), "--no-progress"]) == 2
    assert "against each other" in capsys.readouterr().err
