"""Text–image alignment: the contrastive loss against an explicit computation, CLIP score and R-precision on
constructed embeddings, and a tiny contrastive evaluator that learns to match shapes with their captions."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from genforge.data import ImageData
from genforge.evaluation.features.contrastive import (ContrastiveConfig, load_contrastive, save_contrastive,
                                                      train_contrastive)
from genforge.metrics.text_image import clip_score, r_precision
from genforge.models.clip import contrastive_loss


def test_the_contrastive_loss_is_clips_symmetric_cross_entropy():
    g = torch.Generator().manual_seed(0)
    a, b = F.normalize(torch.randn(5, 8, generator=g), dim=1), F.normalize(torch.randn(5, 8, generator=g), dim=1)
    scale = 7.0
    total = 0.0
    for i in range(5):  # image i against every text, and text i against every image, in float64
        row = [scale * float(a[i].double() @ b[j].double()) for j in range(5)]
        col = [scale * float(a[j].double() @ b[i].double()) for j in range(5)]
        total += -row[i] + math.log(sum(math.exp(v) for v in row))
        total += -col[i] + math.log(sum(math.exp(v) for v in col))
    assert float(contrastive_loss(a, b, scale)) == pytest.approx(total / 10, rel=1e-5)


def test_clip_score_and_r_precision_on_constructed_embeddings():
    e = torch.eye(150)[:, :150]  # 150 orthonormal captions
    assert clip_score(e[:10], e[:10]) == pytest.approx(100.0)
    assert clip_score(e[:10], -e[:10]) == 0.0  # clipped at 0
    truth = torch.arange(20)
    g = torch.Generator().manual_seed(0)
    assert r_precision(e[:20], truth, e, k=100, generator=g) == 1.0  # each image is its own caption
    noisy = F.normalize(torch.randn(2000, 150, generator=g), dim=1)  # images unrelated to their captions
    chance = r_precision(noisy, torch.randint(0, 150, (2000,), generator=g), e, k=100, generator=g)
    assert abs(chance - 0.01) < 0.01  # 1 / k
    same = torch.zeros(150, dtype=torch.long)  # every caption "the same text": no others to draw
    with pytest.raises(ValueError, match="other captions"):
        r_precision(e[:1], truth[:1], e, k=100, generator=g, same=same)


def _shapes(n: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    """Red/green/blue squares and circles at random places, 16 px, with captions."""
    g = torch.Generator().manual_seed(seed)
    colours = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 230)}
    xs, caps = [], []
    yy, xx = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    for i in range(n):
        colour, shape = list(colours)[i % 3], ("square", "circle")[(i // 3) % 2]
        cy, cx = (int(v) for v in torch.randint(5, 11, (2,), generator=g))
        inside = ((yy - cy).abs() <= 3) & ((xx - cx).abs() <= 3) if shape == "square" else \
            (yy - cy) ** 2 + (xx - cx) ** 2 <= 12
        img = torch.full((3, 16, 16), 255, dtype=torch.uint8)
        for c in range(3):
            img[c][inside] = colours[colour][c]
        xs.append(img)
        caps.append(f"a {colour} {shape}")
    return torch.stack(xs), caps


def test_a_tiny_evaluator_learns_which_caption_goes_with_which_image(tmp_path):
    x, caps = _shapes(240, 0)
    tx, tcaps = _shapes(60, 1)
    data = ImageData(name="shapes", train_x=x, train_y=None, test_x=tx, test_y=None, classes=[],
                     train_text=caps, test_text=tcaps)
    config = ContrastiveConfig(channels=3, image_size=16, width=32, image_width=8, text_layers=1, steps=150,
                               batch_size=48, lr=3e-3)
    net, report = train_contrastive(data, config, progress=False)
    assert report["heldout_r_precision_k"] == 6 and report["heldout_r_precision"] > 0.8  # chance: 1/6
    sha = save_contrastive(net, tmp_path / "c.safetensors", report)
    again, rep, sha2 = load_contrastive(tmp_path / "c.safetensors")
    assert sha == sha2 and rep == report
    assert torch.equal(again.embed_images(tx), net.embed_images(tx))
    same_seed, _ = train_contrastive(data, config, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), same_seed.state_dict().values()))
