"""Text–image alignment of text-to-image runs: CLIP score and R-precision in a contrastive evaluator that
genforge trains on the runs' own training split (never the model that conditions them), with the ceiling
(real test images with their captions) and the floor (real test images with shuffled captions) beside
every run, the category accuracy of the data set's classifier evaluator on images generated from prompts
of each category (the prompt's label), and the time to sample 16 images.

For each run: one image per prompt, for the distinct held-out captions (whole emoji training never saw)
and as many distinct training captions (a seeded pick). The generator is given each caption's words that
its vocabulary knows (a held-out emoji's new words dropped; it refuses unknown words, as it does for users);
the evaluator scores the image against the whole caption. R-precision ranks each image's prompt among ``--k`` captions: the true one and
k - 1 others from the same list (held-out or training). The evaluator is cached by the data's sha256 and
its config under the genforge cache (``evaluators/``); its file's sha256 is printed.

    python bench/text_to_image.py RUN [RUN ...] [--data-dir DIR] [--steps 20] [--guidance W] [--k 100]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_machine, require_idle  # noqa: E402


def _evaluator(data, cache: Path, steps: int, seed: int):
    from genforge.evaluation.features.contrastive import contrastive_for

    net, report, sha = contrastive_for(data, cache, steps=steps, seed=seed)
    print(f"evaluator: sha256 {sha[:16]}… (seed {seed}, {steps} steps); held-out R-precision of real test images "
          f"among {report['heldout_r_precision_k']}: {report['heldout_r_precision']:.3f}", flush=True)
    return net


def _distinct(captions: list[str], n: int, seed: int) -> list[str]:
    unique = sorted(set(captions))
    pick = torch.randperm(len(unique), generator=torch.Generator().manual_seed(seed))[:n]
    return [unique[i] for i in sorted(pick.tolist())]


def _scores(net, images: torch.Tensor, captions: list[str], k: int, seed: int, classify=None,
            labels: torch.Tensor | None = None) -> tuple[float, float, float | None]:
    from genforge.metrics.text_image import clip_score

    clip = clip_score(net.embed_images(images), net.embed_texts(captions))
    rp = net.r_precision(images, captions, captions, k=min(k, len(set(captions))), seed=seed)
    acc = None if classify is None else float((classify(images) == labels).float().mean())
    return clip, rp, acc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--data-dir", default=None, help="the runs' dataset files (as for genforge train)")
    ap.add_argument("--steps", type=int, default=20, help="sampler steps")
    ap.add_argument("--guidance", type=float, default=None, help="guidance (default: each run's sample.guidance)")
    ap.add_argument("--k", type=int, default=100, help="R-precision candidates")
    ap.add_argument("--n", type=int, default=400, help="prompts per list (held-out, training)")
    ap.add_argument("--evaluator-steps", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=None,
                    help="evaluate at this side: the data and every run's images are resized to it (antialiased "
                         "bicubic; default: the first run's data size)")
    args = ap.parse_args()

    from genforge.config import DataConfig, from_dict, load_yaml
    from genforge.data import load_images
    from genforge.data.cache import default_cache_dir
    from genforge.data.transforms import resize_center_crop
    from genforge.models.conditions import Condition
    from genforge.sampling.images import ImagePipeline

    require_idle()
    print_machine()
    cfg = load_yaml(args.runs[0] / "config.yaml")
    data_cfg = from_dict(DataConfig, {**cfg["data"], **({"data_dir": args.data_dir} if args.data_dir else {}),
                                      **({"image_size": args.size} if args.size else {})})
    data = load_images(data_cfg)
    net = _evaluator(data, default_cache_dir(), args.evaluator_steps, args.seed)
    classify, label_of = None, {}
    if data.labelled:
        from genforge.evaluation.features.evaluators import evaluator_for

        clf, info = evaluator_for(data, data_cfg, progress=True)
        print(f"category evaluator: {info.id} (sha256 {info.sha256[:12]}…), {info.test_accuracy:.1%} on its held-out "
              f"images", flush=True)
        classify = lambda x: clf.extract(x)[0].argmax(1)  # noqa: E731
        label_of = {t: int(y) for t, y in zip(data.train_text + data.test_text,
                                              torch.cat([data.train_y, data.test_y]).tolist())}
    lists = {"held-out": _distinct(data.test_text, args.n, args.seed),
             "training": _distinct(data.train_text, args.n, args.seed)}
    ks = {name: min(args.k, len(set(p))) for name, p in lists.items()}
    print(f"prompts: {len(lists['held-out'])} held-out, {len(lists['training'])} training captions; R-precision "
          f"among k = {ks['held-out']} / {ks['training']} (chance {1 / ks['held-out']:.3f} / "
          f"{1 / ks['training']:.3f})", flush=True)

    def labels(prompts: list[str]) -> torch.Tensor | None:
        return torch.tensor([label_of[p] for p in prompts]) if classify is not None else None

    rows = []
    first = {c: i for i, c in reversed(list(enumerate(data.test_text)))}
    real = data.test_x[[first[c] for c in lists["held-out"]]]
    held = lists["held-out"]
    rows.append(("real test images (ceiling)", *_scores(net, real, held, args.k, args.seed, classify, labels(held)),
                 None, None, None, None))
    shuffled = [held[i] for i in torch.randperm(len(real), generator=torch.Generator().manual_seed(1))]
    rows.append(("real images, shuffled captions (floor)",
                 *_scores(net, real, shuffled, args.k, args.seed, classify, labels(shuffled)), None, None, None, None))
    for run in args.runs:
        pipe = ImagePipeline.from_run(run)
        options = {"steps": args.steps}
        guidance = args.guidance if args.guidance is not None else load_yaml(run / "config.yaml")["sample"].get(
            "guidance")
        if guidance is not None:
            options["guidance"] = guidance
        _, opts = pipe.parse(options)
        readable = pipe.model.readable_prompt
        t0 = time.perf_counter()
        sixteen = tuple(lists["training"][i % len(lists["training"])] for i in range(16))
        pipe.generate(16, condition=Condition(text=tuple(map(readable, sixteen))), seed=args.seed, options=opts)
        t16 = time.perf_counter() - t0
        result = []
        for name, prompts in lists.items():
            images = pipe.generate(len(prompts), condition=Condition(text=tuple(map(readable, prompts))),
                                   seed=args.seed, options=opts, batch_size=64)
            images = resize_center_crop(images, data.image_size)  # as is when the sizes agree
            result += list(_scores(net, images, prompts, args.k, args.seed, classify, labels(prompts)))
        rows.append((f"{run.name} ({pipe.model.family}, guidance {guidance})", *result, t16))
    print(f"\n| images | held-out: CLIP score | R-precision | category acc. | training: CLIP score | R-precision "
          f"| category acc. | 16 images, {args.steps} steps |")
    print("|---|---|---|---|---|---|---|---|")

    def cell(v, fmt: str) -> str:
        return "—" if v is None else format(v, fmt)

    for name, c1, r1, a1, c2, r2, a2, t in rows:
        cells = [cell(c1, ".1f"), cell(r1, ".3f"), cell(a1, ".1%"), cell(c2, ".1f"), cell(r2, ".3f"), cell(a2, ".1%"),
                 "—" if t is None else f"{t:.2f} s"]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
