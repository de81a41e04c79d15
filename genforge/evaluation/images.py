"""Image evaluation: draw (or load) samples, extract features once, compute every metric with its protocol.

    >>> report = evaluate_images(data, data_cfg, ImageEvalOptions(n=10_000), model=model)
    >>> [(r.metric, r.value) for r in report.results]      # fid, kid, precision, recall, ...

Pipeline (each stage timed in ``report.timings``):

1. **Reference.** The ``test`` (default) or ``train`` split, subsampled to
   ``min(n, split size)`` images by a permutation seeded with
   ``reference_seed``: never the first N (MNIST's test set is ordered by
   writer). The sha256 of the chosen pixels goes into the protocol.
2. **Generated.** ``n`` images from the model, seeded with ``seed``. A
   class-conditional model gets labels in the reference subset's class
   proportions (largest-remainder counts, shuffled with ``seed``), so its
   class histogram matches the reference by construction; with an
   unlabelled reference it gets uniform labels. ``report.generation`` says
   which. With ``samples`` instead of a model, those images are used (a
   ``seed``-shuffled subset when there are more than ``n``).
3. **Features**, once per side: the dataset's evaluator classifier
   (:func:`~genforge.evaluation.evaluators.evaluator_for`; 128-d
   pre-activation features and class logits) or, with ``features="inception"``,
   the FID Inception-v3 (2048-d pool3). Images are resized (bicubic,
   antialiased) and channel-converted to the extractor's input first, the same
   way on both sides. Reference features are cached in
   ``<cache>/eval-reference/`` keyed by dataset, split, N, subsample seed,
   reference sha256 and extractor sha256, so repeated evaluations and the
   training proxy extract them once.
4. **Metrics.** FID (float64, eigenvalue route), KID (``kid_subsets`` subsets
   of ``kid_subset_size``; mean ± std), precision/recall (k = 3) and
   density/coverage (k = 5) in one pass, classifier IS (evaluator logits,
   10 splits) and mode coverage (classes hit, KL to the reference class
   histogram). For models with ``reconstruct`` (VAE): MSE/PSNR/SSIM of the
   reconstructions of the first ``recon_samples`` reference images (of the
   shuffled subsample), on [0, 1]. For models with a
   likelihood: NLL in nats and bits/dim on ``nll_samples`` reference images
   (for the VAE an importance-weighted *bound*).

Sample-size policy (:func:`genforge.metrics.check_sample_sizes`): FID with N
below the feature dimension is refused unless ``allow_small`` (then warned);
a KID subset larger than the smaller set is lowered to it with a loud warning
and the subset size recorded; every report repeats that FID/KID are biased by
N and comparable only at equal N.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import sys
import time
import warnings as pywarnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from genforge.config import DataConfig
from genforge.data import ImageData, default_cache_dir
from genforge.data.transforms import shuffled_subset
from genforge.evaluation.evaluators import EvaluatorError
from genforge.evaluation.features import Extractor, evaluator_extractor, inception_extractor
from genforge.evaluation.protocol import EvalError, Protocol, Report, Result, check_metric_names
from genforge.io import atomic_path
from genforge.metrics import kid as kid_metric
from genforge.metrics.fid import GaussianStats, frechet_distance, gaussian_stats, load_stats, save_stats
from genforge.metrics.guards import SampleSizeError, check_sample_sizes
from genforge.metrics.nll import bits_per_dim
from genforge.metrics.prdc import precision_recall_density_coverage
from genforge.metrics.recon import mse_per_image, ssim_per_image, ssim_window
from genforge.metrics.scores import inception_score, mode_coverage
from genforge.models.base import GenerativeModel
from genforge.sampling.images import generate_images

__all__ = [
    "IMAGE_METRICS",
    "Extractor",
    "ImageEvalOptions",
    "balanced_labels",
    "evaluate_images",
    "proxy_fid_hook",
    "reference_features",
]

IMAGE_METRICS = ("fid", "kid", "pr", "dc", "is", "modes", "recon", "nll")  # --metrics names
FEATURE_METRICS = {"fid", "kid", "pr", "dc"}
CLASSIFIER_METRICS = {"is", "modes"}
REFERENCE_FORMAT = "genforge-eval-reference/1"
REFERENCE_DIR = "eval-reference"
PROXY_REFERENCE_N = 10_000  # reference images for the training proxy FID (fewer when the test split is smaller)


@dataclass(kw_only=True)
class ImageEvalOptions:
    """Settings of an image evaluation (the flags of ``genforge eval``).

    Attributes:
        metrics: subset of ``IMAGE_METRICS``; None = every metric that applies to the model.
        n: generated images, and reference images (fewer when the split is smaller).
        reference: ``test`` or ``train`` split.
        features: ``evaluator`` (the dataset's classifier) or ``inception`` (FID Inception-v3).
        seed: generation seed; also seeds KID subsets, IS split shuffling and importance samples.
        reference_seed: seed of the reference subsample.
        batch_size: images per generation / feature-extraction pass.
        device: where the model and extractor run.
        kid_subsets, kid_subset_size: KID's subsets (lowered to the smaller set size, with a warning).
        pr_k, dc_k: neighbourhood sizes of precision/recall and density/coverage.
        is_splits: chunks of the classifier Inception Score.
        recon_samples: reference images reconstructed for MSE/PSNR/SSIM (SSIM costs ~4 ms per 28×28 image).
        nll_samples: reference images whose likelihood is estimated.
        iw_samples: importance samples per image for a VAE's bound (None = the model's ``iw_samples``).
        allow_small: compute FID with N below the feature dimension (warned) instead of refusing.
        inception_weights: explicit Inception weights file (default: found by ``find_or_fetch``).
        cache_dir: genforge cache root (evaluators, reference features, Inception weights).
        progress: print stage lines on stderr.
    """

    metrics: tuple[str, ...] | None = None
    n: int = 10_000
    reference: str = "test"
    features: str = "evaluator"
    seed: int = 0
    reference_seed: int = 0
    batch_size: int = 500
    device: str = "cpu"
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    pr_k: int = 3
    dc_k: int = 5
    is_splits: int = 10
    recon_samples: int = 1000
    nll_samples: int = 1000
    iw_samples: int | None = None
    allow_small: bool = False
    inception_weights: str | None = None
    cache_dir: Path | None = None
    progress: bool = False

    def __post_init__(self) -> None:
        self.metrics = check_metric_names(self.metrics, IMAGE_METRICS, "image")
        if self.n < 2:
            raise EvalError(f"n must be >= 2, got {self.n}")
        if self.reference not in ("test", "train"):
            raise EvalError(f"reference must be 'test' or 'train', got {self.reference!r}")
        if self.features not in ("evaluator", "inception"):
            raise EvalError(f"features must be 'evaluator' or 'inception', got {self.features!r}")
        for name in ("batch_size", "kid_subsets", "kid_subset_size", "pr_k", "dc_k", "is_splits", "recon_samples",
                     "nll_samples"):
            if getattr(self, name) < 1:
                raise EvalError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.iw_samples is not None and self.iw_samples < 1:
            raise EvalError(f"iw_samples must be >= 1, got {self.iw_samples}")


def _log(on: bool, msg: str) -> None:
    if on:
        print(f"eval: {msg}", file=sys.stderr, flush=True)


class _Clock:
    """Stage timer: ``with clock("stage"): ...`` adds the seconds to ``clock.timings``."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    def __call__(self, stage: str) -> _Clock:
        self._stage = stage
        return self

    def __enter__(self) -> None:
        self._t = time.perf_counter()

    def __exit__(self, *exc: Any) -> None:
        self.timings[self._stage] = round(self.timings.get(self._stage, 0.0) + time.perf_counter() - self._t, 4)


