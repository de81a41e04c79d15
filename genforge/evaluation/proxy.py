"""The training-time evaluation hook of image runs: a cheap FID against cached test-split statistics."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

from genforge.config import DataConfig
from genforge.data import ImageData
from genforge.evaluation.features import evaluator_extractor
from genforge.evaluation.features.evaluators import EvaluatorError
from genforge.evaluation.reference import balanced_labels, reference_features, reference_subsample
from genforge.metrics.fid import frechet_distance, gaussian_stats
from genforge.metrics.guards import check_sample_sizes
from genforge.models.base import GenerativeModel
from genforge.sampling.images import ImagePipeline

__all__ = ["PROXY_REFERENCE_N", "proxy_fid_hook"]

PROXY_REFERENCE_N = 10_000  # reference images for the training proxy FID (fewer when the test split is smaller)


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
    ref = reference_subsample(data, "test", PROXY_REFERENCE_N, 0)
    n_ref = ref.n
    meta = {"dataset": data_cfg.name, "image_size": data.image_size, "channels": data.channels, "split": "test",
            "n": n_ref, "subsample_seed": 0, "reference_sha256": ref.sha256}
    _, stats, _ = reference_features(extractor, ref.x, meta, cache_dir=cache_dir)
    for w in check_sample_sizes(n, n_ref, extractor.dim, kid_subset_size=None, allow_small=True)[1:]:
        print(f"genforge: proxy FID: {w}", file=sys.stderr, flush=True)
    key = f"eval/fid@{n}"
    extractor_tag = f"{extractor.id}@{extractor.sha256[:12]}"  # logged beside the value: which features it used

    def evaluate(model: GenerativeModel, step: int) -> dict[str, Any]:
        pipe = ImagePipeline(model)
        k = pipe.num_classes
        labels = balanced_labels(ref.y if data.num_classes == k else None, n, k, seed)[0] if k else None
        images = pipe.generate(n, condition=labels, seed=seed, batch_size=batch_size)
        feats, _ = extractor(images)
        fid_value = frechet_distance(*gaussian_stats(feats), stats.mu, stats.sigma)
        return {key: fid_value, "eval/fid_extractor": extractor_tag}

    return evaluate
