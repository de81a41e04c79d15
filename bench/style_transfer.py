"""Style transfer with ground truth: every held-out emoji drawn by vendor A, translated into vendor B's style by
an ``emoji-styles`` run, against vendor B's real drawing of the same emoji.

    python bench/style_transfer.py RUN [--data-dir DIR] [--from twitter --to google] [--steps 20]
                                   [--strengths 0.2,0.4,0.6,0.8] [--n 426] [--grid OUT.png]

RUN is a class-conditional run on ``emoji-styles`` (the vendor is the label; e.g. the ``emoji-styles``
recipe). The held-out emoji are the data set's test split, shared by both vendors, paired by caption. Rows:

- baselines: the source unchanged ("copy"), and its per-channel colour histogram matched to vendor B's
  training drawings ("histogram match");
- ``ddib`` (invert under A with the deterministic ODE, regenerate under B) at ``--guidance`` values;
- ``sdedit`` at each of ``--strengths`` (the content/style trade-off curve);
- real B drawings (the ceiling of every score).

Scores, all at the run's side:

- content: SSIM and PSNR against B's real drawing of the same emoji; R-precision of the emoji's caption
  among ``--k`` held-out captions in the data set's contrastive evaluator (trained by genforge on the
  training split of both vendors; its sha256 printed);
- style: the share the data set's vendor classifier (genforge's evaluator of ``emoji-styles``, trained on
  real drawings, its held-out accuracy printed) calls B; FID to B's held-out drawings in its features;
- time to translate 16 images (median of 3; an idle machine is checked and reported).

Also the round trip A → A of the model's own samples (inverted and regenerated under the same label):
PSNR, the check that inversion is exact enough for DDIB.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_machine, require_idle  # noqa: E402


def pairs(data, source: int, target: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Held-out drawings of the same emoji by both vendors: (A uint8 [P, C, S, S], B same, captions)."""
    by = {source: {}, target: {}}
    for i, (c, y) in enumerate(zip(data.test_text, data.test_y.tolist())):
        if y in by:
            by[y].setdefault(c, i)
    captions = sorted(set(by[source]) & set(by[target]))
    return (data.test_x[[by[source][c] for c in captions]], data.test_x[[by[target][c] for c in captions]],
            captions)