# --------------------------------------------------------------------------- reference features


def _sha256_images(x: Tensor) -> str:
    h = hashlib.sha256(json.dumps({"shape": list(x.shape), "dtype": str(x.dtype)}).encode())
    h.update(x.contiguous().numpy().tobytes())
    return h.hexdigest()


def _reference_paths(cache_dir: Path | None, meta: dict[str, Any]) -> tuple[Path, Path]:
    root = (Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()) / REFERENCE_DIR
    key = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]
    slug = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in meta["dataset"])[-40:]
    stem = f"{slug}-{meta['split']}-{meta['n']}-{meta['extractor'].replace(':', '_')}-{key}"
    return root / f"{stem}.npz", root / f"{stem}.stats.npz"


def reference_features(extractor: Extractor, images: Tensor, meta: dict[str, Any], *,
                       cache_dir: Path | None = None) -> tuple[Tensor, GaussianStats, bool]:
    """Features and Gaussian statistics of the reference images, from the cache when present.

    Args:
        extractor: computes the features on a miss.
        images: uint8 ``[N, C, S, S]`` reference images (the subsample, in order).
        meta: what identifies them: ``dataset``, ``split``, ``n``, ``subsample_seed``,
            ``reference_sha256`` (the extractor's id and sha256 are added here).
        cache_dir: genforge cache root.

    Returns:
        (features float32 ``[N, D]``, statistics, whether they came from the cache).
        A damaged cache file is recomputed and rewritten.
    """
    meta = {"format": REFERENCE_FORMAT, **meta, "extractor": extractor.id, "extractor_sha256": extractor.sha256}
    path, stats_path = _reference_paths(cache_dir, meta)
    if path.is_file() and stats_path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                stored = json.loads(str(z["meta"]))
                feats = torch.from_numpy(z["features"].copy())
            stats = load_stats(stats_path)
            if (stored == meta and stats.meta.get("reference") == meta
                    and feats.shape == (images.shape[0], extractor.dim)):
                return feats, stats, True
        except (OSError, ValueError, KeyError) as e:
            pywarnings.warn(f"reference cache {path} is unreadable ({e}); recomputing it", RuntimeWarning,
                            stacklevel=2)
    feats, _ = extractor(images)
    feats = feats.float().contiguous()
    mu, sigma = gaussian_stats(feats)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, features=feats.numpy(), meta=np.array(json.dumps(meta, sort_keys=True)))
    save_stats(stats_path, mu, sigma, {"reference": meta})
    return feats, GaussianStats(mu=mu, sigma=sigma, meta={"reference": meta}), False


