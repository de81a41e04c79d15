"""A genforge latent text-to-image run against diffusers' ``UNet2DConditionModel`` + ``DDPMScheduler`` trained
from scratch in a plain loop on the same latents, with the same caption encoder, for the same wall time.

    python bench/t2i_vs_diffusers.py RUN [--seconds S | --budget-steps N] [--data-dir DIR] [--n 200] [--size 32]

RUN is a ``latent-diffusion`` run with ``prompted: true`` (e.g. ``emoji-ldm``). The baseline stands on RUN's
autoencoder parent and tokenizer, and trains for RUN's own training time (``elapsed_s`` of its last log line)
unless ``--seconds`` says otherwise. The baseline's step budget is that time at its own rate over its steps
5-30 (which need an idle machine; later load then slows the run but does not change its result), or
``--budget-steps N`` exactly (no probe: a budget probed before, on a machine that is not idle now):

- latents: every training image encoded once up front by the autoencoder (mean / ``latent_std``, as genforge
  does), not counted in the time;
- text: genforge's caption encoder (a :class:`~genforge.models.text_encoder.TextEncoder` of the run's width and
  layers) trained jointly, its token vectors as ``encoder_hidden_states`` with the padding masked;
- denoiser: ``UNet2DConditionModel`` with RUN's level widths, one layer per block, cross-attention at every
  level (Stable Diffusion's block types), ε-prediction MSE under ``DDPMScheduler`` (1000 steps, linear betas);
- the same optimiser settings as the recipe: AdamW at RUN's ``train.lr`` with its warm-up (then constant),
  gradient clipping 1.0, EMA of RUN's decay with the usual warm-up (min(decay, (1 + n) / (10 + n)), as
  diffusers' ``EMAModel`` and genforge), batch RUN's ``train.batch_size``, caption dropout RUN's
  ``label_dropout`` (the empty caption), bf16 autocast where RUN used it.

Both then draw one image per test-split caption (N = the test split, 20 steps each, RUN's guidance;
diffusers: ``DPMSolverMultistepScheduler`` with classifier-free guidance), scored by ``genforge eval --samples``
(FID, precision/recall, density/coverage in the data set's evaluator) and by the text–image bench's contrastive
evaluator (CLIP score, R-precision among ``--k`` captions) on ``--n`` held-out and ``--n`` training captions.
diffusers is a bench dependency only.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_machine, require_idle  # noqa: E402
from text_to_image import _distinct, _evaluator, _scores  # noqa: E402


def diffusers_unet(run_config: dict):
    from diffusers import UNet2DConditionModel

    from genforge.models.unet import plan_levels

    m = run_config["model"]
    side = m["image_size"] // m["latent_factor"]
    widths = plan_levels(side, m["width"], m["max_mult"]).widths
    return UNet2DConditionModel(
        sample_size=side, in_channels=m["latent_channels"], out_channels=m["latent_channels"], layers_per_block=1,
        block_out_channels=widths, down_block_types=("CrossAttnDownBlock2D",) * len(widths),
        up_block_types=("CrossAttnUpBlock2D",) * len(widths), cross_attention_dim=m["text_width"],
        attention_head_dim=4, norm_num_groups=min(32, widths[0]))


class Baseline(torch.nn.Module):
    """diffusers' U-Net + genforge's caption encoder: (latents [B, Z, s, s], timesteps int64 [B], ids [B, L])."""

    def __init__(self, run_config: dict, vocab_size: int) -> None:
        super().__init__()
        from genforge.models.text_encoder import TextEncoder

        m = run_config["model"]
        self.unet = diffusers_unet(run_config)
        self.text = TextEncoder(vocab_size, m["text_len"], m["text_width"], m["text_layers"])

    def forward(self, z: torch.Tensor, t: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        tokens, keep, _ = self.text(ids)
        return self.unet(z, t, encoder_hidden_states=tokens, encoder_attention_mask=keep).sample


PROBE = (5, 30)  # steps timed to set the step budget (the machine must be idle for them)


def train_baseline(pipe, data, run_config: dict, seconds: float, out: Path, budget: int | None = None) -> dict:
    """Train the baseline for ``budget`` steps (None: ``seconds`` at the rate probed over its steps
    :data:`PROBE`) and save its EMA's state dict to ``out``."""
    from diffusers import DDPMScheduler

    from genforge.data import BatchStream

    model, tcfg = pipe.model, run_config["train"]
    torch.manual_seed(0)
    with torch.no_grad():
        latents = torch.cat([model.to_space(data.train_x[i:i + 256].float() / 255)
                             for i in range(0, len(data.train_x), 256)])  # [N, Z, s, s]
        ids = model.tokenizer.encode(data.train_text, strict=False)  # [N, L]
    net = Baseline(run_config, model.tokenizer.vocab_size)
    ema = copy.deepcopy(net).requires_grad_(False)
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    opt = torch.optim.AdamW(net.parameters(), lr=tcfg["lr"], betas=tuple(tcfg["betas"]),
                            weight_decay=tcfg["weight_decay"])
    warmup, decay, dropout = tcfg["warmup_steps"], tcfg["ema_decay"], run_config["model"]["label_dropout"]
    bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported() and tcfg["precision"] in ("auto", "bf16")
    stream = BatchStream(torch.arange(len(latents)), None, tcfg["batch_size"], seed=0)
    empty = model.tokenizer.empty(1)
    steps, t0, probe = 0, time.perf_counter(), budget is None
    while budget is None or steps < budget:
        if probe and steps == PROBE[0]:
            t_probe = time.perf_counter()
        elif probe and steps == PROBE[1]:  # the step budget of ``seconds`` at the probed rate, safe from later load
            rate = (PROBE[1] - PROBE[0]) / (time.perf_counter() - t_probe)
            budget = max(PROBE[1], round(seconds * rate))
            print(f"probed {rate:.2f} steps/s: training {budget} steps", flush=True)
        index = next(stream)["x"]
        z0, y = latents[index], ids[index].clone()
        y[torch.rand(len(y)) < dropout] = empty[0]
        noise = torch.randn_like(z0)
        t = torch.randint(0, 1000, (len(z0),))
        for group in opt.param_groups:
            group["lr"] = tcfg["lr"] * min(1.0, (steps + 1) / max(1, warmup))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            pred = net(scheduler.add_noise(z0, noise, t), t, y)
        loss = F.mse_loss(pred.float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        with torch.no_grad():  # EMA warmed up as diffusers' EMAModel and genforge do: min(decay, (1+n)/(10+n))
            d = min(decay, (1 + steps) / (10 + steps))
            for e, p in zip(ema.parameters(), net.parameters()):
                e.lerp_(p, 1 - d)
        steps += 1
    seconds = time.perf_counter() - t0
    torch.save(ema.state_dict(), out)
    return {"steps": steps, "seconds": seconds, "loss": float(loss.detach()), "bf16": bf16,
            "parameters": sum(p.numel() for p in net.unet.parameters())}


@torch.no_grad()
def sample_baseline(net: Baseline, model, prompts: list[str], guidance: float, steps: int, seed: int) -> torch.Tensor:
    """uint8 [n, C, S, S]: DPM-Solver++ over ``steps`` with classifier-free guidance against the empty caption."""
    from diffusers import DPMSolverMultistepScheduler

    scheduler = DPMSolverMultistepScheduler(num_train_timesteps=1000)
    g = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, len(prompts), 64):
        ids = model.tokenizer.encode([model.readable_prompt(p) for p in prompts[start:start + 64]])
        b = len(ids)
        both = torch.cat([model.tokenizer.empty(b), ids])
        scheduler.set_timesteps(steps)
        z = torch.randn(b, *model.space, generator=g)
        for t in scheduler.timesteps:
            uncond, cond = net(torch.cat([z, z]), t.expand(2 * b), both).chunk(2)
            z = scheduler.step(uncond + guidance * (cond - uncond), t, z).prev_sample
        out.append((model.from_space(z) * 255).round().to(torch.uint8))
    return torch.cat(out)


