"""Shared contract tests every model family inherits (after diffusers' ``ModelTesterMixin``).

A family test class subclasses :class:`ModelContract` and supplies only
``tiny_config()`` (a complete config) and ``dummy_batch()`` (a synthetic batch
that config accepts). Image families can use :func:`image_batch`.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest
import torch

from genforge import models
from genforge.config import ConfigError, from_dict, to_dict
from genforge.models.base import GenerativeModel, ModelConfig


def image_batch(config: Any, n: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random uint8 images [n, C, S, S] and int64 labels [n] (covering several classes)."""
    g = torch.Generator().manual_seed(seed)
    s = config.image_size
    x = torch.randint(0, 256, (n, config.channels, s, s), generator=g, dtype=torch.uint8)
    y = torch.arange(n) % max(config.num_classes, 1)
    return {"x": x, "y": y}


class ModelContract:
    """Mixin of contract tests; subclasses define ``tiny_config`` and ``dummy_batch``."""

    # Every parameter tensor must get a non-zero gradient. A config may turn this off
    # where a zero is exact by construction (e.g. the hinge loss's logit bias at init).
    strict_nonzero_grads: bool = True

    def tiny_config(self) -> ModelConfig:
        raise NotImplementedError

    def dummy_batch(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    # ---- helpers
    def sample_condition(self, model: GenerativeModel, n: int) -> Any:
        """The condition ``sample`` is called with: None, unless the family cannot sample without one (a
        super-resolution family returns ``Condition(image=...)`` of n source images)."""
        return None

    @staticmethod
    def generates(model: GenerativeModel) -> bool:
        """False for a family that only encodes: its ``sample`` must refuse with :class:`NotGenerative`."""
        from genforge.models.capabilities import EmbedsTextAndImages

        return not isinstance(model, EmbedsTextAndImages)

    def refuses_to_sample(self, model: GenerativeModel) -> None:
        from genforge.models.capabilities import NotGenerative

        with pytest.raises(NotGenerative, match="does not generate"):
            model.sample(2, generator=torch.Generator().manual_seed(0))

    def make_model(self, seed: int = 0) -> GenerativeModel:
        torch.manual_seed(seed)
        return models.build(self.tiny_config())

    def group_losses(self, model: GenerativeModel, batch: dict, group: str) -> torch.Tensor:
        out = model.losses(batch, groups=(group,))
        assert group in out, f"losses(groups=({group!r},)) did not return {group!r}"
        return out[group]

    def adam_step(self, model: GenerativeModel, batch: dict, group: str, lr: float = 1e-2) -> None:
        params = model.param_groups()[group]
        opt = torch.optim.Adam(params, lr=lr)
        loss = self.group_losses(model, batch, group)
        loss.backward(inputs=params)
        opt.step()
        opt.zero_grad(set_to_none=True)

    @staticmethod
    def snapshot(params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
        return [p.detach().clone() for p in params]

    # ---- config
    def test_config_round_trips_strictly(self):
        config = self.tiny_config()
        again = from_dict(type(config), to_dict(config))
        assert again == config
        assert config.family in models.FAMILIES
        assert models.FAMILIES[config.family].config_class is type(config)

    # ---- losses and gradients
    def test_losses_are_finite_scalars_for_every_group(self):
        model = self.make_model()
        out = model.losses(self.dummy_batch())
        groups = model.param_groups()
        assert set(groups) <= set(out), f"groups without a loss: {set(groups) - set(out)}"
        for key, value in out.items():
            assert isinstance(value, torch.Tensor) and value.ndim == 0, f"{key} is not a scalar tensor"
            assert value.dtype.is_floating_point and torch.isfinite(value), f"{key} = {value}"
            if key not in groups:
                assert not value.requires_grad, f"logged entry {key} must be detached"

    def test_losses_for_one_group_returns_only_that_group(self):
        model = self.make_model()
        groups = list(model.param_groups())
        for group in groups:
            out = model.losses(self.dummy_batch(), groups=(group,))
            assert [k for k in out if k in groups] == [group]

    def test_unknown_group_is_a_value_error(self):
        with pytest.raises(ValueError, match="no_such_group"):
            self.make_model().losses(self.dummy_batch(), groups=("no_such_group",))

    def test_every_parameter_gets_a_gradient_from_its_group(self):
        model = self.make_model()
        batch = self.dummy_batch()
        for group, params in model.param_groups().items():
            self.group_losses(model, batch, group).backward(inputs=params)
            named = {id(p): n for n, p in model.named_parameters()}
            for p in params:
                name = named[id(p)]
                assert p.grad is not None, f"{group}: {name} got no gradient"
                assert torch.isfinite(p.grad).all(), f"{group}: {name} has a non-finite gradient"
                if self.strict_nonzero_grads:
                    assert p.grad.abs().sum() > 0, f"{group}: {name} has an all-zero gradient"
            assert sum(float(p.grad.abs().sum()) for p in params) > 0, f"{group}: all gradients are zero"

    def test_one_step_per_group_changes_its_weights(self):
        model = self.make_model()
        batch = self.dummy_batch()
        for group, params in model.param_groups().items():
            before = self.snapshot(params)
            opt = torch.optim.Adam(params, lr=1e-2)
            self.group_losses(model, batch, group).backward(inputs=params)
            must_move = [self.strict_nonzero_grads or bool(p.grad.abs().sum() > 0) for p in params]
            opt.step()
            stuck = [n for n, (a, p, m) in enumerate(zip(before, params, must_move)) if m and torch.equal(a, p)]
            assert not stuck, f"{group}: {len(stuck)} of {len(params)} tensors did not move"
            assert any(not torch.equal(a, p) for a, p in zip(before, params))

    def test_param_groups_are_disjoint_and_cover_trainable_params(self):
        model = self.make_model()
        seen: list[int] = [id(p) for params in model.param_groups().values() for p in params]
        assert len(seen) == len(set(seen)), "a parameter belongs to two groups"
        trainable = {id(p) for p in model.parameters() if p.requires_grad}
        assert set(seen) == trainable

    # ---- save / load
    def test_save_load_round_trip(self, tmp_path):
        model = self.make_model()
        batch = self.dummy_batch()
        for group in model.param_groups():  # move away from the init (and BatchNorm statistics)
            self.adam_step(model, batch, group)
        model.save_pretrained(tmp_path)
        loaded = models.load(tmp_path)
        assert type(loaded) is type(model) and loaded.config == model.config
        a, b = model.state_dict(), loaded.state_dict()
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key
        model.eval()
        seen = []
        for m in (model, loaded):
            torch.manual_seed(7)
            seen.append({k: v.detach() for k, v in m.losses(batch).items()})
        assert seen[0].keys() == seen[1].keys()
        for key in seen[0]:
            assert torch.equal(seen[0][key], seen[1][key]), key
        if not self.generates(model):
            return self.refuses_to_sample(loaded)
        s1 = model.sample(3, condition=self.sample_condition(model, 3), generator=torch.Generator().manual_seed(1))
        s2 = loaded.sample(3, condition=self.sample_condition(loaded, 3), generator=torch.Generator().manual_seed(1))
        assert torch.equal(s1, s2)

    # ---- sampling
    def test_sample_is_seeded(self):
        model = self.make_model()
        if not self.generates(model):
            return self.refuses_to_sample(model)
        a = model.sample(4, condition=self.sample_condition(model, 4), generator=torch.Generator().manual_seed(0))
        b = model.sample(4, condition=self.sample_condition(model, 4), generator=torch.Generator().manual_seed(0))
        c = model.sample(4, condition=self.sample_condition(model, 4), generator=torch.Generator().manual_seed(1))
        assert torch.equal(a, b)
        assert not torch.equal(a, c)

    def test_sample_leaves_model_state_alone(self):
        model = self.make_model()
        model.train()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        if not self.generates(model):
            return self.refuses_to_sample(model)
        model.sample(4, condition=self.sample_condition(model, 4), generator=torch.Generator().manual_seed(0))
        assert model.training
        for k, v in model.state_dict().items():
            assert torch.equal(before[k], v), f"sample() changed {k}"

    def test_unknown_sample_option_is_rejected_naming_the_valid_ones(self):
        model = self.make_model()
        with pytest.raises(ConfigError, match="no_such_option") as err:
            model.sample(2, condition=self.sample_condition(model, 2), no_such_option=1)
        for name in (f.name for f in dataclasses.fields(model.sample_options)):
            assert name in str(err.value)

    def test_conditions_are_declared_kinds_and_the_required_ones_are_required(self):
        from genforge.models.conditions import KINDS

        model = self.make_model()
        accepted, required = model.accepted_conditions(), model.required_conditions()
        assert set(accepted) <= set(KINDS) and set(required) <= set(accepted)
        if required:
            with pytest.raises(ValueError, match=required[0]):
                model.sample(2, generator=torch.Generator().manual_seed(0))

    def test_capabilities_are_declared_names(self):
        model = self.make_model()
        caps = model.capabilities()
        assert caps[0] == ("sample" if self.generates(model) else "embed") and len(set(caps)) == len(caps)
        info = model.describe_likelihood()
        assert (info is None) == (not any(c.startswith("likelihood:") for c in caps))

    # ---- likelihood
    def test_log_likelihood_shape_or_not_implemented(self):
        model = self.make_model()
        batch = self.dummy_batch()
        try:
            ll = model.log_likelihood(batch)
        except NotImplementedError as e:
            assert model.family in str(e)
            return
        assert ll.shape == (batch["x"].shape[0],)
        assert ll.dtype.is_floating_point and torch.isfinite(ll).all()

    def test_losses_are_deterministic_given_the_global_seed(self):
        model = self.make_model().eval()
        batch = self.dummy_batch()
        torch.manual_seed(3)
        a = model.losses(batch)
        torch.manual_seed(3)
        b = model.losses(batch)
        for key in a:
            assert torch.equal(a[key], b[key]), key


class ImageModelContract(ModelContract):
    """Contract of image families: batches ``{"x": uint8 [B, C, S, S], "y": int64 [B]}``,
    samples float32 [n, C, S, S] in [0, 1], labels as ``condition``."""

    def dummy_batch(self) -> dict[str, torch.Tensor]:
        return image_batch(self.tiny_config())

    def test_sample_shape_dtype_range(self):
        model = self.make_model()
        cfg = model.config
        if not self.generates(model):
            return self.refuses_to_sample(model)
        for n in (1, 5):
            x = model.sample(n, condition=self.sample_condition(model, n), generator=torch.Generator().manual_seed(0))
            assert x.shape == (n, cfg.channels, cfg.image_size, cfg.image_size)
            assert x.dtype == torch.float32 and x.device == model.device
            assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
            assert not x.requires_grad

    def test_condition_argument(self):
        model = self.make_model()
        cfg = model.config
        g = torch.Generator().manual_seed(0)
        if not self.generates(model):
            return self.refuses_to_sample(model)
        if "label" not in model.accepted_conditions():
            with pytest.raises(ValueError, match="unconditional" if not model.required_conditions() else "image"):
                model.sample(2, condition=1, generator=g)
            return
        threes = model.sample(4, condition=3, generator=torch.Generator().manual_seed(0))
        listed = model.sample(4, condition=[3, 3, 3, 3], generator=torch.Generator().manual_seed(0))
        assert threes.shape[0] == 4 and torch.equal(threes, listed)
        for bad in (cfg.num_classes, -1, [0, 1]):
            with pytest.raises(ValueError, match="label"):
                model.sample(4, condition=bad, generator=g)

    def test_conditional_batch_without_labels_is_a_value_error(self):
        model = self.make_model()
        batch = {"x": self.dummy_batch()["x"]}
        if not model.config.conditional:
            assert set(model.param_groups()) <= set(model.losses(batch))
            return
        with pytest.raises(ValueError, match="labels"):
            model.losses(batch)
        bad = {"x": batch["x"], "y": torch.full((batch["x"].shape[0],), model.config.num_classes)}
        with pytest.raises(ValueError, match="labels in"):
            model.losses(bad)

    # ---- input checks
    def test_wrong_image_shape_names_the_expected_shape(self):
        model = self.make_model()
        cfg = model.config
        batch = dict(self.dummy_batch())
        batch["x"] = batch["x"][:, :, :-1, :-1].contiguous()
        expected = f"[B, {cfg.channels}, {cfg.image_size}, {cfg.image_size}]"
        with pytest.raises(ValueError, match=re.escape(expected)):
            model.losses(batch)

    def test_float_images_are_rejected(self):
        model = self.make_model()
        batch = dict(self.dummy_batch())
        batch["x"] = batch["x"].float() / 255
        with pytest.raises(TypeError, match="uint8"):
            model.losses(batch)

    def test_incomplete_config_cannot_build(self):
        config = self.tiny_config()
        config.image_size = 0
        with pytest.raises(ValueError, match="image_size"):
            models.build(config)
