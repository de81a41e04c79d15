"""Time per image of the applications on an idle machine: inpainting per family and mask, super-resolution.

    python bench/applications.py --runs runs/mnist-diffusion,runs/mnist-vae,runs/mnist-dcgan,runs/mnist-sr

Each run inpaints (or, for a super-resolution run, upscales at every trained factor) ``--n`` MNIST test
images with its defaults, ``--repeats`` times; the script prints the median seconds per image and the
evaluator accuracy of the last repeat (labels given to conditional models, as ``genforge eval --metrics
inpaint`` does by default). The accuracy here is on ``--n`` images; the figures of record are eval's 1000.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_data_dir, fail, require_data, require_idle  # noqa: E402

MNIST = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
         "t10k-labels-idx1-ubyte.gz")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="", help="comma-separated run directories (trained on MNIST)")
    ap.add_argument("--n", type=int, default=100, help="test images per measurement (default 100)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats (default 3)")
    ap.add_argument("--masks", default="center,left", help="built-in masks (default center,left)")
    add_data_dir(ap, "mnist", "MNIST's four IDX files")
    args = ap.parse_args()
    require_data(args.data_dir, MNIST, "MNIST")
    runs = [Path(r) for r in args.runs.split(",") if r.strip()]
    if not runs:
        fail("give the runs to time with --runs RUN[,RUN...]")
    for r in runs:
        if not (r / "config.yaml").is_file():
            fail(f"{r} is not a run directory (no config.yaml)")
    if args.n < 1 or args.repeats < 1:
        fail("--n and --repeats must be >= 1")

    import torch

    from genforge.config import DataConfig
    from genforge.data import load_images
    from genforge.data.transforms import shuffled_subset
    from genforge.evaluation.features.evaluators import load_evaluator
    from genforge.models.conditions import Condition
    from genforge.sampling.images import ImagePipeline
    from genforge.sampling.inpaint import inpaint_images
    from genforge.sampling.masks import builtin_mask

    data = load_images(DataConfig(name="mnist", data_dir=str(args.data_dir)))
    idx = shuffled_subset(data.test_x.shape[0], args.n, 0)
    x, y = data.test_x[idx], data.test_y[idx]
    net, _ = load_evaluator("mnist")
    require_idle()
    print(f"N={args.n} test images, {args.repeats} repeats, torch threads {torch.get_num_threads()}")
    print(f"{'run':<18} {'job':<14} {'s/image':>9} {'accuracy':>9}")
    for run in runs:
        pipe = ImagePipeline.from_run(run)
        model = pipe.model
        jobs = []
        if "inpaint" in model.capabilities():
            labels = y if model.num_classes else None
            for spec in args.masks.split(","):
                fill = builtin_mask(spec, data.image_size, n=args.n)
                jobs.append((f"inpaint {spec}", lambda f=fill, lab=labels: inpaint_images(model, x, f, labels=lab)))
        if "image" in model.accepted_conditions():  # generates from a source image: each declared variant
            for variant in model.source_variants():
                source = Condition(image=model.make_source(x, variant))
                jobs.append((f"upscale {variant}", lambda s=source: pipe.generate(args.n, condition=s)))
        for name, job in jobs:
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                out = job()
                times.append((time.perf_counter() - t0) / args.n)
            acc = float((net.extract(out)[0].argmax(1) == y).double().mean())
            print(f"{run.name:<18} {name:<14} {statistics.median(times):>9.4f} {acc:>9.3f}", flush=True)


if __name__ == "__main__":
    main()