# --------------------------------------------------------------------------- samples


def balanced_labels(reference_labels: Tensor | None, n: int, num_classes: int, seed: int) -> tuple[Tensor, str]:
    """Labels for ``n`` conditional samples, and a sentence saying how they were chosen.

    With reference labels: each class gets ``n`` times its share of the reference
    (largest-remainder rounding, so counts sum to ``n``); otherwise classes are
    uniform. The order is shuffled with ``seed``.

    Returns:
        (int64 ``[n]``, description).
    """
    if reference_labels is not None and reference_labels.numel():
        hist = torch.bincount(reference_labels.long(), minlength=num_classes)[:num_classes].double()
        how = "class labels in the reference subset's proportions (largest remainder), shuffled with the seed"
    else:
        hist = torch.ones(num_classes, dtype=torch.float64)
        how = f"uniform class labels over {num_classes} classes, shuffled with the seed"
    quota = hist / hist.sum() * n
    counts = quota.floor().long()
    order = torch.argsort(quota - counts, descending=True, stable=True)
    counts[order[: n - int(counts.sum())]] += 1
    labels = torch.repeat_interleave(torch.arange(num_classes), counts)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return labels[perm], how


# --------------------------------------------------------------------------- the pipeline


def _resolve_metrics(requested: tuple[str, ...] | None, model: GenerativeModel | None) -> tuple[list[str], list[str]]:
    """Metric groups to run, and notes on those skipped because they do not apply."""
    can_recon = model is not None and hasattr(model, "reconstruct")
    can_nll = model is not None and type(model).log_likelihood is not GenerativeModel.log_likelihood
    why = {"recon": "the model does not reconstruct images" if model is not None else "samples have no model",
           "nll": "the model has no likelihood" if model is not None else "samples have no model"}
    ok = {"recon": can_recon, "nll": can_nll}
    notes = []
    if requested is None:
        chosen = [m for m in IMAGE_METRICS if ok.get(m, True)]
        notes += [f"{m}: skipped ({why[m]})" for m in ("recon", "nll") if not ok[m]]
        return chosen, notes
    for m in requested:
        if not ok.get(m, True):
            raise EvalError(f"metric {m!r} does not apply: {why[m]}")
    return [m for m in IMAGE_METRICS if m in requested], notes