def score_fid(images: torch.Tensor, path: Path, dataset: dict, data_dir: str | None) -> dict[str, float]:
    np.savez(path, x=images.numpy())
    out = path.with_suffix("")
    cmd = [sys.executable, "-m", "genforge.cli", "eval", "--samples", str(path), "--dataset", dataset["name"],
           "--n", str(len(images)), "--metrics", "fid,pr,dc", "--out", str(out), "--no-progress", "--allow-small"]
    subprocess.run(cmd + (["--data-dir", data_dir] if data_dir else []), check=True, capture_output=True)
    record = json.loads((out / "eval.json").read_text())
    return {r["metric"]: r["value"] for r in record["results"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="a prompted latent-diffusion run")
    ap.add_argument("--seconds", type=float, default=None, help="baseline training time (default: RUN's)")
    ap.add_argument("--budget-steps", type=int, default=None,
                    help="train the baseline exactly N steps, without probing its rate (overrides --seconds)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--n", type=int, default=200, help="prompts per list for CLIP score / R-precision")
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--size", type=int, default=32, help="side the contrastive evaluator works at")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--keep", type=Path, default=None, help="keep the baseline's weights and samples here")
    ap.add_argument("--contenders", default="genforge,diffusers", help="rows to score (genforge's is deterministic)")
    args = ap.parse_args()

    from genforge.config import DataConfig, from_dict, load_yaml
    from genforge.data import load_images
    from genforge.data.cache import default_cache_dir
    from genforge.data.transforms import resize_center_crop
    from genforge.models.conditions import Condition
    from genforge.sampling.images import ImagePipeline

    require_idle()
    print_machine()
    cfg = load_yaml(args.run / "config.yaml")
    if cfg["model"]["family"] != "latent-diffusion" or not cfg["model"].get("prompted"):
        sys.exit(f"{args.run} is not a prompted latent-diffusion run")
    data_dir = args.data_dir or cfg["data"].get("data_dir")
    data = load_images(from_dict(DataConfig, {**cfg["data"], "data_dir": data_dir}))
    logs = [json.loads(line) for line in (args.run / "metrics.jsonl").read_text().splitlines()]
    seconds = args.seconds or logs[-1]["elapsed_s"]
    pipe = ImagePipeline.from_run(args.run)
    guidance = cfg["sample"].get("guidance") or 1.0
    work = args.keep or Path(tempfile.mkdtemp())
    work.mkdir(parents=True, exist_ok=True)
    budget = f"{args.budget_steps} steps" if args.budget_steps else f"{seconds:.0f} s"
    print(f"training the diffusers baseline for {budget} ({args.run.name} trained {logs[-1]['step']} steps in "
          f"{logs[-1]['elapsed_s']:.0f} s)", flush=True)
    info = train_baseline(pipe, data, cfg, seconds, work / "diffusers.pt", args.budget_steps)
    print(f"diffusers: {info['steps']} steps in {info['seconds']:.0f} s (bf16 {info['bf16']}), "
          f"U-Net {info['parameters'] / 1e6:.2f} M parameters; genforge's U-Net "
          f"{sum(p.numel() for p in pipe.model.net.parameters()) / 1e6:.2f} M", flush=True)
    net = Baseline(cfg, pipe.model.tokenizer.vocab_size)
    net.load_state_dict(torch.load(work / "diffusers.pt", weights_only=True))
    net.eval()

    small = from_dict(DataConfig, {**cfg["data"], "data_dir": data_dir, "image_size": args.size})
    small_data = load_images(small)
    evaluator = _evaluator(small_data, default_cache_dir(), 1500, 0)
    lists = {"held-out": _distinct(small_data.test_text, args.n, 0),
             "training": _distinct(small_data.train_text, args.n, 0)}
    opts = {"steps": args.steps, "guidance": guidance}
    draw = {"genforge": lambda p: pipe.generate(len(p), condition=Condition(text=tuple(
                map(pipe.model.readable_prompt, p))), seed=0, options=opts, batch_size=64),
            "diffusers": lambda p: sample_baseline(net, pipe.model, p, guidance, args.steps, 0)}
    print(f"\n| denoiser | FID (N={len(data.test_text)}) | precision | recall | coverage | held-out CLIP | R-prec. | "
          f"training CLIP | R-prec. | 16 images |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    fids = {}
    for name, fn in draw.items():
        if name not in args.contenders.split(","):
            continue
        fid = score_fid(fn(list(data.test_text)), work / f"{name}.npz", cfg["data"], data_dir)
        fids[name] = fid["fid"]
        cells = []
        for prompts in lists.values():
            images = resize_center_crop(fn(prompts), args.size)
            clip, rp, _ = _scores(evaluator, images, prompts, args.k, 0)
            cells += [f"{clip:.1f}", f"{rp:.3f}"]
        t0 = time.perf_counter()
        fn(lists["training"][:16])
        t16 = time.perf_counter() - t0
        print(f"| {name} | {fid['fid']:.3f} | {fid['precision']:.3f} | {fid['recall']:.3f} | {fid['coverage']:.3f} | "
              + " | ".join(cells) + f" | {t16:.2f} s |", flush=True)
    if len(fids) == 2:
        print(f"\nFID ratio genforge / diffusers at {seconds:.0f} s of training: "
              f"{fids['genforge'] / fids['diffusers']:.2f}")


if __name__ == "__main__":
    main()
