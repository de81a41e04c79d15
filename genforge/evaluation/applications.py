"""Application metrics: inpainting, super-resolution, and what generated data is worth to a classifier.

Each stage adds results named ``GROUP/…/MEASURE`` (e.g. ``inpaint/center/psnr``, ``upscale/x4/ssim``,
``cas``, ``augment/gain``), every one with its protocol, beside the baseline it must beat:

- **inpaint** (models that declare ``Inpaints``): ``app_n`` test images (the seeded reference subsample)
  per mask in ``masks``. PSNR and SSIM over the masked region only (SSIM map with reflect padding,
  averaged over masked pixels), the evaluator's accuracy on the results (does the digit keep its
  class?), FID of the inpainted set against the reference (evaluator features), and seconds per image
  — with the same numbers for filling the region with the training-set mean image. Labels: ``given``
  (the true label, class-conditional inpainting), ``none`` (the model decides), or ``auto`` (given when
  the model is conditional).
- **upscale** (``ImageConditioned``): per source variant (for super-resolution each trained factor f: the
  test images area-downsampled by f and 8-bit quantised), the model generates the images back from their
  sources; PSNR and SSIM (whole image) against the originals and evaluator accuracy, beside the model's
  declared baseline (bicubic upsampling of the same inputs).
- **cas** (Classification Accuracy Score, Ravuri & Vinyals 2019; conditional models): the evaluator's
  architecture and training recipe (:func:`~genforge.evaluation.features.train_evaluator`, ``classifier_epochs``
  epochs, seeded) trained on ``cas_n`` generated images with balanced labels, tested on the whole real test
  split; ``cas_real`` is the same classifier trained on ``cas_n`` real training images (seeded subset).
- **augment**: a classifier trained on a seeded ``augment_fraction`` subset of the real training split
  alone (``augment/baseline``) and on that subset plus ``augment_n`` generated images (``augment/accuracy``),
  both for the same number of optimizer steps; ``augment/gain`` is the difference in test accuracy.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import torch
from torch import Tensor

from genforge.data import ImageData
from genforge.data.transforms import shuffled_subset
from genforge.evaluation.features.evaluator_training import EvaluatorTrainConfig, train_evaluator
from genforge.evaluation.image_stages import ImageEval
from genforge.evaluation.progress import log, ticker
from genforge.evaluation.protocol import EvalError
from genforge.evaluation.reference import reference_features, reference_subsample
from genforge.metrics.fid import frechet_distance, gaussian_stats
from genforge.metrics.recon import psnr_per_image, ssim_per_image
from genforge.models.conditions import Condition, label_classes
from genforge.sampling.inpaint import inpaint_images
from genforge.sampling.masks import builtin_mask
from genforge.sampling.synth import balanced

APP_METRICS = ("inpaint", "upscale", "cas", "augment")


def _unit(x: Tensor) -> Tensor:
    return x.float() / 255


def _accuracy(ev: ImageEval, x: Tensor, y: Tensor | None) -> float | None:
    if y is None:
        return None
    _, logits = ev.evaluator(x)
    return float((logits.argmax(1) == y).double().mean())


def _app_protocol(ev: ImageEval, ref_n: int, **params: Any) -> dict[str, Any]:
    e = ev.evaluator
    return dict(ev.base, n_reference=ref_n, extractor=e.id, extractor_sha256=e.sha256, feature_dim=e.dim,
                seed=ev.opts.seed, params=params)


def _add_scored(ev: ImageEval, prefix: str, out: Tensor, truth: Tensor, y: Tensor | None, region: Tensor | None,
                proto: dict[str, Any], *, fid: bool = False) -> None:
    """PSNR, SSIM (over ``region`` when given), evaluator accuracy and (``fid``) FID of ``out`` vs ``truth``."""
    a, b = _unit(out), _unit(truth)
    ev.add(f"{prefix}/psnr", float(psnr_per_image(a, b, region=region).mean()), proto)
    ssim = ssim_per_image(a, b, padding="reflect", region=region) if region is not None else ssim_per_image(a, b)
    ev.add(f"{prefix}/ssim", float(ssim.mean()), proto)
    acc = _accuracy(ev, out, y)
    if acc is not None:
        ev.add(f"{prefix}/accuracy", acc, proto)
    if fid and out.shape[0] < ev.evaluator.dim:
        ev.notes.append(f"{prefix}/fid: skipped ({out.shape[0]} images are fewer than the {ev.evaluator.dim}-d features)")
    elif fid:
        ref_f, ref_stats, _ = reference_features(ev.evaluator, ev.ref.x, _ref_meta(ev), cache_dir=ev.opts.cache_dir)
        gen_f, _ = ev.evaluator(out)
        ev.add(f"{prefix}/fid", frechet_distance(*gaussian_stats(gen_f), ref_stats.mu, ref_stats.sigma), proto)


def _ref_meta(ev: ImageEval) -> dict[str, Any]:
    o = ev.opts
    return {"dataset": ev.data_cfg.name, "image_size": ev.data.image_size, "channels": ev.data.channels,
            "split": o.reference, "n": ev.ref.n, "subsample_seed": o.reference_seed, "reference_sha256": ev.ref.sha256}


def inpaint_stage(ev: ImageEval) -> None:
    model, opts = ev.model, ev.opts
    if "inpaint" not in model.capabilities():
        raise EvalError("metric 'inpaint' does not apply: the model cannot inpaint")
    sub = reference_subsample(ev.data, "test", opts.app_n, opts.reference_seed)
    x, y = sub.x, sub.y
    conditional = label_classes(model) > 0
    mode = opts.inpaint_labels if opts.inpaint_labels != "auto" else ("given" if conditional and y is not None else "none")
    if mode == "given" and (not conditional or y is None):
        raise EvalError("inpaint_labels=given needs a conditional model and a labelled test split")
    labels = y if mode == "given" else None
    inpaint_opts = model.parse_inpaint_options(opts.inpaint)
    mean = ev.data.train_x.float().mean(0).round().to(torch.uint8)  # [C, S, S] training-set mean image
    for spec in opts.masks:
        fill = builtin_mask(spec, ev.data.image_size, n=x.shape[0], seed=opts.seed)
        log(opts.progress, f"inpainting {x.shape[0]} test images, mask {spec} …")
        t0 = time.perf_counter()
        with ev.clock(f"inpaint_{spec}"):
            out = inpaint_images(model, x, fill, labels=labels, seed=opts.seed, batch_size=opts.batch_size,
                                 options=inpaint_opts)
        seconds = (time.perf_counter() - t0) / x.shape[0]
        if not torch.equal(out[~fill.expand_as(out)], x[~fill.expand_as(x)]):
            raise AssertionError("inpainting changed known pixels")  # guaranteed by inpaint_images
        proto = _app_protocol(ev, x.shape[0], mask=spec, labels=mode, method=model.inpaint_method,
                              options=vars(inpaint_opts), region="masked pixels; SSIM map with reflect padding")
        _add_scored(ev, f"inpaint/{spec}", out, x, y, fill, proto, fid=True)
        ev.add(f"inpaint/{spec}/seconds_per_image", seconds, proto)
        mean_fill = torch.where(fill, mean.expand_as(x), x)
        base = dict(proto, params=dict(proto["params"], method="training-set mean image", options={}))
        _add_scored(ev, f"inpaint/{spec}/meanfill", mean_fill, x, y, fill, base, fid=True)


def upscale_stage(ev: ImageEval) -> None:
    """Image-conditioned models: per source variant, test images made into sources, generated back and
    scored against the originals, beside the model's declared baseline."""
    from genforge.sampling.images import ImagePipeline

    model, opts = ev.model, ev.opts
    if "image" not in model.accepted_conditions():
        raise EvalError("metric 'upscale' does not apply: the model does not generate from a source image")
    pipe = ImagePipeline(model)
    sample_opts = model.parse_sample_options(opts.sample)
    sub = reference_subsample(ev.data, "test", opts.app_n, opts.reference_seed)
    x, y = sub.x, sub.y
    for variant in model.source_variants():
        source = model.make_source(x, variant)
        log(opts.progress, f"generating {x.shape[0]} test images from {variant} sources …")
        t0 = time.perf_counter()
        with ev.clock(f"upscale_{variant}"):
            out = pipe.generate(x.shape[0], condition=Condition(image=source), seed=opts.seed,
                                batch_size=opts.batch_size, options=sample_opts,
                                on_batch=ticker(opts.progress, f"generated from {variant} sources"))
        seconds = (time.perf_counter() - t0) / x.shape[0]
        method, base = model.baseline(source)
        proto = _app_protocol(ev, x.shape[0], source=variant, options=vars(sample_opts))
        _add_scored(ev, f"upscale/{variant}", out, x, y, None, proto)
        ev.add(f"upscale/{variant}/seconds_per_image", seconds, proto)
        params = dict(proto["params"], method=method, options={})
        _add_scored(ev, f"upscale/{variant}/{method.split(' ')[0]}", base, x, y, None, dict(proto, params=params))


