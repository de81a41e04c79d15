"""Quality against sampling cost for a diffusion run: FID (and recall, coverage) at several step counts.

    python bench/diffusion_steps.py --run runs/mnist-diffusion --steps 10,20,50,100 --n 2000
    python bench/diffusion_steps.py --run runs/mnist-diffusion --steps 20,1000 --n 500 --sampler euler

For each step count the run draws ``--n`` class-balanced images (seed 0, the same initial noise for every
step count) through its sampling pipeline, timed, and ``genforge eval --samples`` scores them against the
MNIST test split in the evaluator's feature space. FID depends on N: compare only rows of one N.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_data_dir, fail, require_data, require_idle  # noqa: E402

MNIST = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
         "t10k-labels-idx1-ubyte.gz")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, help="a diffusion run directory (trained on MNIST)")
    ap.add_argument("--steps", default="10,20,50,100", help="comma-separated step counts (default: 10,20,50,100)")
    ap.add_argument("--n", type=int, default=2000, help="images per step count (default: 2000)")
    ap.add_argument("--sampler", default=None, help="sampler (default: the run's family default)")
    ap.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the family's, 1)")
    add_data_dir(ap, "mnist", "MNIST's four IDX files (the reference: its test split)")
    args = ap.parse_args()
    require_data(args.data_dir, MNIST, "MNIST")
    if args.run is None:
        fail("give the diffusion run to measure with --run RUN")
    try:
        steps = [int(s) for s in args.steps.split(",") if s.strip()]
    except ValueError:
        fail(f"--steps must be comma-separated integers, got {args.steps!r}")
    if not steps or min(steps) < 1 or args.n < 10:
        fail("--steps must be >= 1 and --n >= 10")
    if not (args.run / "config.yaml").is_file():
        fail(f"{args.run} is not a run directory (no config.yaml)")

    from genforge.tasks import open_run

    pipe = open_run(args.run)
    if pipe.model.family != "diffusion":
        fail(f"{args.run} holds a {pipe.model.family} model, not a diffusion model")
    k = pipe.num_classes
    labels = (np.arange(args.n) % k).tolist() if k else None
    base = {**({"sampler": args.sampler} if args.sampler else {}),
            **({"guidance": args.guidance} if args.guidance is not None else {})}
    require_idle()
    print(f"{args.run.name}: N={args.n}, {base or 'family defaults'}", flush=True)
    print(f"{'steps':>6} {'seconds':>8} {'images/s':>9} {'FID':>8} {'precision':>9} {'recall':>7} {'coverage':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for s in steps:
            t0 = time.perf_counter()
            images = pipe.generate(args.n, condition=labels, seed=0, options={**base, "steps": s}).numpy()
            seconds = time.perf_counter() - t0
            path = Path(tmp) / f"steps-{s}.npz"
            np.savez(path, x=images)
            out = Path(tmp) / f"eval-{s}"
            subprocess.run([sys.executable, "-m", "genforge.cli", "eval", "--samples", str(path), "--dataset",
                            "mnist", "--data-dir", str(args.data_dir), "--n", str(args.n), "--metrics",
                            "fid,pr,dc", "--out", str(out), "--no-progress",
                            *(["--allow-small"] if args.n < 2048 else [])], check=True, capture_output=True)
            r = {x["metric"]: x["value"] for x in json.loads((out / "eval.json").read_text())["results"]}
            print(f"{s:>6} {seconds:>8.1f} {args.n / seconds:>9.1f} {r['fid']:>8.3f} {r['precision']:>9.3f} "
                  f"{r['recall']:>7.3f} {r['coverage']:>8.3f}", flush=True)


if __name__ == "__main__":
    main()
