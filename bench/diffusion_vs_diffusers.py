"""genforge's ``mnist-diffusion`` against diffusers' ``UNet2DModel`` + ``DDPMScheduler`` trained for the same wall
time, both scored by ``genforge eval --samples`` on the same number of images at the same sampling cost.

    python bench/diffusion_vs_diffusers.py --minutes 10 --n 10000        # the comparison the issue asks for
    python bench/diffusion_vs_diffusers.py --minutes 0.3 --n 300         # a smoke run
    python bench/diffusion_vs_diffusers.py --contenders genforge,dcgan --keep runs/bench   # against our own GAN

Each contender trains in a fresh process, one after the other, on the real MNIST training split:

- genforge: ``genforge train mnist-diffusion --set train.max_minutes=M`` (flow matching, its own recipe).
- diffusers: a plain diffusers-style loop (the shape of diffusers' ``train_unconditional`` example):
  ``UNet2DModel`` (1.11 M parameters: blocks 32/64/64, attention at 14x14, class embeddings),
  ``DDPMScheduler`` (1000 steps, linear betas), ε-prediction MSE, AdamW lr 2e-4, batch 64, for M minutes.
- dcgan: ``genforge train mnist-dcgan`` for the same M minutes (its step budget lifted so time is the only limit).

Each then draws ``--n`` class-balanced images, the diffusion models with ``--steps`` model evaluations each
(genforge: Euler; diffusers: its ``DPMSolverMultistepScheduler``), the GAN in one forward pass, written as ``.npz`` and scored by ``genforge eval --samples``
against the MNIST test split in the evaluator's feature space. diffusers is a test/bench dependency only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_data_dir, fail, require_data, require_idle  # noqa: E402

MNIST = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
         "t10k-labels-idx1-ubyte.gz")


CONTENDERS = ("genforge", "diffusers", "dcgan")


def _labels(n: int) -> torch.Tensor:
    return torch.arange(n) % 10


def _diffusers_unet():
    from diffusers import UNet2DModel

    return UNet2DModel(sample_size=28, in_channels=1, out_channels=1, layers_per_block=1,
                       block_out_channels=(32, 64, 64), num_class_embeds=10,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"))


def train_diffusers(data_dir: Path, minutes: float, out: Path) -> dict:
    """The plain loop; returns steps, seconds and images/s, and saves the weights to ``out``."""
    from diffusers import DDPMScheduler

    from genforge.config import DataConfig
    from genforge.data import BatchStream, load_images

    data = load_images(DataConfig(name="mnist", data_dir=str(data_dir)))
    torch.manual_seed(0)
    unet, scheduler = _diffusers_unet(), DDPMScheduler(num_train_timesteps=1000)
    opt = torch.optim.AdamW(unet.parameters(), lr=2e-4)
    stream = BatchStream(data.train_x, data.train_y, 64, seed=0)
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < minutes * 60:
        b = next(stream)
        x0 = b["x"].float() / 127.5 - 1
        noise = torch.randn_like(x0)
        t = torch.randint(0, 1000, (x0.shape[0],))
        pred = unet(scheduler.add_noise(x0, noise, t), t, class_labels=b["y"]).sample
        loss = torch.nn.functional.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
    seconds = time.perf_counter() - t0
    torch.save(unet.state_dict(), out)
    return {"steps": steps, "seconds": seconds, "images_per_s": steps * 64 / seconds}


@torch.no_grad()
def sample_diffusers(weights: Path, n: int, steps: int) -> np.ndarray:
    from diffusers import DPMSolverMultistepScheduler

    unet = _diffusers_unet()
    unet.load_state_dict(torch.load(weights, weights_only=True))
    unet.eval()
    scheduler = DPMSolverMultistepScheduler(num_train_timesteps=1000)
    g = torch.Generator().manual_seed(0)
    out = []
    for start in range(0, n, 256):
        y = _labels(n)[start:start + 256]
        scheduler.set_timesteps(steps)
        x = torch.randn(len(y), 1, 28, 28, generator=g)
        for t in scheduler.timesteps:
            x = scheduler.step(unet(x, t, class_labels=y).sample, t, x).prev_sample
        out.append(((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8))
    return torch.cat(out).numpy()


def sample_genforge(run: Path, n: int, options: dict) -> np.ndarray:
    from genforge.tasks import open_run

    pipe = open_run(run)
    return pipe.generate(n, condition=_labels(n).tolist(), seed=0, options=options).numpy()


def train_genforge(recipe: str, data_dir: Path, minutes: float, run: Path, *extra: str) -> dict:
    """``genforge train RECIPE`` for ``minutes`` in a subprocess; steps, seconds and the logged median images/s."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "genforge.cli", "train", recipe, "--data-dir", str(data_dir), "--out",
                    str(run), "--no-progress", "--set", f"train.max_minutes={minutes}", *extra],
                   check=True, capture_output=True)
    logs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rates = [r["images_per_s"] for r in logs if "images_per_s" in r]
    return {"steps": logs[-1]["step"], "seconds": time.perf_counter() - t0,
            "images_per_s": float(np.median(rates)) if rates else float("nan")}