def _classifier(ev: ImageEval, x: Tensor, y: Tensor, steps: int | None = None) -> tuple[float, dict[str, Any]]:
    """Test accuracy of the evaluator recipe trained on (x, y), tested on the real test split."""
    cfg = EvaluatorTrainConfig(seed=ev.opts.seed, epochs=ev.opts.classifier_epochs)
    if steps is not None:
        cfg = EvaluatorTrainConfig(seed=ev.opts.seed, epochs=ev.opts.classifier_epochs, min_steps=steps, max_steps=steps)
    d = ImageData(name=ev.data.name, train_x=x, train_y=y, test_x=ev.data.test_x, test_y=ev.data.test_y,
                  classes=ev.data.classes)
    _, report = train_evaluator(d, cfg, progress=ev.opts.progress, name=f"{ev.data.name} (eval classifier)")
    return report["test_accuracy"], {"steps": report["steps"], "epochs": ev.opts.classifier_epochs,
                                     "classifier": "the evaluator architecture and recipe", "train_images": int(x.shape[0]),
                                     "test_images": int(ev.data.test_x.shape[0]), "classifier_seed": ev.opts.seed}


def _need_conditional(ev: ImageEval, metric: str) -> int:
    m = ev.model
    k = label_classes(m)
    if not k or ev.data.train_y is None:
        raise EvalError(f"metric {metric!r} needs a class-conditional model and a labelled dataset")
    if k != ev.data.num_classes:
        raise EvalError(f"metric {metric!r}: the model has {k} classes but the dataset {ev.data.num_classes}")
    return k


