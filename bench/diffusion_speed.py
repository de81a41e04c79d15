"""Diffusion speed on this machine: training images/s (and the U-Net's share of the matmul peak), and the time
to sample a 64-image grid with each sampler.

    python bench/diffusion_speed.py                      # the mnist-diffusion recipe's U-Net at 28x28
    python bench/diffusion_speed.py --steps 20 --repeats 5
    python bench/diffusion_speed.py --objective ddpm --train-steps 20   # the DDPM samplers on the same U-Net

Training throughput is measured on synthetic 28x28 batches through genforge's Trainer (the same step as
``genforge train``), FLOPs per image counted with ``torch.utils.flop_counter`` (forward + backward), and
divided by the fp32 matmul peak measured in the same run. Sampling times a 64-image grid per sampler
(median of the repeats), with and without classifier-free guidance (guidance doubles the batch).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import require_idle, summary  # noqa: E402
from peak import matmul_peak  # noqa: E402

from genforge.config import load_yaml, recipe_path  # noqa: E402
from genforge.data import BatchStream  # noqa: E402
from genforge.models.diffusion import Diffusion, DiffusionConfig  # noqa: E402
from genforge.training.run import resolve  # noqa: E402
from genforge.training.trainer import Trainer  # noqa: E402


def build(recipe: str, objective: str | None = None) -> tuple[Diffusion, object]:
    cfg = resolve(load_yaml(recipe_path(recipe)))
    model_cfg = DiffusionConfig(**{**vars(cfg.model), **({"objective": objective} if objective else {}), "channels": 1, "image_size": 28, "num_classes": 10,
                                   "class_names": [str(i) for i in range(10)]})
    torch.manual_seed(0)
    return Diffusion(model_cfg), cfg


def flops_per_image(model: Diffusion, batch: dict) -> float:
    with FlopCounterMode(display=False) as counter:
        model.losses(batch)["loss"].backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / batch["x"].shape[0]


def train_rate(model: Diffusion, cfg, steps: int) -> list[float]:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (4096, 1, 28, 28), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (4096,), generator=g)
    train = type(cfg.train)(**{**vars(cfg.train), "max_steps": steps, "log_every": 10, "sample_every": 0,
                               "checkpoint_every": 0, "max_minutes": 0.0, "progress": False, "ema_decay": 0.0})
    with tempfile.TemporaryDirectory() as d:
        Trainer(model, train, BatchStream(x, y, train.batch_size, seed=0), Path(d)).fit()
        from genforge.training.logger import read_metrics

        return [r["images_per_s"] for r in read_metrics(d)[1:] if "images_per_s" in r]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="mnist-diffusion")
    ap.add_argument("--train-steps", type=int, default=60)
    ap.add_argument("--steps", type=int, default=20, help="sampler steps")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--objective", choices=["flow", "ddpm"], default=None,
                    help="time this objective's samplers on the recipe's U-Net (default: the recipe's; ddpm gives "
                         "the ddpm, ddim and dpm++ samplers)")
    args = ap.parse_args()
    require_idle()
    peak = matmul_peak(torch.float32)
    model, cfg = build(args.recipe, args.objective)
    params = sum(p.numel() for p in model.parameters())
    batch = {"x": torch.randint(0, 256, (cfg.train.batch_size, 1, 28, 28), dtype=torch.uint8),
             "y": torch.randint(0, 10, (cfg.train.batch_size,))}
    fpi = flops_per_image(model, batch)
    rates = train_rate(model, cfg, args.train_steps)
    rate = statistics.median(rates)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; fp32 matmul peak {peak:.0f} GFLOP/s")
    print(f"{args.recipe}: {params / 1e6:.2f} M params, {fpi / 1e9:.2f} GFLOP per training image (fwd+bwd)")
    print(f"training: images/s {summary(rates)}; {rate * fpi / 1e9:.0f} GFLOP/s = {rate * fpi / 1e9 / peak:.0%} "
          f"of the matmul peak")
    model.eval()
    for sampler in ("ddpm", "ddim", "dpm++", "euler"):
        try:
            model.parse_sample_options({"sampler": sampler})
        except ValueError:
            continue  # a sampler of the other objective
        for guidance in (1.0, 2.0):
            times = []
            for r in range(args.repeats):
                t = time.perf_counter()
                model.sample(64, generator=torch.Generator().manual_seed(r), sampler=sampler, steps=args.steps,
                             guidance=guidance)
                times.append(time.perf_counter() - t)
            s = statistics.median(times)
            print(f"sample 64 images, {sampler} {args.steps} steps, guidance {guidance}: median {s:.2f} s "
                  f"(min {min(times):.2f}, max {max(times):.2f}, n={len(times)}; {64 / s:.1f} images/s)", flush=True)


if __name__ == "__main__":
    main()
