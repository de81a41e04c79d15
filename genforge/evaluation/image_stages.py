"""The stages of an image evaluation, one function per group of metrics, keyed on ``IMAGE_METRICS``.

Each stage reads what earlier ones left in :class:`ImageEval` (reference,
generated images, extractors, features) and appends its :class:`Result` rows.
:data:`METRIC_STAGES` maps every ``--metrics`` name to its stage; stages run
in the order of that table, each once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

from genforge.config import DataConfig
from genforge.data import ImageData
from genforge.evaluation.features import Extractor
from genforge.evaluation.progress import Clock, log
from genforge.evaluation.protocol import Protocol, Result
from genforge.evaluation.reference import Reference, reference_features
from genforge.metrics import kid as kid_metric
from genforge.metrics.fid import GaussianStats, frechet_distance, gaussian_stats
from genforge.metrics.nll import bits_per_dim
from genforge.metrics.prdc import precision_recall_density_coverage
from genforge.metrics.recon import mse_per_image, ssim_per_image, ssim_window
from genforge.metrics.scores import inception_score, mode_coverage
from genforge.models.base import GenerativeModel
from genforge.models.conditions import label_classes

__all__ = ["METRIC_STAGES", "ImageEval", "run_stages"]


@dataclass
class ImageEval:
    """Everything an evaluation has gathered so far; stages add to ``results``, ``warnings`` and ``notes``."""

    data: ImageData
    data_cfg: DataConfig
    opts: Any  # ImageEvalOptions
    metrics: list[str]
    ref: Reference
    gen_x: Tensor  # uint8 [N, C, S, S]
    model: GenerativeModel | None
    features: Extractor | None
    evaluator: Extractor | None
    base: dict[str, Any]  # protocol fields shared by every result
    kid_subset_size: int
    clock: Clock
    generation: dict[str, Any] = field(default_factory=dict)
    results: list[Result] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    gen_f: Tensor | None = None
    ref_f: Tensor | None = None
    ref_stats: GaussianStats | None = None
    gen_logits: Tensor | None = None
    labelled: dict[tuple[int, int], tuple[Tensor, Tensor]] = field(default_factory=dict)  # (n, K) → generated (x, y)

    @property
    def n_gen(self) -> int:
        return int(self.gen_x.shape[0])

    @property
    def conditional(self) -> bool:
        """Whether reconstructions and likelihoods are conditioned on the reference labels."""
        return label_classes(self.model) > 0 and self.ref.y is not None

    def add(self, metric: str, value: float | None, proto: dict[str, Any], std: float | None = None,
            **details: Any) -> None:
        self.results.append(Result(metric, None if value is None else float(value), Protocol(metric=metric, **proto),
                                   None if std is None else float(std), details))

    def params(self, **params: Any) -> dict[str, Any]:
        """A metric's protocol params, plus the sample options the images were drawn with where they differ
        from the family's defaults (a FID at 10 sampler steps is not a FID at 50)."""
        sample = self.generation.get("sample_options")
        return {**params, "sample": sample} if sample else params

    def feature_protocol(self) -> dict[str, Any]:
        f = self.features
        proto = dict(self.base, extractor=f.id, extractor_sha256=f.sha256, feature_dim=f.dim,
                     n_generated=self.n_gen, seed=self.opts.seed)
        params = self.params()
        return dict(proto, params=params) if params else proto

    def classifier_protocol(self) -> dict[str, Any]:
        e = self.evaluator
        proto = dict(self.base, extractor=e.id, extractor_sha256=e.sha256, feature_dim=e.num_classes,
                     n_generated=self.n_gen, seed=self.opts.seed)
        params = self.params()
        return dict(proto, params=params) if params else proto


