"""How many images k-NN manifold metrics need: precision/recall/density/coverage against N, real and noise.

    python bench/prdc_sample_size.py --data-dir DIR_WITH_MNIST_IDX_FILES
    python bench/prdc_sample_size.py --dataset digits

For each N, two disjoint seeded subsets of the test split are scored against each other ("real vs
real": every metric should be near its large-N value, recall and coverage near 1) and uniform noise
images are scored against the reference ("noise": precision, density and coverage should be near 0).
Features are the dataset's evaluator, k = 3 (P/R) and 5 (D/C) as `genforge eval` uses; each line is the
mean over ``--repeats`` seeds. The size rule of `genforge eval` (genforge/evaluation/images.py,
PRDC_MIN_N / PRDC_WARN_N) comes from this table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_data_dir, fail, require_data  # noqa: E402

MNIST = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
         "t10k-labels-idx1-ubyte.gz")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="mnist", choices=("mnist", "digits"),
                    help="dataset with a shipped evaluator (digits ships with scikit-learn)")
    add_data_dir(ap, "mnist", "MNIST's four IDX files (for --dataset mnist)")
    ap.add_argument("--sizes", default="50,100,200,500,1000,2000,5000", help="comma-separated N")
    ap.add_argument("--repeats", type=int, default=3, help="seeds per N (default 3)")
    args = ap.parse_args()
    if args.dataset == "mnist":
        require_data(args.data_dir, MNIST, "MNIST", "--dataset digits")

    import torch

    from genforge.config import DataConfig
    from genforge.data import DataError, load_images
    from genforge.data.transforms import shuffled_subset
    from genforge.evaluation.features.evaluators import load_evaluator
    from genforge.metrics.prdc import precision_recall_density_coverage

    try:
        data_dir = str(args.data_dir) if args.dataset == "mnist" else None
        data = load_images(DataConfig(name=args.dataset, data_dir=data_dir))
    except DataError as e:
        fail(str(e))
    net, info = load_evaluator(args.dataset)
    x = data.test_x
    sizes = [int(s) for s in args.sizes.split(",") if int(s) * 2 <= x.shape[0]]
    if not sizes:
        fail(f"the {args.dataset} test split ({x.shape[0]} images) is too small for two disjoint subsets of any N")
    with torch.no_grad():
        _, feats = net.extract(x, batch_size=500)  # [N_test, D]
    print(f"{args.dataset}: {x.shape[0]} test images, {info.id} features ({feats.shape[1]}-d), "
          f"evaluator test accuracy {info.test_accuracy:.4f}; mean of {args.repeats} seeds")
    print(f"{'N':>6} | {'real vs real: P':>15} {'R':>6} {'D':>6} {'C':>6} | {'noise: P':>9} {'R':>6} {'D':>6} {'C':>6}")
    for n in sizes:
        rr, nz = [], []
        for seed in range(args.repeats):
            idx = shuffled_subset(x.shape[0], 2 * n, seed)
            ref, other = feats[idx[:n]], feats[idx[n:]]
            g = torch.Generator().manual_seed(seed)
            noise = torch.randint(0, 256, (n, *x.shape[1:]), generator=g, dtype=torch.uint8)
            with torch.no_grad():
                _, noise_f = net.extract(noise, batch_size=500)
            rr.append(precision_recall_density_coverage(ref, other, pr_k=3, dc_k=5))
            nz.append(precision_recall_density_coverage(ref, noise_f, pr_k=3, dc_k=5))

        def mean(rows: list[dict], key: str) -> float:
            return sum(r[key] for r in rows) / len(rows)

        keys = ("precision", "recall", "density", "coverage")
        print(f"{n:>6} | {mean(rr, keys[0]):>15.3f} " + " ".join(f"{mean(rr, k):>6.3f}" for k in keys[1:])
              + f" | {mean(nz, keys[0]):>9.3f} " + " ".join(f"{mean(nz, k):>6.3f}" for k in keys[1:]))


if __name__ == "__main__":
    main()
