"""The ``align`` stage of an image evaluation: how well a text-to-image model's images follow their prompts.

The images were drawn from the reference images' captions, in order (see ``images._generated``). In the
features of the data set's contrastive evaluator (:func:`~genforge.evaluation.features.contrastive.contrastive_for`:
trained by genforge on the training split, cached, never the model under test), at most
:data:`~genforge.evaluation.features.contrastive.ALIGN_SIDE` px:

- ``clip_score``: 100 × the mean cosine of each image and its caption (Hessel et al. 2021, without their
  2.5 rescale and clip at 0);
- ``r_precision``: the top-1 rate of each image's caption among ``k`` (100) distinct reference captions, the
  true one and k - 1 others; ``r_precision_real`` is the same for the real reference images (the ceiling),
  ``r_precision_chance`` = 1/k (the floor), both unranked;
- ``category_accuracy`` (labelled data sets): the data set's classifier evaluator's accuracy on the images,
  against the category of the caption each was drawn from.
"""

from __future__ import annotations

from genforge.data.transforms import resize_center_crop
from genforge.evaluation.features.contrastive import contrastive_for
from genforge.evaluation.image_stages import ImageEval, classifier_logits
from genforge.evaluation.progress import log
from genforge.metrics.text_image import clip_score

__all__ = ["ALIGN_K", "alignment_stage"]

ALIGN_K = 100  # R-precision candidates (fewer when the reference has fewer distinct captions)
EVALUATOR_STEPS = 1500  # training steps of the contrastive evaluator


def alignment_stage(ev: ImageEval) -> None:
    ref, opts = ev.ref, ev.opts
    if ref.text is None or not ev.generation.get("conditioning", "").startswith("the captions"):
        ev.notes.append("align: skipped (the images were not drawn from the reference captions)")
        return
    captions = [ref.text[i % ref.n] for i in range(ev.n_gen)]
    with ev.clock("contrastive_evaluator"):
        net, report, sha = contrastive_for(ev.data, opts.cache_dir or _cache(), steps=EVALUATOR_STEPS, seed=0,
                                           progress=opts.progress)
    side = net.config.image_size
    k = min(ALIGN_K, len(set(ref.text)))
    log(opts.progress, f"text–image alignment of {ev.n_gen} images in the contrastive evaluator ({side} px) …")
    with ev.clock("align"):
        images = resize_center_crop(ev.gen_x, side)
        clip = clip_score(net.embed_images(images), net.embed_texts(captions))
        rp = net.r_precision(images, captions, ref.text, k=k, seed=opts.seed)
        real = net.r_precision(resize_center_crop(ref.x, side), list(ref.text), ref.text, k=k, seed=opts.seed)
    proto = dict(ev.base, extractor=f"contrastive:{ev.data_cfg.name}", extractor_sha256=sha,
                 feature_dim=net.config.width, n_generated=ev.n_gen, seed=opts.seed,
                 params=ev.params(side=side, evaluator_steps=report.get("steps"), evaluator_seed=0))
    ev.add("clip_score", clip, proto)
    ranked = dict(proto, params={**proto["params"], "k": k})
    ev.add("r_precision", rp, ranked)
    ev.add("r_precision_real", real, ranked)
    ev.add("r_precision_chance", 1.0 / k, ranked)
    if ev.evaluator is not None and ref.y is not None:
        labels = ref.y[[i % ref.n for i in range(ev.n_gen)]]
        acc = (classifier_logits(ev).argmax(1).cpu() == labels).float().mean()
        ev.add("category_accuracy", float(acc), ev.classifier_protocol())


def _cache():
    from genforge.data.cache import default_cache_dir

    return default_cache_dir()