def extract_features(ev: ImageEval) -> None:
    """Reference features (cached) and generated features, once for every feature metric."""
    if ev.gen_f is not None or ev.features is None:
        return
    s, c, opts = ev.data.image_size, ev.data.channels, ev.opts
    meta = {"dataset": ev.data_cfg.name, "image_size": s, "channels": c, "split": opts.reference, "n": ev.ref.n,
            "subsample_seed": opts.reference_seed, "reference_sha256": ev.ref.sha256}
    log(opts.progress, f"reference features ({ev.ref.n} {opts.reference} images, {ev.features.id}) …")
    with ev.clock("reference_features"):
        ev.ref_f, ev.ref_stats, cached = reference_features(ev.features, ev.ref.x, meta, cache_dir=opts.cache_dir)
    ev.generation["reference_features_cached"] = cached
    log(opts.progress, f"features of {ev.n_gen} generated images …")
    with ev.clock("generated_features"):
        ev.gen_f, ev.gen_logits = ev.features(ev.gen_x)


def classifier_logits(ev: ImageEval) -> Tensor:
    """Evaluator logits of the generated images (reused from the feature pass when the evaluator made it)."""
    if ev.gen_logits is None or ev.features is not ev.evaluator:
        with ev.clock("generated_logits"):
            _, ev.gen_logits = ev.evaluator(ev.gen_x)
    return ev.gen_logits


def fid_stage(ev: ImageEval) -> None:
    extract_features(ev)
    with ev.clock("fid"):
        value = frechet_distance(*gaussian_stats(ev.gen_f), ev.ref_stats.mu, ev.ref_stats.sigma)
    ev.add("fid", value, ev.feature_protocol())


def kid_stage(ev: ImageEval) -> None:
    extract_features(ev)
    opts, ss = ev.opts, ev.kid_subset_size
    with ev.clock("kid"):
        mean, std = kid_metric.kid(ev.gen_f, ev.ref_f, subsets=opts.kid_subsets, subset_size=ss, seed=opts.seed)
    ev.add("kid", mean, dict(ev.feature_protocol(), params=ev.params(subsets=opts.kid_subsets, subset_size=ss,
                                                            kernel="cubic polynomial",
                                                            std="population, over subsets")), std=std)


def prdc_stage(ev: ImageEval) -> None:
    extract_features(ev)
    opts = ev.opts
    with ev.clock("prdc"):
        m = precision_recall_density_coverage(ev.ref_f, ev.gen_f, pr_k=opts.pr_k, dc_k=opts.dc_k)
    for group, names, k in (("pr", ("precision", "recall"), opts.pr_k), ("dc", ("density", "coverage"), opts.dc_k)):
        if group in ev.metrics:
            for name in names:
                ev.add(name, m[name], dict(ev.feature_protocol(), params=ev.params(k=k)))


def is_stage(ev: ImageEval) -> None:
    logits, splits = classifier_logits(ev), ev.opts.is_splits
    with ev.clock("is"):
        mean, std = inception_score(logits, splits=splits, shuffle_seed=ev.opts.seed)
    ev.add("is", mean, dict(ev.classifier_protocol(), params=ev.params(splits=splits, logits="evaluator classifier",
                                                                       std="population, over splits")), std=std,
           max_possible=ev.evaluator.num_classes)


def modes_stage(ev: ImageEval) -> None:
    logits = classifier_logits(ev)
    with ev.clock("modes"):
        mc = mode_coverage(logits, ev.ref.y, ev.evaluator.num_classes)
    proto = dict(ev.classifier_protocol(), params=ev.params(threshold=mc["threshold"], kl="KL(generated || reference)"))
    ev.add("modes_hit", mc["classes_hit"], proto, num_classes=mc["num_classes"])
    ev.add("modes_kl", mc["kl"], proto)