def score(samples: Path, data_dir: Path, n: int) -> dict[str, float]:
    out = samples.with_suffix("")
    subprocess.run([sys.executable, "-m", "genforge.cli", "eval", "--samples", str(samples), "--dataset", "mnist",
                    "--data-dir", str(data_dir), "--n", str(n), "--metrics", "fid,pr,dc", "--out", str(out),
                    "--no-progress", *(["--allow-small"] if n < 2048 else [])], check=True, capture_output=True)
    record = json.loads((out / "eval.json").read_text())
    return {r["metric"]: r["value"] for r in record["results"]}


def worker(args: argparse.Namespace) -> None:
    """One contender in this fresh process: train, sample, write ``<work>/<name>.npz`` and ``<name>.json``."""
    work = Path(args.work)
    if args.worker == "diffusers":
        info = train_diffusers(args.data_dir, args.minutes, work / "diffusers.pt")
        images = sample_diffusers(work / "diffusers.pt", args.n, args.steps)
    elif args.worker == "genforge":
        info = train_genforge("mnist-diffusion", args.data_dir, args.minutes, work / "genforge-run")
        images = sample_genforge(work / "genforge-run", args.n, {"steps": args.steps})
    else:
        info = train_genforge("mnist-dcgan", args.data_dir, args.minutes, work / "dcgan-run",
                              "--set", "train.max_steps=100000000")
        images = sample_genforge(work / "dcgan-run", args.n, {})
    np.savez(work / f"{args.worker}.npz", x=images)
    (work / f"{args.worker}.json").write_text(json.dumps(info))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="training wall time of each contender")
    ap.add_argument("--n", type=int, default=10_000, help="images each contender draws and is scored on")
    ap.add_argument("--steps", type=int, default=20, help="model evaluations per image when sampling")
    add_data_dir(ap, "mnist", "MNIST's four IDX files")
    ap.add_argument("--contenders", default="genforge,diffusers,dcgan",
                    help="comma-separated, trained in this order: genforge, diffusers, dcgan (default: all three)")
    ap.add_argument("--keep", type=Path, metavar="DIR",
                    help="keep the genforge run directories (and diffusers' weights) in DIR instead of deleting them")
    ap.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    require_data(args.data_dir, MNIST, "MNIST")
    if args.worker:
        worker(args)
        return
    names = [c.strip() for c in args.contenders.split(",") if c.strip()]
    unknown = sorted(set(names) - set(CONTENDERS))
    if unknown or not names:
        fail(f"--contenders: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(CONTENDERS)}")
    if args.keep is not None and args.keep.exists() and any(args.keep.iterdir()):
        fail(f"--keep: {args.keep} exists and is not empty; give a new folder")
    require_idle()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows = {}
        for name in names:
            subprocess.run([sys.executable, __file__, "--worker", name, "--work", str(work), "--minutes",
                            str(args.minutes),
                            "--n", str(args.n), "--steps", str(args.steps), "--data-dir", str(args.data_dir)],
                           check=True)
            info = json.loads((Path(work) / f"{name}.json").read_text())
            rows[name] = {**info, **score(Path(work) / f"{name}.npz", args.data_dir, args.n)}
            r = rows[name]
            print(f"{name:<9} {r['steps']:>6} steps in {r['seconds'] / 60:.1f} min ({r['images_per_s']:.0f} img/s)  "
                  f"FID {r['fid']:.3f}  precision {r['precision']:.3f}  recall {r['recall']:.3f}  "
                  f"coverage {r['coverage']:.3f}", flush=True)
    for other in ("diffusers", "dcgan"):
        if "genforge" in rows and other in rows:
            ratio = rows["genforge"]["fid"] / rows[other]["fid"]
            print(f"FID ratio genforge / {other} at {args.minutes:g} min of training, N={args.n}: {ratio:.2f}"
                  + (f" ({args.steps} model evaluations per image each)" if other == "diffusers" else ""))


if __name__ == "__main__":
    main()
