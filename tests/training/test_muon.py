"""train.optimizer=muon: Muon on the hidden matrices, AdamW on the rest, one schedule, exact resume."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import genforge.training.muon as muon_module

from genforge.cli import main
from genforge.config import ConfigError, TrainConfig, from_dict
from genforge.models.gpt import GPT, GPTConfig
from genforge.training.checkpoint import list_checkpoints
from genforge.training.muon import MuonAdamW, split_hidden
from genforge.training.optim import build_optimizer, lr_factor, set_lr
from genforge.training.run import train

MUON = dict(optimizer="muon", lr=1e-3, muon_lr=0.02, weight_decay=0.0)


def names(model: nn.Module, params: list[nn.Parameter]) -> list[str]:
    by_id = {id(p): n for n, p in model.named_parameters()}
    return [by_id[id(p)] for p in params]


# ---------------------------------------------------------------------------- which parameters are hidden matrices
def test_gpt_hidden_matrices_are_the_block_linears_and_the_tied_head_stays_with_adamw():
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16))
    assert model.lm_head.weight is model.transformer.wte.weight
    hidden, rest = split_hidden(list(model.parameters()), model)
    assert names(model, hidden) == [f"transformer.h.{i}.{m}.weight" for i in range(2)
                                    for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")]
    assert {"transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight",
            "transformer.h.0.attn.c_attn.bias"} <= set(names(model, rest))
    assert all(p.ndim != 2 or "wte" in n or "wpe" in n for n, p in zip(names(model, rest), rest))
    opt = build_optimizer(list(model.parameters()), 1e-3, TrainConfig(**MUON), model=model)
    assert isinstance(opt, MuonAdamW) and list(opt.optimizers) == ["muon", "adamw"]
    assert [p for g in opt.optimizers["muon"].param_groups for p in g["params"]] == hidden


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(3, 16)  # a class embedding
        self.conv = nn.Conv2d(1, 4, 3)
        self.norm = nn.BatchNorm2d(4)
        self.hidden = nn.Linear(4 * 6 * 6, 16)
        self.head = nn.Linear(16, 1)  # a scalar head: a vector, not a hidden map
        self.decode = nn.Linear(16, 3, bias=False)
        self.decode.weight = self.embed.weight  # tied to the embedding

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.hidden(self.norm(self.conv(x)).flatten(1)).relu() + self.embed(y)
        return self.head(h).squeeze(1) + self.decode(h).logsumexp(1)


def test_conv_kernels_norms_embeddings_and_scalar_heads_go_to_adamw():
    net = ConvNet()
    hidden, rest = split_hidden(list(net.parameters()), net)
    assert names(net, hidden) == ["hidden.weight"]
    assert set(names(net, rest)) == {"embed.weight", "conv.weight", "conv.bias", "norm.weight", "norm.bias",
                                     "hidden.bias", "head.weight", "head.bias"}
    no_matrix = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2, 1))
    opt = build_optimizer(list(no_matrix.parameters()), 1e-3, TrainConfig(**MUON), model=no_matrix)
    assert list(opt.optimizers) == ["adamw"]  # no hidden matrix: no Muon at all


def test_muon_without_the_model_is_a_clear_error():
    with pytest.raises(ValueError, match="optimizer=muon needs the model"):
        build_optimizer(list(nn.Linear(3, 3).parameters()), 1e-3, TrainConfig(**MUON))


# ---------------------------------------------------------------------------- the update
def spread_gradient(rows: int, cols: int, singular: list[float]) -> torch.Tensor:
    """A [rows, cols] matrix with the given singular values (widely spread)."""
    g = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(rows, rows, generator=g))
    v, _ = torch.linalg.qr(torch.randn(cols, cols, generator=g))
    s = torch.zeros(rows, cols)
    s[range(len(singular)), range(len(singular))] = torch.tensor(singular)
    return u @ s @ v.T


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_hidden_matrix_update_is_orthogonalised_and_equals_torch_muon_alone(monkeypatch, dtype):
    """With bf16 iterations (CPUs with bf16 instructions, GPUs) the update is torch.optim.Muon's bit for bit;
    with fp32 iterations (the other CPUs) it equals it to bf16's precision."""
    monkeypatch.setattr(muon_module, "ns_dtype", lambda device: dtype)
    net = nn.Sequential(nn.Linear(8, 6), nn.Tanh(), nn.Linear(6, 1))
    ref_w = copy.deepcopy(net[0].weight)
    ref_b = copy.deepcopy(net[0].bias)
    cfg = TrainConfig(**dict(MUON, weight_decay=0.1))
    opt = build_optimizer(list(net.parameters()), cfg.lr, cfg, model=net)
    scale = cfg.muon_lr / cfg.lr
    ref_muon = torch.optim.Muon([ref_w], lr=cfg.muon_lr, weight_decay=cfg.weight_decay / scale, momentum=0.95)
    ref_adamw = torch.optim.AdamW([ref_b], lr=cfg.lr, betas=cfg.betas, weight_decay=0.0)
    grad = spread_gradient(6, 8, [4.0, 2.0, 1.0, 0.5, 0.25, 0.1])
    for _ in range(3):
        before = net[0].weight.detach().clone()
        for p, r in ((net[0].weight, ref_w), (net[0].bias, ref_b)):
            p.grad = r.grad = grad.clone() if p.ndim == 2 else torch.ones_like(p)
        for p in (net[2].weight, net[2].bias):
            p.grad = torch.ones_like(p)
        opt.step()
        ref_muon.step()
        ref_adamw.step()
        if dtype == torch.bfloat16:
            assert torch.equal(net[0].weight, ref_w)  # bit for bit torch.optim.Muon
        else:
            torch.testing.assert_close(net[0].weight, ref_w, atol=0.03 * cfg.muon_lr, rtol=0)  # bf16: ~1% per step
        torch.testing.assert_close(net[0].bias, ref_b)
    # the last update, decay removed: its singular values are near-equal, the gradient's span 40x
    lr = cfg.muon_lr * max(1, 6 / 8) ** 0.5
    update = (before * (1 - cfg.muon_lr * cfg.weight_decay / scale) - net[0].weight.detach()) / lr
    sv = torch.linalg.svdvals(update)
    assert sv.max() / sv.min() < 2.0 and 0.5 < sv.min() and sv.max() < 1.5, sv
    assert torch.linalg.svdvals(grad)[:6].max() / torch.linalg.svdvals(grad)[:6].min() > 39