def recon_stage(ev: ImageEval) -> None:
    """MSE/PSNR/SSIM of the reconstructions of the first ``recon_samples`` reference images, on [0, 1]."""
    opts, ref, s = ev.opts, ev.ref, ev.data.image_size
    n_rec = min(ref.n, opts.recon_samples)
    log(opts.progress, f"reconstructing {n_rec} reference images …")
    with ev.clock("recon"):
        mses, ssims = [], []
        for i in range(0, n_rec, opts.batch_size):
            xb = ref.x[i:min(i + opts.batch_size, n_rec)]
            yb = ref.y[i:i + len(xb)] if ev.conditional else None
            rec = ev.model.reconstruct(xb, yb).detach().cpu().double().clamp(0, 1)  # (b, C, S, S) in [0, 1]
            target = xb.double() / 255.0
            mses.append(mse_per_image(rec, target))
            ssims.append(ssim_per_image(rec, target))
        mse_i, ssim_i = torch.cat(mses), torch.cat(ssims)
    psnr_i = 10.0 * torch.log10(1.0 / mse_i)
    window, sigma = ssim_window(s, s)
    common = {"scale": "[0, 1]", "reconstruction": "decoder mean at the posterior mean",
              "average": "per image, then over images"}
    proto = dict(ev.base, n_reference=n_rec, params=common)
    ev.add("mse", float(mse_i.mean()), proto)
    ev.add("psnr", float(psnr_i.mean()), dict(proto, params={**common, "data_range": 1.0}))
    ev.add("ssim", float(ssim_i.mean()), dict(proto, params={**common, "window": window, "sigma": round(sigma, 4),
                                                             "padding": "valid"}))


def nll_stage(ev: ImageEval) -> None:
    """NLL in nats and bits/dim on ``nll_samples`` reference images, as the model declares its likelihood."""
    opts, ref, model = ev.opts, ev.ref, ev.model
    n_nll = min(ref.n, opts.nll_samples)
    ll_options: dict[str, Any] = {}
    if model.describe_likelihood().importance_samples is not None and opts.iw_samples is not None:
        ll_options["k"] = opts.iw_samples
    info = model.describe_likelihood(**ll_options)
    kwargs = dict(ll_options, **({"generator": torch.Generator().manual_seed(opts.seed)} if info.stochastic else {}))
    k = info.importance_samples
    log(opts.progress, f"log-likelihood of {n_nll} reference images"
                       + (f" ({k} importance samples)" if k is not None else "") + " …")
    with ev.clock("nll"):
        lls = []
        step = max(1, min(opts.batch_size, 100))
        for i in range(0, n_nll, step):
            xb = ref.x[i:min(i + step, n_nll)]
            batch = {"x": xb, "y": ref.y[i:i + len(xb)]} if ev.conditional else {"x": xb}
            lls.append(model.log_likelihood(batch, **kwargs).detach().double().cpu())
        nll_i = -torch.cat(lls)  # (n_nll,) nats per image
    dims = ev.data.channels * ev.data.image_size ** 2
    params = {"family": model.family, "likelihood": "", "importance_samples": k, "estimate": info.estimate,
              "dims": dims, **info.params}
    if info.note:
        ev.notes.append(f"nll: {info.estimate}; {info.note}")
    proto = dict(ev.base, n_reference=n_nll, seed=opts.seed if info.stochastic else 0, params=params)
    ev.add("nll", float(nll_i.mean()), proto, std_error=float(nll_i.std() / math.sqrt(len(nll_i))))
    ev.add("bits_per_dim", bits_per_dim(nll_i, dims), proto)


def align_stage(ev: ImageEval) -> None:
    """CLIP score, R-precision and category accuracy of a text-to-image model (:mod:`.alignment`)."""
    from genforge.evaluation.alignment import alignment_stage

    alignment_stage(ev)


Stage = Callable[[ImageEval], None]
METRIC_STAGES: dict[str, Stage] = {"fid": fid_stage, "kid": kid_stage, "pr": prdc_stage, "dc": prdc_stage,
                                   "is": is_stage, "modes": modes_stage, "recon": recon_stage, "nll": nll_stage,
                                   "align": align_stage}


def run_stages(ev: ImageEval) -> None:
    """Run the stage of every requested metric once, in the order of :data:`METRIC_STAGES`."""
    done: set[Stage] = set()
    for metric, stage in METRIC_STAGES.items():
        if metric in ev.metrics and stage not in done:
            done.add(stage)
            stage(ev)
