"""The trainer on toy models: group alternation, schedules, EMA, checkpoints, NaN handling."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from genforge.config import TrainConfig
from genforge.models.base import GenerativeModel, ModelConfig
from genforge.training.checkpoint import list_checkpoints, load_state
from genforge.training.ema import EMA
from genforge.training.logger import read_metrics
from genforge.training.optim import build_optimizer, lr_factor
from genforge.training.trainer import Trainer, TrainingError


@dataclass(kw_only=True)
class ToyConfig(ModelConfig):
    family: str = "toy"
    nan_at: int = -1  # the loss becomes NaN on this call of losses() (-1: never)


class Toy(GenerativeModel):
    """Two groups: 'a' fits w to the batch mean, 'b' fits v to 2 * w (detached)."""

    config_class = ToyConfig
    family = "toy"

    def __init__(self, config):
        super().__init__(config)
        self.w = nn.Parameter(torch.zeros(3))
        self.v = nn.Parameter(torch.zeros(3))
        self.calls: list[str] = []

    def param_groups(self):
        return {"a": [self.w], "b": [self.v]}

    def losses(self, batch, *, groups=None):
        groups = groups or ("a", "b")
        self.calls.append(groups[0])
        out = {}
        if "a" in groups:
            out["a"] = ((self.w - batch["x"].float().mean(0)) ** 2).sum()
        if "b" in groups:
            out["b"] = ((self.v - 2 * self.w.detach()) ** 2).sum()
        if len(self.calls) == self.config.nan_at:
            out = {k: v * float("nan") for k, v in out.items()}
        out["extra"] = torch.tensor(1.5)
        return out


class Stream:
    def __init__(self):
        self.position = 0

    def __next__(self):
        self.position += 1
        return {"x": torch.full((4, 3), float(self.position % 5))}

    def state_dict(self):
        return {"position": self.position}

    def load_state_dict(self, s):
        self.position = s["position"]


def make(tmp_path, **train):
    cfg = TrainConfig(**{"max_steps": 10, "batch_size": 4, "lr": 0.1, "log_every": 2, "progress": False,
                         "checkpoint_every": 4, "sample_every": 0, **train})
    model = Toy(ToyConfig())
    return Trainer(model, cfg, Stream(), tmp_path), model


def test_groups_alternate_with_group_steps(tmp_path):
    trainer, model = make(tmp_path, max_steps=3, group_steps={"a": 2})
    trainer.fit()
    assert model.calls == ["a", "a", "b"] * 3
    assert trainer.batches.position == 9  # a fresh batch for every update


def test_metrics_are_logged_with_extras(tmp_path):
    trainer, _ = make(tmp_path)
    trainer.fit()
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == [2, 4, 6, 8, 10]
    assert all({"a", "b", "extra", "lr", "images_per_s"} <= set(r) for r in records)
    assert records[0]["extra"] == 1.5


def test_checkpoints_keep_last_k(tmp_path):
    trainer, _ = make(tmp_path, keep_checkpoints=2)
    result = trainer.fit()
    steps = [s for s, _ in list_checkpoints(tmp_path)]
    assert steps == [8, 10]
    assert load_state(result.checkpoint)["step"] == 10
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]  # no temporaries


def test_unknown_group_in_config_is_rejected(tmp_path):
    with pytest.raises(TrainingError, match=r"unknown parameter groups \['generatr'\]"):
        make(tmp_path, group_steps={"generatr": 2})


def test_nan_loss_stops_and_keeps_last_checkpoint(tmp_path):
    cfg = TrainConfig(max_steps=20, lr=0.1, log_every=1, progress=False, checkpoint_every=4, sample_every=0)
    model = Toy(ToyConfig(nan_at=13))  # call 13 = step 6 (0-based), group a
    trainer = Trainer(model, cfg, Stream(), tmp_path)
    with pytest.raises(TrainingError, match=r"step 6: the 'a' loss became nan.*step-00000004 is intact"):
        trainer.fit()
    [(step, ckpt)] = list_checkpoints(tmp_path)
    assert step == 4
    assert load_state(ckpt)["step"] == 4


@pytest.mark.parametrize("schedule", ["constant", "cosine", "linear"])
def test_lr_schedule_shape(schedule):
    cfg = TrainConfig(max_steps=110, warmup_steps=10, schedule=schedule, min_lr_ratio=0.1)
    f = [lr_factor(s, cfg) for s in range(110)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)  # linear warmup
    assert all(a <= b + 1e-12 for a, b in zip(f[:10], f[1:10]))
    if schedule == "constant":
        assert f[-1] == 1.0
    else:
        assert all(a >= b - 1e-12 for a, b in zip(f[10:], f[11:]))  # monotone decay
        assert lr_factor(110, cfg) == pytest.approx(0.1)
        if schedule == "cosine":
            assert lr_factor(60, cfg) == pytest.approx(0.1 + 0.9 * 0.5)


@pytest.mark.parametrize("name", ["adamw", "adam"])
def test_optimizer_is_fused_and_matches_the_reference_loop(name):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 4), nn.LayerNorm(4), nn.Linear(4, 3))
    ref = [p.detach().clone().requires_grad_() for p in net.parameters()]
    init = [p.detach().clone() for p in net.parameters()]
    params = list(net.parameters())
    cfg = TrainConfig(optimizer=name, weight_decay=0.1, betas=(0.9, 0.95))
    opt = build_optimizer(params, 1e-2, cfg)
    assert all(g["fused"] for g in opt.param_groups)
    if name == "adamw":  # decay on matrices only
        assert [(g["weight_decay"], [p.ndim for p in g["params"]]) for g in opt.param_groups] == [
            (0.1, [2, 2]), (0.0, [1, 1, 1, 1])]
        ref_opt = torch.optim.AdamW([{"params": [r for r in ref if r.ndim >= 2], "weight_decay": 0.1},
                                     {"params": [r for r in ref if r.ndim < 2], "weight_decay": 0.0}],
                                    lr=1e-2, betas=(0.9, 0.95), foreach=False)
    else:
        ref_opt = torch.optim.Adam(ref, lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1, foreach=False)
    for _ in range(5):
        x = torch.randn(8, 5)
        for ps, o in ((params, opt), (ref, ref_opt)):
            o.zero_grad()
            out = torch.func.functional_call(net, dict(zip([n for n, _ in net.named_parameters()], ps)), (x,))
            out.square().mean().backward()
            o.step()
    for p, r, p0 in zip(params, ref, init):
        torch.testing.assert_close(p, r, rtol=1e-5, atol=1e-6)
        assert (p - p0).abs().max() > 1e-3  # every parameter moved


def test_ema_tracks_with_warmup():
    model = nn.Linear(2, 1, bias=False)
    ema = EMA(model, decay=0.9)
    with torch.no_grad():
        model.weight.fill_(1.0)
    start = ema.shadow.weight.clone()
    ema.update(model)
    d = min(0.9, 2 / 11)
    assert torch.allclose(ema.shadow.weight, d * start + (1 - d) * 1.0)
    for _ in range(200):
        ema.update(model)
    assert torch.allclose(ema.shadow.weight, torch.ones(1, 2), atol=1e-6)
    assert not any(p.requires_grad for p in ema.shadow.parameters())


def test_fp16_on_cpu_is_refused(tmp_path):
    with pytest.raises(RuntimeError, match="fp16-mixed needs CUDA"):
        make(tmp_path, device="cpu", precision="fp16-mixed")


def test_bf16_autocast_trains_on_cpu(tmp_path):
    trainer, model = make(tmp_path, device="cpu", precision="bf16-mixed", max_steps=30)
    trainer.fit()
    assert math.isfinite(float(model.w.detach().sum()))
    assert model.w.dtype == torch.float32  # parameters stay fp32


def test_ema_averages_float_buffers_and_copies_counters():
    model = nn.BatchNorm1d(2)
    ema = EMA(model, decay=0.5)
    with torch.no_grad():
        model.running_mean.fill_(4.0)
    model.num_batches_tracked.fill_(7)
    for _ in range(20):
        ema.update(model)
    d = 0.5  # min(0.5, (1+n)/(10+n)) = 0.5 from the 9th update on
    assert 0 < 4.0 - float(ema.shadow.running_mean[0]) < 4.0 * d ** 11
    assert int(ema.shadow.num_batches_tracked) == 7


def test_a_run_stopped_between_log_steps_logs_its_last_partial_window(tmp_path):
    trainer, _ = make(tmp_path, log_every=4, max_steps=20)

    def stop_at_6(model, step):  # as if SIGINT arrived during step 6
        if step == 6:
            trainer._stop_signal = "SIGINT"

    trainer.on_sample, trainer.cfg.sample_every = stop_at_6, 3
    result = trainer.fit()
    assert (result.step, result.stopped) == (6, "interrupted")
    records = [r for r in read_metrics(tmp_path) if "a" in r]
    assert [r["step"] for r in records] == [4, 6]  # the window of steps 5-6 is logged too
    assert result.last_losses == {k: records[-1][k] for k in result.last_losses}
    assert set(result.last_losses) == {"a", "b", "extra"}


def test_max_minutes_stop_logs_the_final_step(tmp_path):
    trainer, _ = make(tmp_path, log_every=1000, max_steps=1000, max_minutes=1e-9, checkpoint_every=0)
    result = trainer.fit()
    assert (result.step, result.stopped) == (1, "max_minutes")
    records = read_metrics(tmp_path)
    assert records[-1]["step"] == 1 and result.last_losses["a"] == records[-1]["a"]


def test_max_steps_not_a_multiple_of_log_every_is_logged_once(tmp_path):
    trainer, _ = make(tmp_path, log_every=4, max_steps=10)
    result = trainer.fit()
    assert [r["step"] for r in read_metrics(tmp_path)] == [4, 8, 10]
    assert result.last_losses["a"] == read_metrics(tmp_path)[-1]["a"]


@pytest.mark.parametrize("max_minutes", [0.0, 5.0])
def test_progress_bar_with_and_without_a_time_budget(tmp_path, max_minutes):
    trainer, _ = make(tmp_path, progress=True, max_minutes=max_minutes)
    assert trainer.fit().step == 10