def test_the_schedule_scales_both_peaks():
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16))
    cfg = TrainConfig(**dict(MUON, max_steps=20, warmup_steps=4, schedule="cosine", min_lr_ratio=0.1))
    for peak in (cfg.lr, 3 * cfg.lr):  # train.lr, or a group_lr override: Muon's peak moves in proportion
        opt = build_optimizer(list(model.parameters()), peak, cfg, model=model)
        muon, adamw = opt.optimizers["muon"], opt.optimizers["adamw"]
        for step in (0, 3, 10, 19):
            f = lr_factor(step, cfg)
            set_lr(opt, peak * f)  # what the trainer does each step
            assert all(g["lr"] == pytest.approx(cfg.muon_lr * peak / cfg.lr * f) for g in muon.param_groups)
            assert all(g["lr"] == pytest.approx(peak * f) for g in adamw.param_groups)


def test_grad_scaler_and_clipping_step_as_without_them():
    """An enabled GradScaler (fp16's path) with unscale_ + clipping gives the unscaled step, and skips on inf."""
    torch.manual_seed(0)
    nets = [nn.Sequential(nn.Linear(5, 7), nn.LayerNorm(7), nn.Linear(7, 3))]
    nets.append(copy.deepcopy(nets[0]))
    cfg = TrainConfig(**MUON)
    opts = [build_optimizer(list(n.parameters()), cfg.lr, cfg, model=n) for n in nets]
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    x = torch.randn(4, 5)
    for step in range(3):
        for i, (net, opt) in enumerate(zip(nets, opts)):
            opt.zero_grad(set_to_none=True)
            loss = net(x).square().mean() * (float("inf") if step == 1 else 1.0)
            if i == 0:
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(list(net.parameters()), 0.5)
                scaler.step(opt)
                scaler.update()
            elif step != 1:  # the reference skips the inf step by hand
                loss.backward()
                torch.nn.utils.clip_grad_norm_(list(net.parameters()), 0.5)
                opt.step()
        for a, b in zip(*(n.parameters() for n in nets)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert scaler.get_scale() == 2.0 ** 9  # the inf step halved the scale


def test_state_of_another_optimizer_does_not_load():
    net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    opt = build_optimizer(list(net.parameters()), 1e-3, TrainConfig(**MUON), model=net)
    adamw = build_optimizer(list(net.parameters()), 1e-3, TrainConfig(optimizer="adamw"))
    with pytest.raises(ValueError, match=r"holds \['param_groups', 'state'\].*\['adamw', 'muon'\]"):
        opt.load_state_dict(adamw.state_dict())


# ---------------------------------------------------------------------------- through the real trainer
def write_corpus(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "input.txt").write_text("".join(f"Line {i}: to be or not to be, that is it.\n" for i in range(300)))
    return folder


@pytest.mark.parametrize("precision", ["fp32", "bf16-mixed"])
def test_resume_through_train_is_bit_exact(tmp_path, precision):
    """6 steps straight vs 3 steps, stop with a checkpoint, resume to 6: the same weights, bit for bit."""
    corpus, cache = write_corpus(tmp_path / "corpus"), tmp_path / "cache"
    overrides = ["data.verify=false", "train.optimizer=muon", f"train.precision={precision}", "train.max_steps=6",
                 "train.warmup_steps=2", "train.schedule=cosine", "train.grad_clip=1.0", "train.eval_every=3",
                 "train.sample_every=0", "train.checkpoint_every=6", "train.keep_checkpoints=5", "train.trackers=[]",
                 "train.num_threads=1"]
    common = dict(data_dir=corpus, cache_dir=cache, progress=False)
    straight = train("tiny-gpt", overrides=overrides, out=tmp_path / "straight", **common)
    stopped = train("tiny-gpt", overrides=overrides, out=tmp_path / "stopped", on_eval=lambda step, m: step == 3,
                    **common)
    assert (straight.result.step, stopped.result.step, stopped.result.stopped) == (6, 3, "stopped_by_hook")
    resumed = train(out=tmp_path / "stopped", resume=True, **common)
    assert resumed.result.step == 6
    finals = [load_file(list_checkpoints(r.run_dir)[-1][1] / "model.safetensors") for r in (straight, resumed)]
    assert finals[0].keys() == finals[1].keys()
    assert [k for k in finals[0] if not torch.equal(finals[0][k], finals[1][k])] == []
    start = load_file(list_checkpoints(stopped.run_dir)[0][1] / "model.safetensors")
    assert not torch.equal(start["transformer.h.0.mlp.c_fc.weight"], finals[0]["transformer.h.0.mlp.c_fc.weight"])


# ---------------------------------------------------------------------------- validation
def test_bad_muon_values_name_their_field():
    with pytest.raises(ConfigError) as e:
        from_dict(TrainConfig, {"optimizer": "muon", "muon_momentum": 1.5}, prefix="train")
    assert (e.value.key, str(e.value)) == ("train.muon_momentum",
                                           "invalid value: train.muon_momentum must be in [0, 1), got 1.5")
    with pytest.raises(ConfigError) as e:
        from_dict(TrainConfig, {"optimizer": "muon", "muon_lr": 0.0}, prefix="train")
    assert e.value.key == "train.muon_lr" and "muon_lr must be positive, got 0.0" in str(e.value)
    with pytest.raises(ConfigError, match="optimizer"):
        from_dict(TrainConfig, {"optimizer": "muons"}, prefix="train")


def test_bad_muon_momentum_is_one_line_through_the_cli(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "tiny-gpt", "--out", str(out), "--no-progress",
                 "--set", "train.optimizer=muon", "--set", "train.muon_momentum=1.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "train.muon_momentum must be in [0, 1), got 1.5" in err, err
    assert not out.exists()