def _accepts(fn: Callable, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def evaluate_images(data: ImageData, data_cfg: DataConfig, opts: ImageEvalOptions, *,
                    model: GenerativeModel | None = None, samples: Tensor | None = None) -> Report:
    """Evaluate a model (or a set of samples) against ``data``; see the module docstring.

    Args:
        data: the dataset, as the model saw it (same size and channels).
        data_cfg: its config (``name`` identifies the evaluator and goes into the protocol).
        opts: settings.
        model: an image model; exactly one of ``model`` and ``samples``.
        samples: uint8 ``[N, C, S, S]`` images of the data's shape.

    Raises:
        EvalError: a metric that does not apply, samples of the wrong shape.
        SampleSizeError: FID with N below the feature dimension (without ``allow_small``), too few samples.
        EvaluatorError: no evaluator classifier for the dataset (use ``features="inception"``).
    """
    if (model is None) == (samples is None):
        raise EvalError("evaluate_images needs exactly one of model and samples")
    clock = _Clock()
    log = opts.progress
    metrics, notes = _resolve_metrics(opts.metrics, model)
    warns: list[str] = []
    c, s = data.channels, data.image_size

    # 1. reference subsample
    ref_all, ref_y_all = (data.test_x, data.test_y) if opts.reference == "test" else (data.train_x, data.train_y)
    n_split = int(ref_all.shape[0])
    n_ref = min(opts.n, n_split)
    idx = shuffled_subset(n_split, n_ref, opts.reference_seed)
    ref_x = ref_all.index_select(0, idx).contiguous()
    ref_y = None if ref_y_all is None else ref_y_all.index_select(0, idx)
    if n_ref < opts.n:
        warns.append(f"the {opts.reference} split has only {n_split} images: the reference uses all of them "
                     f"(N_ref = {n_ref} < N = {opts.n})")
    ref_sha = _sha256_images(ref_x)

    # 2. extractors
    need_features = bool(FEATURE_METRICS & set(metrics))
    need_classifier = bool(CLASSIFIER_METRICS & set(metrics))
    evaluator = None
    if need_classifier or (need_features and opts.features == "evaluator"):
        with clock("load_extractor"):
            try:
                evaluator = evaluator_extractor(data, data_cfg, batch_size=opts.batch_size, device=opts.device,
                                                cache_dir=opts.cache_dir, progress=log)
            except EvaluatorError as e:
                explicit = opts.metrics is not None and need_classifier
                if opts.features == "evaluator" or explicit:
                    raise
                notes.append(f"is, modes: skipped ({e})")
                metrics = [m for m in metrics if m not in CLASSIFIER_METRICS]
                need_classifier = False
    if "modes" in metrics and ref_y is None:
        if opts.metrics is not None:
            raise EvalError("metric 'modes' needs a labelled reference (class sub-folders)")
        metrics.remove("modes")
        notes.append("modes: skipped (the reference has no labels)")
    features: Extractor | None = None
    if need_features:
        if opts.features == "inception":
            with clock("load_extractor"):
                features = inception_extractor(weights=opts.inception_weights, batch_size=opts.batch_size,
                                               device=opts.device, cache_dir=opts.cache_dir, progress=log)
        else:
            features = evaluator

    # sample-size policy, before any generation
    n_gen = opts.n if model is not None else min(opts.n, int(samples.shape[0]))
    kid_ss = min(opts.kid_subset_size, n_gen, n_ref)
    if features is not None:
        n_min = min(n_gen, n_ref)
        if "fid" in metrics and n_min < features.dim and not opts.allow_small:
            raise SampleSizeError(
                f"FID needs N >= the feature dimension: {n_gen} generated and {n_ref} reference images for "
                f"{features.dim}-d {features.id} features (the covariance would be rank-deficient); raise --n, "
                f"or pass --allow-small to compute it anyway (warned, not comparable)")
        if "kid" in metrics and kid_ss < opts.kid_subset_size:
            warns.append(f"WARNING: KID subset size lowered from {opts.kid_subset_size} to {kid_ss} (the smaller set "
                         f"has {n_min} samples); compare only KIDs with the same subset size")
        policy = check_sample_sizes(n_gen, n_ref, features.dim,
                                    kid_subset_size=kid_ss if "kid" in metrics and kid_ss >= 2 else None,
                                    allow_small=True)
        warns += [w for w in policy if "fid" in metrics or not w.startswith("WARNING: FID needs")]

    if "is" in metrics and n_gen < opts.is_splits:
        raise EvalError(f"the classifier Inception Score needs at least {opts.is_splits} samples (one per split), "
                        f"got {n_gen}")

    # 3. generated (or given) images
    generation: dict[str, Any] = {}
    if model is not None:
        k = getattr(model.config, "num_classes", 0) if getattr(model.config, "conditional", False) else 0
        labels = None
        if k:
            labels, how = balanced_labels(ref_y if data.num_classes == k else None, n_gen, k, opts.seed)
            generation["conditioning"] = how
        else:
            generation["conditioning"] = "unconditional"
        generation.update(source="model", family=model.family, n=n_gen, seed=opts.seed)
        _log(log, f"generating {n_gen} images (seed {opts.seed}) …")
        with clock("generate"):
            gen_x = generate_images(model, n_gen, condition=labels, seed=opts.seed, batch_size=opts.batch_size)
    else:
        gen_x = samples
        if gen_x.dtype != torch.uint8 or gen_x.ndim != 4:
            raise EvalError(f"samples must be uint8 [N, C, H, W], got {gen_x.dtype} {list(gen_x.shape)}")
        if gen_x.shape[0] > n_gen:
            gen_x = gen_x.index_select(0, shuffled_subset(gen_x.shape[0], n_gen, opts.seed))
            generation["subset"] = f"{n_gen} of {samples.shape[0]} samples, shuffled with the seed"
        generation.update(source="samples", n=n_gen, conditioning="unknown (external samples)")
    if tuple(gen_x.shape[1:]) != (c, s, s):
        raise EvalError(f"generated images are {list(gen_x.shape[1:])} but the reference images are [{c}, {s}, {s}]; "
                        f"pass samples of the dataset's shape (or evaluate against data of their size)")

    base = dict(n_reference=n_ref, reference_split=opts.reference, reference_subsample="shuffled",
                subsample_seed=opts.reference_seed, reference_sha256=ref_sha, dataset=data_cfg.name,
                image_size=s, channels=c,
                split_sizes={"train": int(data.train_x.shape[0]), "test": int(data.test_x.shape[0])})
    results: list[Result] = []

    def add(metric: str, value: float | None, proto: dict[str, Any], std: float | None = None,
            **details: Any) -> None:
        results.append(Result(metric, None if value is None else float(value), Protocol(metric=metric, **proto),
                              None if std is None else float(std), details))

    # 4. features and metrics
    gen_logits = None
    if features is not None:
        meta = {"dataset": data_cfg.name, "image_size": s, "channels": c, "split": opts.reference, "n": n_ref,
                "subsample_seed": opts.reference_seed, "reference_sha256": ref_sha}
        _log(log, f"reference features ({n_ref} {opts.reference} images, {features.id}) …")
        with clock("reference_features"):
            ref_f, ref_stats, cached = reference_features(features, ref_x, meta, cache_dir=opts.cache_dir)
        generation["reference_features_cached"] = cached
        _log(log, f"features of {n_gen} generated images …")
        with clock("generated_features"):
            gen_f, gen_logits = features(gen_x)
        fproto = dict(base, extractor=features.id, extractor_sha256=features.sha256, feature_dim=features.dim,
                      n_generated=n_gen, seed=opts.seed)
        if "fid" in metrics:
            with clock("fid"):
                value = frechet_distance(*gaussian_stats(gen_f), ref_stats.mu, ref_stats.sigma)
            add("fid", value, fproto)
        if "kid" in metrics:
            with clock("kid"):
                mean, std = kid_metric.kid(gen_f, ref_f, subsets=opts.kid_subsets, subset_size=kid_ss, seed=opts.seed)
            add("kid", mean, dict(fproto, params={"subsets": opts.kid_subsets, "subset_size": kid_ss,
                                                  "kernel": "cubic polynomial", "std": "population, over subsets"}),
                std=std)
        if "pr" in metrics or "dc" in metrics:
            with clock("prdc"):
                m = precision_recall_density_coverage(ref_f, gen_f, pr_k=opts.pr_k, dc_k=opts.dc_k)
            if "pr" in metrics:
                for name in ("precision", "recall"):
                    add(name, m[name], dict(fproto, params={"k": opts.pr_k}))
            if "dc" in metrics:
                for name in ("density", "coverage"):
                    add(name, m[name], dict(fproto, params={"k": opts.dc_k}))
    if need_classifier and evaluator is not None:
        if gen_logits is None or features is not evaluator:
            with clock("generated_logits"):
                _, gen_logits = evaluator(gen_x)
        cproto = dict(base, extractor=evaluator.id, extractor_sha256=evaluator.sha256,
                      feature_dim=evaluator.num_classes, n_generated=n_gen, seed=opts.seed)
        if "is" in metrics:
            with clock("is"):
                mean, std = inception_score(gen_logits, splits=opts.is_splits, shuffle_seed=opts.seed)
            add("is", mean, dict(cproto, params={"splits": opts.is_splits, "logits": "evaluator classifier",
                                                 "std": "population, over splits"}), std=std,
                max_possible=evaluator.num_classes)
        if "modes" in metrics:
            with clock("modes"):
                mc = mode_coverage(gen_logits, ref_y, evaluator.num_classes)
            mproto = dict(cproto, params={"threshold": mc["threshold"], "kl": "KL(generated || reference)"})
            add("modes_hit", mc["classes_hit"], mproto, num_classes=mc["num_classes"])
            add("modes_kl", mc["kl"], mproto)

    conditional = model is not None and bool(getattr(model.config, "conditional", False)) and ref_y is not None
    if "recon" in metrics:
        n_rec = min(n_ref, opts.recon_samples)
        _log(log, f"reconstructing {n_rec} reference images …")
        with clock("recon"):
            mses, ssims = [], []
            for i in range(0, n_rec, opts.batch_size):
                xb = ref_x[i:min(i + opts.batch_size, n_rec)]
                yb = ref_y[i:i + len(xb)] if conditional else None
                rec = model.reconstruct(xb, yb).detach().cpu().double().clamp(0, 1)  # (b, C, S, S) in [0, 1]
                target = xb.double() / 255.0
                mses.append(mse_per_image(rec, target))
                ssims.append(ssim_per_image(rec, target))
            mse_i, ssim_i = torch.cat(mses), torch.cat(ssims)
        psnr_i = 10.0 * torch.log10(1.0 / mse_i)
        window, sigma = ssim_window(s, s)
        common = {"scale": "[0, 1]", "reconstruction": "decoder mean at the posterior mean",
                  "average": "per image, then over images"}
        rproto = dict(base, n_reference=n_rec, params=common)
        add("mse", float(mse_i.mean()), rproto)
        add("psnr", float(psnr_i.mean()), dict(rproto, params={**common, "data_range": 1.0}))
        add("ssim", float(ssim_i.mean()), dict(rproto, params={**common, "window": window, "sigma": round(sigma, 4),
                                                               "padding": "valid"}))
    if "nll" in metrics:
        n_nll = min(n_ref, opts.nll_samples)
        k = opts.iw_samples if opts.iw_samples is not None else getattr(model.config, "iw_samples", None)
        ll_fn = model.log_likelihood
        kwargs: dict[str, Any] = {}
        if _accepts(ll_fn, "generator"):
            kwargs["generator"] = torch.Generator().manual_seed(opts.seed)
        if k is not None and _accepts(ll_fn, "k"):
            kwargs["k"] = k
        _log(log, f"log-likelihood of {n_nll} reference images"
                  + (f" ({k} importance samples)" if "k" in kwargs else "") + " …")
        with clock("nll"):
            lls = []
            step = max(1, min(opts.batch_size, 100))
            for i in range(0, n_nll, step):
                xb = ref_x[i:min(i + step, n_nll)]
                batch = {"x": xb, "y": ref_y[i:i + len(xb)]} if conditional else {"x": xb}
                lls.append(ll_fn(batch, **kwargs).detach().double().cpu())
            nll_i = -torch.cat(lls)  # (n_nll,) nats per image
        dims = c * s * s
        likelihood = getattr(model.config, "likelihood", "")
        estimate = (f"importance-weighted lower bound on log p with K={k} (an upper bound on the NLL)"
                    if "k" in kwargs else f"{model.family} log_likelihood")
        params = {"family": model.family, "likelihood": likelihood, "importance_samples": kwargs.get("k"),
                  "estimate": estimate, "dims": dims}
        if model.family == "vae":
            params["scale"] = "pixels in [0, 1]; not a discrete 8-bit likelihood"
            notes.append(f"nll: {estimate}; {likelihood} likelihood of pixels in [0, 1], so bits/dim is not "
                         f"comparable with published 8-bit (dequantised) figures")
        nproto = dict(base, n_reference=n_nll, seed=opts.seed if "generator" in kwargs else 0, params=params)
        add("nll", float(nll_i.mean()), nproto, std_error=float(nll_i.std() / math.sqrt(len(nll_i))))
        add("bits_per_dim", bits_per_dim(nll_i, dims), nproto)

    return Report(results=results, warnings=warns, timings=clock.timings, generation=generation, notes=notes,
                  images=gen_x)


# --------------------------------------------------------------------------- training proxy


def proxy_fid_hook(data: ImageData, data_cfg: DataConfig, *, n: int, seed: int = 0, batch_size: int = 256,
                   cache_dir: Path | None = None) -> Callable[[GenerativeModel, int], dict[str, Any]] | None:
    """A trainer ``evaluate`` hook computing a cheap FID of ``n`` generated images vs the test split.

    The reference is up to ``PROXY_REFERENCE_N`` test images (shuffled, seed 0),
    in the dataset evaluator's feature space; its statistics come from the same
    cache as ``genforge eval``'s. Each call generates ``n`` images with the same
    ``seed`` (so the curve follows the model, not the noise) and returns
    ``{"eval/fid@<n>": value, "eval/fid_extractor": "<evaluator id>@<sha256[:12]>"}``. The value is a
    *proxy*: N is small, so it is
    biased upward and only comparable within runs using the same ``n``.

    Returns:
        The hook, or None (after one warning on stderr) when the dataset has no evaluator.
    """
    try:
        extractor = evaluator_extractor(data, data_cfg, batch_size=batch_size, cache_dir=cache_dir, progress=True)
    except EvaluatorError as e:
        print(f"genforge: warning: proxy FID disabled (train.eval_every > 0): {e}", file=sys.stderr, flush=True)
        return None
    n_ref = min(PROXY_REFERENCE_N, int(data.test_x.shape[0]))
    idx = shuffled_subset(int(data.test_x.shape[0]), n_ref, 0)
    ref_x = data.test_x.index_select(0, idx).contiguous()
    ref_y = None if data.test_y is None else data.test_y.index_select(0, idx)
    meta = {"dataset": data_cfg.name, "image_size": data.image_size, "channels": data.channels, "split": "test",
            "n": n_ref, "subsample_seed": 0, "reference_sha256": _sha256_images(ref_x)}
    _, stats, _ = reference_features(extractor, ref_x, meta, cache_dir=cache_dir)
    for w in check_sample_sizes(n, n_ref, extractor.dim, kid_subset_size=None, allow_small=True)[1:]:
        print(f"genforge: proxy FID: {w}", file=sys.stderr, flush=True)
    key = f"eval/fid@{n}"
    extractor_tag = f"{extractor.id}@{extractor.sha256[:12]}"  # logged beside the value: which features it used

    def evaluate(model: GenerativeModel, step: int) -> dict[str, Any]:
        cfg = model.config
        k = getattr(cfg, "num_classes", 0) if getattr(cfg, "conditional", False) else 0
        labels = balanced_labels(ref_y if data.num_classes == k else None, n, k, seed)[0] if k else None
        images = generate_images(model, n, condition=labels, seed=seed, batch_size=batch_size)
        feats, _ = extractor(images)
        fid_value = frechet_distance(*gaussian_stats(feats), stats.mu, stats.sigma)
        return {key: fid_value, "eval/fid_extractor": extractor_tag}

    return evaluate
