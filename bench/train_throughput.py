"""Training throughput (images/s) of the mnist-dcgan and mnist-vae recipes through the real trainer.

Synthetic MNIST-shaped data (28x28 uint8, 10 classes): the speed of a step does
not depend on pixel values. Each recipe runs ``--steps`` steps; the trainer logs
images/s every ``--window`` steps and we report the median over windows after
the first (warm-up). A GAN step is one discriminator and one generator update,
each on its own batch, so it consumes 2 batches.

    python bench/train_throughput.py [--steps 300] [--threads 0] [--precision fp32 bf16-mixed]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import require_idle, summary  # noqa: E402

from genforge.config import recipe_path  # noqa: E402
from genforge.data import BatchStream  # noqa: E402
from genforge.models import build  # noqa: E402
from genforge.training.logger import read_metrics  # noqa: E402
from genforge.training.run import load_recipe, resolve  # noqa: E402
from genforge.training.trainer import Trainer  # noqa: E402


def bench(recipe: str, steps: int, window: int, precision: str) -> dict:
    raw, _ = load_recipe(recipe)
    cfg = resolve(raw)
    model_cfg = dataclasses.replace(cfg.model, channels=1, image_size=28,
                                    num_classes=10 if cfg.model.conditional else 0)
    train = dataclasses.replace(cfg.train, max_steps=steps, log_every=window, sample_every=0, checkpoint_every=0,
                                progress=False, precision=precision)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (6000, 1, 28, 28), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (6000,), generator=g)
    model = build(model_cfg)
    with tempfile.TemporaryDirectory() as d:
        trainer = Trainer(model, train, BatchStream(x, y, train.batch_size, seed=0), Path(d))
        trainer.fit()
        records = read_metrics(d)
    rates = [r["images_per_s"] for r in records[1:] if r["step"] % window == 0]
    params = sum(p.numel() for p in model.parameters())
    return {"recipe": recipe, "batch": train.batch_size, "params": params, "rates": rates,
            "steps_per_s": [r["steps_per_s"] for r in records[1:] if r["step"] % window == 0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--window", type=int, default=50)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    ap.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16-mixed"],
                    help="precisions to compare in this one run (bf16 convolutions are slow on CPU)")
    ap.add_argument("--recipes", nargs="+", default=["mnist-dcgan", "mnist-vae"])
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    require_idle()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for recipe in args.recipes:
        recipe_path(recipe)
        medians = {}
        for precision in args.precision:
            r = bench(recipe, args.steps, args.window, precision)
            medians[precision] = statistics.median(r["rates"])
            print(f"{r['recipe']:<12} {precision:<10} batch {r['batch']:>3}  {r['params'] / 1e6:.2f} M params  "
                  f"images/s {summary(r['rates'])}  steps/s {summary(r['steps_per_s'])}", flush=True)
        if "fp32" in medians and len(medians) > 1:
            ratios = ", ".join(f"{p} {m / medians['fp32']:.2f}x" for p, m in medians.items() if p != "fp32")
            print(f"{recipe:<12} speed vs fp32: {ratios}", flush=True)


if __name__ == "__main__":
    main()
