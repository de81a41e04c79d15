"""Full image evaluation time: 10k generated vs 10k reference 28x28 images, from uint8 tensors.

Runs ``genforge.evaluation.images.evaluate_images`` with FID + KID (100 subsets
of 1000) + precision/recall (k=3) + density/coverage (k=5) + classifier IS +
mode coverage, in the MNIST evaluator's feature space. The "generated" images
are 10k shuffled MNIST training images and the reference is the 10k test split
(real data from ``--data-dir``, by default ``$GENFORGE_TEST_DATA/mnist`` or the
shared MNIST folder beside the checkout; ``--synthetic`` times synthetic 28x28
blobs instead, and missing MNIST files without it exit with code 2). Each
repeat uses an empty cache, so both feature extractions are timed. Prints the
median over repeats of every stage and of the total, and the FID of the last repeat.

    python bench/eval_images.py [--data-dir DIR | --synthetic] [--n 10000] [--repeats 3] [--threads 0]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_data_dir, fail, require_data, require_idle, summary  # noqa: E402

from genforge.config import DataConfig  # noqa: E402
from genforge.data import DataError, ImageData, load_images  # noqa: E402
from genforge.data.mnist import FILE_NAMES  # noqa: E402
from genforge.evaluation.images import ImageEvalOptions, evaluate_images  # noqa: E402

METRICS = ("fid", "kid", "pr", "dc", "is", "modes")


def synthetic(n: int) -> ImageData:
    """Blurry random strokes, 28x28 uint8, 10 labels: the evaluator's cost does not depend on content."""
    g = torch.Generator().manual_seed(0)

    def images(k: int) -> torch.Tensor:
        x = torch.rand(k, 1, 7, 7, generator=g)
        x = torch.nn.functional.interpolate(x, size=28, mode="bilinear", align_corners=False)
        return (x.clamp(0, 1) * 255).round().to(torch.uint8)

    return ImageData(name="mnist", train_x=images(n), train_y=torch.randint(10, (n,), generator=g),
                     test_x=images(n), test_y=torch.randint(10, (n,), generator=g), classes=[str(i) for i in range(10)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_dir(ap, "mnist", "the four MNIST IDX files")
    ap.add_argument("--synthetic", action="store_true",
                    help="time synthetic 28x28 images instead of MNIST (the cost does not depend on content)")
    ap.add_argument("--n", type=int, default=10_000, help="images per side")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = ap.parse_args()
    if not args.synthetic:
        require_data(args.data_dir, FILE_NAMES, "MNIST", alternative="--synthetic to time synthetic images")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.synthetic:
        cfg = DataConfig(name="mnist")
        data = synthetic(args.n)
        source = "synthetic 28x28 (--synthetic)"
    else:
        cfg = DataConfig(name="mnist", data_dir=str(args.data_dir))
        try:
            data = load_images(cfg)
        except DataError as e:
            fail(str(e))
        source = f"real MNIST from {args.data_dir}"
    busy = require_idle()
    idx = torch.randperm(data.train_x.shape[0], generator=torch.Generator().manual_seed(0))[: args.n]
    generated = data.train_x[idx].contiguous()
    print(f"data: {source}; {generated.shape[0]} 'generated' (shuffled train) vs {min(args.n, len(data.test_x))} "
          f"reference (test); torch threads {torch.get_num_threads()}", flush=True)

    stages: dict[str, list[float]] = {}
    totals, fid = [], float("nan")
    for r in range(args.repeats):
        with tempfile.TemporaryDirectory() as cache:  # empty cache: reference features are extracted every time
            opts = ImageEvalOptions(metrics=METRICS, n=args.n, cache_dir=Path(cache), batch_size=1000)
            t0 = time.perf_counter()
            report = evaluate_images(data, cfg, opts, samples=generated)
            totals.append(time.perf_counter() - t0)
        for k, v in report.timings.items():
            stages.setdefault(k, []).append(v)
        fid = next(x.value for x in report.results if x.metric == "fid")
        print(f"repeat {r + 1}: {totals[-1]:.2f} s", flush=True)

    print(f"\nper stage, median of {args.repeats} (seconds):")
    for k, v in stages.items():
        print(f"  {k:<20} {statistics.median(v):7.3f}   (min {min(v):.3f}, max {max(v):.3f})")
    print(f"  {'total':<20} {statistics.median(totals):7.3f}   ms: {summary([1e3 * t for t in totals])}")
    print(f"FID (last repeat): {fid:.4f}; CPU busy before start: {busy:.0%}")


if __name__ == "__main__":
    main()