def histogram_match(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Each channel of uint8 images x [P, C, S, S] mapped through its CDF onto the reference's (uint8 [M, C, S, S])
    pooled pixel CDF."""
    out = torch.empty_like(x)
    for ch in range(x.shape[1]):
        ref_cdf = torch.bincount(reference[:, ch].flatten().long(), minlength=256).cumsum(0).double()
        ref_cdf = ref_cdf / ref_cdf[-1]
        for i in range(x.shape[0]):
            cdf = torch.bincount(x[i, ch].flatten().long(), minlength=256).cumsum(0).double()
            cdf = cdf / cdf[-1]
            lut = torch.searchsorted(ref_cdf, cdf).clamp(max=255).to(torch.uint8)  # [256]
            out[i, ch] = lut[x[i, ch].long()]
    return out


def to_side(x: torch.Tensor, side: int) -> torch.Tensor:
    if x.shape[-1] == side:
        return x
    y = F.interpolate(x.float(), size=(side, side), mode="bicubic", antialias=True, align_corners=False)
    return y.round().clamp(0, 255).to(torch.uint8)


def scorer(data, data_cfg, cache, captions: list[str], target: int, real_b: torch.Tensor, k: int):
    """``score(images) → dict`` with the content and style figures of images paired with ``captions``."""
    from genforge.evaluation.features.contrastive import contrastive_for
    from genforge.evaluation.features.evaluators import evaluator_for
    from genforge.metrics.fid import fid
    from genforge.metrics.recon import psnr_per_image, ssim_per_image

    net, report, sha = contrastive_for(data, cache)
    print(f"contrastive evaluator: sha256 {sha[:16]}…; held-out R-precision of real test images among "
          f"{report['heldout_r_precision_k']}: {report['heldout_r_precision']:.3f}", flush=True)
    clf, info = evaluator_for(data, data_cfg, cache_dir=cache, progress=True)
    print(f"vendor classifier: {info.id} (sha256 {info.sha256[:12]}…), {info.test_accuracy:.1%} on its held-out "
          f"drawings", flush=True)
    side = info.image_size
    pool = sorted(set(data.test_text))
    k = min(k, len(pool))
    _, real_feats = clf.extract(to_side(real_b, side))

    def score(images: torch.Tensor) -> dict[str, float]:
        x, y = images.float() / 255, real_b.float() / 255
        logits, feats = clf.extract(to_side(images, side))
        return {"ssim": float(ssim_per_image(x, y).mean()), "psnr": float(psnr_per_image(x, y).mean()),
                "r_precision": net.r_precision(to_side(images, net.config.image_size), captions, pool, k=k),
                "called_b": float((logits.argmax(1) == target).float().mean()),
                "fid_b": fid(feats, real_feats, allow_small=True)}

    return score, k


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--from", dest="source", default="twitter")
    ap.add_argument("--to", dest="target", default="google")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--strengths", default="0.2,0.4,0.6,0.8")
    ap.add_argument("--guidance", default="1,2", help="ddib's guidance values to score (comma-separated)")
    ap.add_argument("--sdedit-guidance", default="1", help="sdedit's guidance values (comma-separated)")
    ap.add_argument("--no-ddib", action="store_true", help="score the baselines and sdedit only")
    ap.add_argument("--n", type=int, default=0, help="pairs to score (0 = every held-out emoji)")
    ap.add_argument("--k", type=int, default=100, help="R-precision candidates")
    ap.add_argument("--grid", type=Path, default=None, help="write A, B and each method's first 12 as a PNG grid")
    args = ap.parse_args()

    from genforge import models
    from genforge.config import DataConfig, from_dict
    from genforge.data import load_images
    from genforge.io import default_cache_dir as default_cache
    from genforge.models.conditions import Condition
    from genforge.rundir import RunDir
    from genforge.sampling.images import save_grid, to_uint8
    from genforge.sampling.translate import translate_images

    require_idle()
    print_machine()
    model = models.load(args.run).eval()
    raw = RunDir(args.run).read_config()
    data_cfg = from_dict(DataConfig, {**raw["data"], "data_dir": args.data_dir}, prefix="data")
    data = load_images(data_cfg)
    classes = list(data.classes)
    a, b = classes.index(args.source), classes.index(args.target)
    src, real_b, captions = pairs(data, a, b)
    if args.n:
        src, real_b, captions = src[:args.n], real_b[:args.n], captions[:args.n]
    print(f"{len(captions)} held-out emoji drawn by both {args.source} and {args.target}; {model.family} run "
          f"{args.run.name}, {args.steps} steps", flush=True)
    score, k = scorer(data, data_cfg, default_cache(), captions, b, real_b, args.k)
    ref_b = data.train_x[data.train_y == b]
    rows = {"copy (the source unchanged)": src, "histogram match to B": histogram_match(src, ref_b)}
    timings = {}
    for w in () if args.no_ddib else (float(g) for g in args.guidance.split(",")):
        opts = {"steps": args.steps, "guidance": w}
        name = f"ddib, guidance {w:g}"
        rows[name] = translate_images(model, src, source=Condition(label=a), target=Condition(label=b),
                                      method="ddib", options=opts)
        timings[name] = _time(lambda: translate_images(model, src[:16], source=Condition(label=a),
                                                       target=Condition(label=b), options=opts))
    for w in (float(g) for g in args.sdedit_guidance.split(",")):
        for s in (float(v) for v in args.strengths.split(",")):
            name = f"sdedit, strength {s:g}" + (f", guidance {w:g}" if w != 1 else "")
            opts = {"steps": args.steps, **({"guidance": w} if w != 1 else {})}
            rows[name] = translate_images(model, src, source=None, target=Condition(label=b), method="sdedit",
                                          strength=s, options=opts)
            if s == float(args.strengths.split(",")[-1]):
                timings[name] = _time(lambda: translate_images(model, src[:16], source=None, target=Condition(label=b),
                                                               method="sdedit", strength=s, options=opts))
    rows["real B (ceiling)"] = real_b
    print(f"\nR-precision among k = {k} (chance {1 / k:.3f}); 'called B' by the vendor classifier\n")
    print("| images | SSIM to B | PSNR to B (dB) | R-precision | called B | FID to B | 16 images |")
    print("|---|---|---|---|---|---|---|")
    for name, images in rows.items():
        f = score(images)
        t = f"{timings[name]:.2f} s" if name in timings else "—"
        print(f"| {name} | {f['ssim']:.3f} | {f['psnr']:.2f} | {f['r_precision']:.3f} | {f['called_b']:.1%} | "
              f"{f['fid_b']:.2f} | {t} |", flush=True)
    own = to_uint8(model.sample(64, condition=a, generator=torch.Generator().manual_seed(0), steps=args.steps))
    back = translate_images(model, own, source=Condition(label=a), target=Condition(label=a),
                            options={"steps": args.steps})
    mse = float(((own.float() - back.float()) ** 2).mean())
    print(f"\nround trip {args.source} → {args.source} of 64 of the model's own samples ({args.steps} steps each way): "
          f"PSNR {10 * math.log10(255 ** 2 / max(mse, 1e-12)):.2f} dB")
    if args.grid is not None:
        save_grid(torch.cat([images[:12] for images in rows.values()]), args.grid, nrow=12,
                  metadata={"rows": " | ".join(rows)})
        print(f"grid: {args.grid} (rows: {' | '.join(rows)})")


def _time(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


if __name__ == "__main__":
    main()
