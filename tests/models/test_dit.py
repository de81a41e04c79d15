"""The DiT backbone of the diffusion family: the model contract (class-conditional and text-to-image), the
patch layout of its stem and head, adaLN-Zero's identity start, and masked text tokens."""

from __future__ import annotations

import pytest
import torch

from genforge.config import ConfigError, FieldError
from genforge.models.diffusion import Diffusion, DiffusionConfig
from genforge.models.dit import DiT, patchify, sincos_positions, unpatchify
from tests.models.contract import ImageModelContract
from tests.models import test_text_to_image as t2i
from tests.models.test_text_to_image import cfg as prompted_cfg, prompted_batch

DIT = dict(backbone="dit", width=16, depth=1, heads=2, patch=2)


class TestDiTClassConditional(ImageModelContract):
    strict_nonzero_grads = False  # adaLN-Zero: at init only the gates and the head get a gradient (see below)

    def tiny_config(self):
        return DiffusionConfig(channels=1, image_size=8, num_classes=10, conditional=True, timesteps=50,
                               vlb_timesteps=4, **DIT)


class TestDiTPrompted(t2i.TestPromptedFlow):
    strict_nonzero_grads = False

    def make_model(self, seed: int = 0):
        """Open the adaLN-Zero gates and the zero head, so that the prompt changes the samples."""
        model = super().make_model(seed)
        with torch.no_grad():
            for name, p in model.dit.named_parameters():
                if name.startswith(("head.", "ada.")) or ".ada." in name:
                    p.normal_(0.0, 0.05)
        return model

    def tiny_config(self):
        return prompted_cfg(objective="flow", **DIT)


def test_patches_round_trip_and_the_stem_reads_them_in_the_heads_order():
    x = torch.randn(2, 3, 8, 8)
    tokens = patchify(x, 2)  # [2, 16, 12]
    assert tokens.shape == (2, 16, 12) and torch.equal(unpatchify(tokens, 2, 3), x)
    assert torch.equal(tokens[0, 5], x[0, :, 2:4, 2:4].permute(1, 2, 0).reshape(-1))  # token (1, 1)
    net = DiT(3, 8, width=16, depth=1, heads=2, patch=2)
    conv = net.embed_patches.weight  # [D, C, p, p] → a linear map of (row, column, channel)-flattened patches
    want = tokens @ conv.permute(0, 2, 3, 1).reshape(16, -1).T + net.embed_patches.bias
    got = net.embed_patches(x).flatten(2).transpose(1, 2)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_sincos_positions_are_distinct_and_bounded():
    pos = sincos_positions(4, 16)
    assert pos.shape == (16, 16) and float(pos.abs().max()) <= 1.0
    assert torch.cdist(pos, pos).fill_diagonal_(1.0).min() > 0.1  # every token has its own position


def test_a_fresh_dit_predicts_zero_and_its_blocks_start_as_the_identity():
    torch.manual_seed(0)
    net = DiT(4, 8, width=32, depth=2, heads=4, patch=2, context=8)
    x, t = torch.randn(3, 4, 8, 8), torch.tensor([1.0, 10.0, 500.0])
    text = (torch.randn(3, 5, 8), torch.ones(3, 5, dtype=torch.bool))
    assert torch.equal(net.trunk(x, net.embed(t, None), text), torch.zeros_like(x))
    block, h = net.blocks[0], torch.randn(3, 16, 32)
    block.cross.weight.data.zero_(), block.cross.bias.data.zero_()
    torch.testing.assert_close(block(h, net.embed(t, None), text), h)


def test_every_parameter_learns_once_the_gates_open():
    torch.manual_seed(0)
    model = Diffusion(prompted_cfg(objective="flow", **DIT))
    batch = prompted_batch(model.config, 8)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        model.losses(batch)["loss"].backward()
        opt.step()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead


def test_masked_text_tokens_do_not_change_the_prediction():
    torch.manual_seed(0)
    net = DiT(4, 8, width=32, depth=2, heads=4, patch=2, context=8)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([3.0, 300.0])
    context, keep = torch.randn(2, 5, 8), torch.tensor([[True] * 3 + [False] * 2] * 2)
    other = context.clone()
    other[:, 3:] = torch.randn(2, 2, 8)  # change only the padding
    emb = net.embed(t, None)
    a, b = net.trunk(x, emb, (context, keep)), net.trunk(x, emb, (other, keep))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, net.trunk(x, emb, (torch.randn(2, 5, 8), keep)))


@pytest.mark.parametrize("kw, match", [
    (dict(depth=0), "depth"), (dict(heads=0), "heads"), (dict(patch=3), "patch"), (dict(width=18), "width")])
def test_bad_dit_options_name_the_field(kw, match):
    with pytest.raises(FieldError, match=match):
        DiffusionConfig(channels=1, image_size=8, **{**DIT, **kw})


def test_a_patch_that_does_not_divide_the_side_is_refused():
    with pytest.raises(FieldError, match="patch.*divide the denoised side 6"):
        Diffusion(DiffusionConfig(channels=1, image_size=6, **{**DIT, "patch": 4}))


def test_a_dit_teacher_cannot_be_distilled():
    from genforge.models.distill import DiffusionDistill, DistillConfig

    teacher = Diffusion(DiffusionConfig(channels=1, image_size=8, objective="flow", **DIT))
    student = DiffusionDistill(DistillConfig(channels=1, image_size=8, width=16))
    with pytest.raises(ConfigError, match="'dit' teacher"):
        student.attach_parents({"teacher": teacher})