def _generated(ev: ImageEval, n: int, k: int) -> tuple[Tensor, Tensor]:
    """``n`` generated images with balanced labels (seeded): drawn once per evaluation and shared by the
    metrics that use them (CAS and the augmentation test)."""
    from genforge.sampling.images import ImagePipeline

    if (n, k) in ev.labelled:
        return ev.labelled[(n, k)]
    y = balanced(n, k, ev.opts.seed)
    pipe = ImagePipeline(ev.model)
    log(ev.opts.progress, f"generating {n} labelled images …")
    with ev.clock("generate_labelled"):
        x = pipe.generate(n, condition=y, seed=ev.opts.seed, batch_size=ev.opts.batch_size,
                          options=ev.model.parse_sample_options(ev.opts.sample),
                          on_batch=ticker(ev.opts.progress, "generated labelled"))
    ev.labelled[(n, k)] = (x, y)
    return x, y


def _base(ev: ImageEval, n_gen: int, **params: Any) -> dict[str, Any]:
    sample = ev.generation.get("sample_options")
    if sample:
        params["sample"] = sample
    return dict(ev.base, n_reference=int(ev.data.test_x.shape[0]), reference_split="test", reference_subsample="all",
                n_generated=n_gen, seed=ev.opts.seed, params=params)


def cas_stage(ev: ImageEval) -> None:
    k = _need_conditional(ev, "cas")
    n = ev.opts.cas_n
    log(ev.opts.progress, f"CAS: {n} generated images → classifier …")
    gx, gy = _generated(ev, n, k)
    acc, proto = _classifier(ev, gx, gy)
    ev.add("cas", acc, _base(ev, n, **proto, labels="balanced"))
    idx = shuffled_subset(ev.data.train_x.shape[0], min(n, ev.data.train_x.shape[0]), ev.opts.seed)
    real_acc, real_proto = _classifier(ev, ev.data.train_x[idx], ev.data.train_y[idx])
    ev.add("cas_real", real_acc, _base(ev, 0, **real_proto, train_data=f"{len(idx)} real training images (seeded)"))


def augment_stage(ev: ImageEval) -> None:
    k = _need_conditional(ev, "augment")
    o = ev.opts
    n_train = ev.data.train_x.shape[0]
    m = max(k, round(o.augment_fraction * n_train))
    idx = shuffled_subset(n_train, m, o.seed)
    sx, sy = ev.data.train_x[idx], ev.data.train_y[idx]
    gx, gy = _generated(ev, o.augment_n, k)
    steps = EvaluatorTrainConfig(epochs=o.classifier_epochs).steps_for(m + o.augment_n)  # same for both
    log(o.progress, f"augmentation: {m} real images alone vs + {o.augment_n} generated, {steps} steps each …")
    base_acc, _ = _classifier(ev, sx, sy, steps)
    aug_acc, proto = _classifier(ev, torch.cat([sx, gx]), torch.cat([sy, gy]), steps)
    params = dict(proto, real_subset=f"{m} of {n_train} training images ({o.augment_fraction:g}, seeded shuffle)",
                  synthetic=o.augment_n)
    ev.add("augment/baseline", base_acc, _base(ev, 0, **params))
    ev.add("augment/accuracy", aug_acc, _base(ev, o.augment_n, **params))
    ev.add("augment/gain", aug_acc - base_acc, _base(ev, o.augment_n, **params))


APP_STAGES: dict[str, Callable[[ImageEval], None]] = {"inpaint": inpaint_stage, "upscale": upscale_stage,
                                                      "cas": cas_stage, "augment": augment_stage}


def run_app_stages(ev: ImageEval) -> None:
    for metric, stage in APP_STAGES.items():
        if metric in ev.metrics:
            stage(ev)
