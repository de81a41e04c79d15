"""Image evaluation: draw (or load) samples, extract features once, compute every metric with its protocol.

    >>> report = evaluate_images(data, data_cfg, ImageEvalOptions(n=10_000), pipeline=ImagePipeline(model))
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
   way on both sides. Reference features are cached
   (:mod:`~genforge.evaluation.reference`).
4. **Metrics.** FID (float64, eigenvalue route), KID (``kid_subsets`` subsets
   of ``kid_subset_size``; mean ± std), precision/recall (k = 3) and
   density/coverage (k = 5) in one pass, classifier IS (evaluator logits,
   10 splits) and mode coverage (classes hit, KL to the reference class
   histogram). For models that declare ``Reconstructs`` (VAE): MSE/PSNR/SSIM
   of the reconstructions of the first ``recon_samples`` reference images (of
   the shuffled subsample), on [0, 1]. For models that declare a likelihood
   (``describe_likelihood``): NLL in nats and bits/dim on ``nll_samples``
   reference images (for the VAE an importance-weighted *bound*). Each group
   of metrics is one stage (:mod:`~genforge.evaluation.image_stages`).

Sample-size policy (:func:`genforge.metrics.check_sample_sizes`): FID with N
below the feature dimension is refused unless ``allow_small`` (then warned);
a KID subset larger than the smaller set is lowered to it with a loud warning
and the subset size recorded; every report repeats that FID/KID are biased by
N and comparable only at equal N. Precision/recall/density/coverage estimate
each set's manifold from k-nearest-neighbour radii, which are unreliable in
small sets: with fewer than ``PRDC_MIN_N`` generated or reference images they
are skipped (noted) by default, refused when asked for by name, and computed
with a loud warning under ``allow_small``; below ``PRDC_WARN_N`` they carry a
warning. The thresholds come from ``bench/prdc_sample_size.py`` (real-vs-real
and noise-vs-real scores against N; see the README). An evaluator whose
held-out accuracy is below ``EVALUATOR_MIN_ACCURACY`` is reported as untrusted:
its features separate the classes poorly, so distances in them say little.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from genforge.config import DataConfig
from genforge.data import ImageData
from genforge.data.transforms import shuffled_subset
from genforge.evaluation.features import Extractor, evaluator_extractor, inception_extractor
from genforge.evaluation.applications import APP_METRICS, run_app_stages
from genforge.evaluation.features.evaluators import EvaluatorError
from genforge.evaluation.image_stages import ImageEval, run_stages
from genforge.evaluation.progress import Clock, log, ticker
from genforge.evaluation.protocol import EvalError, Report, check_metric_names
from genforge.evaluation.proxy import proxy_fid_hook
from genforge.evaluation.reference import Reference, balanced_labels, reference_features, reference_subsample
from genforge.metrics.guards import SampleSizeError, check_sample_sizes
from genforge.models.base import GenerativeModel
from genforge.models.conditions import Condition, label_classes
from genforge.sampling.images import ImagePipeline

__all__ = [
    "IMAGE_METRICS",
    "Extractor",
    "ImageEvalOptions",
    "balanced_labels",
    "evaluate_images",
    "evaluator_extractor",
    "proxy_fid_hook",
    "reference_features",
]

SAMPLE_METRICS = ("fid", "kid", "pr", "dc", "is", "modes", "recon", "nll", "align")
IMAGE_METRICS = SAMPLE_METRICS + APP_METRICS  # --metrics names; the application metrics run only when asked
FEATURE_METRICS = {"fid", "kid", "pr", "dc"}
PRDC_MIN_N = 1000  # k-NN manifold metrics below this many images: skipped / refused / warned (see module doc)
PRDC_WARN_N = 5000  # below this: computed, with a warning that they move with N
EVALUATOR_MIN_ACCURACY = 0.9  # held-out accuracy below which an evaluator's features are not to be trusted
CLASSIFIER_METRICS = {"is", "modes"}
MAX_EVAL_IMAGES = 200_000  # generated (and reference) images of one evaluation; FID's convention is 50k


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
        allow_small: compute FID with N below the feature dimension and precision/recall/density/coverage
            below ``PRDC_MIN_N`` images (warned) instead of refusing or skipping them.
        inception_weights: explicit Inception weights file (default: found by ``find_or_fetch``).
        cache_dir: genforge cache root (evaluators, reference features, Inception weights).
        progress: print stage lines on stderr.
        sample: the family's sample options for the generated images (e.g. ``steps``, ``guidance``); those
            that differ from the family's defaults are recorded in every generation metric's protocol.
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
    sample: dict[str, Any] = field(default_factory=dict)
    app_n: int = 1000
    masks: list[str] = field(default_factory=lambda: ["center", "left"])
    inpaint_labels: str = "auto"
    inpaint: dict[str, Any] = field(default_factory=dict)
    cas_n: int = 10_000
    augment_fraction: float = 0.01
    augment_n: int = 10_000
    classifier_epochs: float = 5.0

    def __post_init__(self) -> None:
        self.metrics = check_metric_names(self.metrics, IMAGE_METRICS, "image")
        if self.inpaint_labels not in ("auto", "given", "none"):
            raise EvalError(f"inpaint_labels must be auto, given or none, got {self.inpaint_labels!r}")
        if not 0 < self.augment_fraction < 1:
            raise EvalError(f"augment_fraction must be in (0, 1), got {self.augment_fraction}")
        if not 0 < self.classifier_epochs <= 1000:
            raise EvalError(f"classifier_epochs must be in (0, 1000], got {self.classifier_epochs}")
        for name in ("app_n", "cas_n", "augment_n"):
            if not 10 <= getattr(self, name) <= MAX_EVAL_IMAGES:
                raise EvalError(f"{name} must be in [10, {MAX_EVAL_IMAGES}], got {getattr(self, name)}")
        from genforge.sampling.masks import is_builtin

        self.masks = list(self.masks)
        bad = [m for m in self.masks if not is_builtin(m)]
        if bad or not self.masks:
            raise EvalError(f"masks must be built-in masks (center, left, right, top, bottom, random:F), got {bad}")
        if not 2 <= self.n <= MAX_EVAL_IMAGES:
            raise EvalError(f"n must be in [2, {MAX_EVAL_IMAGES}], got {self.n}")
        if self.reference not in ("test", "train"):
            raise EvalError(f"reference must be 'test' or 'train', got {self.reference!r}")
        if self.features not in ("evaluator", "inception"):
            raise EvalError(f"features must be 'evaluator' or 'inception', got {self.features!r}")
        for name in ("batch_size", "kid_subsets", "kid_subset_size", "pr_k", "dc_k", "is_splits", "recon_samples",
                     "nll_samples"):
            value = getattr(self, name)
            if not 1 <= value <= MAX_EVAL_IMAGES:
                raise EvalError(f"{name} must be in [1, {MAX_EVAL_IMAGES}], got {value}")
        if self.iw_samples is not None and not 1 <= self.iw_samples <= 100_000:
            raise EvalError(f"iw_samples must be in [1, 100000], got {self.iw_samples}")


# --------------------------------------------------------------------------- the pipeline


def _resolve_metrics(requested: tuple[str, ...] | None, model: GenerativeModel | None) -> tuple[list[str], list[str]]:
    """Metric groups to run, and notes on those skipped because they do not apply (capabilities are declared)."""
    caps = model.capabilities() if model is not None else ()
    can_recon = "reconstruct" in caps
    can_nll = model is not None and model.describe_likelihood() is not None
    conditional = model is not None and label_classes(model) > 0
    no_model = "samples have no model"
    why = {"recon": "the model does not reconstruct images" if model is not None else no_model,
           "nll": "the model has no likelihood" if model is not None else no_model,
           "inpaint": "the model cannot inpaint" if model is not None else no_model,
           "upscale": "the model does not generate from a source image" if model is not None else no_model,
           "cas": "it needs a class-conditional model" if model is not None else no_model,
           "align": "it needs a text-to-image model" if model is not None else no_model}
    why["augment"] = why["cas"]
    ok = {"recon": can_recon, "nll": can_nll, "inpaint": "inpaint" in caps,
          "upscale": model is not None and "image" in model.accepted_conditions(), "cas": conditional,
          "augment": conditional, "align": model is not None and "text" in model.accepted_conditions()}
    needs_source = model is not None and "image" in model.required_conditions()
    if needs_source:  # it draws nothing from noise: only the metrics of generating from sources apply
        why.update({m: "the model draws no samples without a source image" for m in SAMPLE_METRICS})
        ok.update({m: False for m in SAMPLE_METRICS})
    notes = []
    if requested is None:
        if needs_source:
            return ["upscale"], notes
        chosen = [m for m in SAMPLE_METRICS if ok.get(m, True)]
        notes += [f"{m}: skipped ({why[m]})" for m in ("recon", "nll") if not ok[m]]
        return chosen, notes
    for m in requested:
        if not ok.get(m, True):
            raise EvalError(f"metric {m!r} does not apply: {why[m]}")
    return [m for m in IMAGE_METRICS if m in requested], notes


def _extractors(data: ImageData, data_cfg: DataConfig, opts: ImageEvalOptions, metrics: list[str], notes: list[str],
                clock: Clock) -> tuple[Extractor | None, Extractor | None]:
    """(feature extractor, evaluator classifier) the requested metrics need; drops is/modes (noted) when the
    dataset has no evaluator and they were not asked for explicitly."""
    need_features = bool(FEATURE_METRICS & set(metrics))
    need_classifier = bool((CLASSIFIER_METRICS | set(APP_METRICS)) & set(metrics))
    evaluator = None
    align_categories = "align" in metrics and data.labelled  # category accuracy, where there is an evaluator
    if need_classifier or (need_features and opts.features == "evaluator") or align_categories:
        with clock("load_extractor"):
            try:
                evaluator = evaluator_extractor(data, data_cfg, batch_size=opts.batch_size, device=opts.device,
                                                cache_dir=opts.cache_dir, progress=opts.progress)
            except EvaluatorError as e:
                if (need_features and opts.features == "evaluator") or (opts.metrics is not None and need_classifier):
                    raise
                notes.append(f"is, modes, category accuracy: skipped ({e})")
                metrics[:] = [m for m in metrics if m not in CLASSIFIER_METRICS]
    features = None
    if need_features:
        if opts.features == "inception":
            with clock("load_extractor"):
                features = inception_extractor(weights=opts.inception_weights, batch_size=opts.batch_size,
                                               device=opts.device, cache_dir=opts.cache_dir, progress=opts.progress)
        else:
            features = evaluator
    return features, evaluator


def _prdc_policy(opts: ImageEvalOptions, metrics: list[str], n_gen: int, n_ref: int, warns: list[str],
                 notes: list[str]) -> None:
    """Skip, refuse or flag precision/recall/density/coverage on small sets (module docstring)."""
    asked = [m for m in ("pr", "dc") if m in metrics]
    n_min = min(n_gen, n_ref)
    if not asked or n_min >= PRDC_WARN_N:
        return
    sizes = f"{n_gen} generated and {n_ref} reference images"
    if n_min < PRDC_MIN_N and not opts.allow_small:
        why = (f"k-NN manifold estimates need at least {PRDC_MIN_N} images in each set (got {sizes}); below that "
               f"even pure noise can score a high precision")
        if opts.metrics is not None:
            raise SampleSizeError(f"precision/recall/density/coverage: {why}; raise --n (or use --reference train), "
                                  f"or pass --allow-small to compute them anyway (warned)")
        metrics[:] = [m for m in metrics if m not in asked]
        notes.append(f"{', '.join(asked)}: skipped ({why})")
        return
    level = "unreliable" if n_min < PRDC_MIN_N else "still moving with N"
    warns.append(f"WARNING: precision/recall/density/coverage on {sizes} are {level} (k-NN radii from small sets; "
                 f"stable from about {PRDC_WARN_N}); compare them only at equal N")


def _evaluator_trust(features: Extractor | None, evaluator: Extractor | None, warns: list[str],
                     notes: list[str] | None = None) -> None:
    """Record the held-out accuracy of every evaluator classifier behind the metrics (a note in eval.json),
    and warn when it classifies its own held-out images poorly."""
    for ex in {id(e): e for e in (features, evaluator) if e is not None}.values():
        acc = ex.test_accuracy
        if notes is not None and acc is not None and not math.isnan(acc):
            notes.append(f"evaluator {ex.id} (sha256 {ex.sha256[:12]}…): {acc:.2%} of its {ex.test_examples} "
                         f"held-out images classified correctly")
        if acc is not None and not math.isnan(acc) and acc < EVALUATOR_MIN_ACCURACY:
            warns.append(f"WARNING: the evaluator {ex.id} classifies only {acc:.1%} of its {ex.test_examples} "
                         f"held-out images correctly (< {EVALUATOR_MIN_ACCURACY:.0%}): its features do not separate "
                         f"the classes well, so FID/KID/precision/recall in them say little; add labelled images "
                         f"per class, or use --features inception")


def _size_policy(opts: ImageEvalOptions, metrics: list[str], features: Extractor | None, n_gen: int, n_ref: int,
                 warns: list[str], notes: list[str]) -> int:
    """Refuse sample sizes the metrics cannot take (before any generation); returns the KID subset size."""
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
    _prdc_policy(opts, metrics, n_gen, n_ref, warns, notes)
    if "is" in metrics and n_gen < opts.is_splits:
        raise EvalError(f"the classifier Inception Score needs at least {opts.is_splits} samples (one per split), "
                        f"got {n_gen}")
    return kid_ss


def _generated(data: ImageData, opts: ImageEvalOptions, ref: Reference, n_gen: int, clock: Clock,
               pipeline: ImagePipeline | None, samples: Tensor | None) -> tuple[Tensor, dict[str, Any]]:
    """The images to evaluate: ``n_gen`` drawn through the pipeline (labels in the reference's class
    proportions for a conditional model), or the given samples (a seeded subset of them)."""
    generation: dict[str, Any] = {}
    if pipeline is not None:
        k, labels = pipeline.num_classes, None
        if k:
            labels, how = balanced_labels(ref.y if data.num_classes == k else None, n_gen, k, opts.seed)
            generation["conditioning"] = how
        elif "text" in pipeline.model.accepted_conditions() and ref.text:
            prompts = [pipeline.model.readable_prompt(ref.text[i % ref.n]) for i in range(n_gen)]
            labels = Condition(text=tuple(prompts))
            generation["conditioning"] = (f"the captions of the {ref.split} reference images, in order (cycled past "
                                          f"{ref.n}), in the words the model knows")
        else:
            generation["conditioning"] = "unconditional"
        generation.update(source="model", family=pipeline.model.family, n=n_gen, seed=opts.seed)
        options = pipeline.model.parse_sample_options(opts.sample)
        defaults = pipeline.model.sample_options()
        changed = {k: v for k, v in vars(options).items() if getattr(defaults, k) != v}
        if changed:
            generation["sample_options"] = changed
        log(opts.progress, f"generating {n_gen} images (seed {opts.seed}) …")
        with clock("generate"):
            gen_x = pipeline.generate(n_gen, condition=labels, seed=opts.seed, batch_size=opts.batch_size,
                                      options=options, on_batch=ticker(opts.progress, "generated"))
        return gen_x, generation
    gen_x = samples
    if gen_x.dtype != torch.uint8 or gen_x.ndim != 4:
        raise EvalError(f"samples must be uint8 [N, C, H, W], got {gen_x.dtype} {list(gen_x.shape)}")
    if gen_x.shape[0] > n_gen:
        gen_x = gen_x.index_select(0, shuffled_subset(gen_x.shape[0], n_gen, opts.seed))
        generation["subset"] = f"{n_gen} of {samples.shape[0]} samples, shuffled with the seed"
    generation.update(source="samples", n=n_gen, conditioning="unknown (external samples)")
    return gen_x, generation


def evaluate_images(data: ImageData, data_cfg: DataConfig, opts: ImageEvalOptions, *,
                    pipeline: ImagePipeline | None = None, samples: Tensor | None = None) -> Report:
    """Evaluate a model (through its sampling pipeline) or a set of samples against ``data``.

    Args:
        data: the dataset, as the model saw it (same size and channels).
        data_cfg: its config (``name`` identifies the evaluator and goes into the protocol).
        opts: settings.
        pipeline: an image sampling pipeline; exactly one of ``pipeline`` and ``samples``.
        samples: uint8 ``[N, C, S, S]`` images of the data's shape.

    Raises:
        EvalError: a metric that does not apply, samples of the wrong shape.
        SampleSizeError: FID with N below the feature dimension (without ``allow_small``), too few samples.
        EvaluatorError: no evaluator classifier for the dataset (use ``features="inception"``).
    """
    if (pipeline is None) == (samples is None):
        raise EvalError("evaluate_images needs exactly one of pipeline and samples")
    clock, warns = Clock(), []
    model = pipeline.model if pipeline is not None else None
    metrics, notes = _resolve_metrics(opts.metrics, model)
    c, s = data.channels, data.image_size
    ref = reference_subsample(data, opts.reference, opts.n, opts.reference_seed)
    if ref.n < opts.n:
        warns.append(f"the {opts.reference} split has only {ref.n_split} images: the reference uses all of them "
                     f"(N_ref = {ref.n} < N = {opts.n})")
    features, evaluator = _extractors(data, data_cfg, opts, metrics, notes, clock)
    if "modes" in metrics and ref.y is None:
        if opts.metrics is not None:
            raise EvalError("metric 'modes' needs a labelled reference (class sub-folders)")
        metrics.remove("modes")
        notes.append("modes: skipped (the reference has no labels)")
    if data.split:
        notes.append(f"test split of {data_cfg.name}: {data.split}")
    n_gen = opts.n if pipeline is not None else min(opts.n, int(samples.shape[0]))
    _evaluator_trust(features, evaluator, warns, notes)
    kid_ss = _size_policy(opts, metrics, features, n_gen, ref.n, warns, notes)
    if set(metrics) <= set(APP_METRICS):  # no metric of the model's own samples: draw none
        gen_x, generation = torch.zeros((0, c, s, s), dtype=torch.uint8), {"source": "model", "n": 0}
    else:
        gen_x, generation = _generated(data, opts, ref, n_gen, clock, pipeline, samples)
    if gen_x.shape[0] and tuple(gen_x.shape[1:]) != (c, s, s):
        raise EvalError(f"generated images are {list(gen_x.shape[1:])} but the reference images are [{c}, {s}, {s}]; "
                        f"pass samples of the dataset's shape (or evaluate against data of their size)")
    base = dict(n_reference=ref.n, reference_split=opts.reference, reference_subsample="shuffled",
                subsample_seed=opts.reference_seed, reference_sha256=ref.sha256, dataset=data_cfg.name,
                image_size=s, channels=c,
                split_sizes={"train": int(data.train_x.shape[0]), "test": int(data.test_x.shape[0])})
    ev = ImageEval(data=data, data_cfg=data_cfg, opts=opts, metrics=metrics, ref=ref, gen_x=gen_x, model=model,
                   features=features, evaluator=evaluator, base=base, kid_subset_size=kid_ss, clock=clock,
                   generation=generation, warnings=warns, notes=notes)
    run_stages(ev)
    run_app_stages(ev)
    return Report(results=ev.results, warnings=ev.warnings, timings=clock.timings, generation=ev.generation,
                  notes=ev.notes, images=gen_x)

