"""Reference images of an evaluation: a seeded subsample of a split, its digest, and its cached features.

Reference features are cached in ``<cache>/eval-reference/`` keyed by dataset,
split, N, subsample seed, reference sha256 and extractor sha256, so repeated
evaluations and the training proxy FID extract them once.
"""

from __future__ import annotations

import hashlib
import json
import warnings as pywarnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from genforge.data import ImageData, default_cache_dir
from genforge.data.transforms import shuffled_subset
from genforge.evaluation.features import Extractor
from genforge.io import atomic_path
from genforge.metrics.fid import GaussianStats, gaussian_stats, load_stats, save_stats

__all__ = ["REFERENCE_DIR", "REFERENCE_FORMAT", "Reference", "balanced_labels", "images_sha256", "reference_features",
           "reference_subsample"]

REFERENCE_FORMAT = "genforge-eval-reference/1"
REFERENCE_DIR = "eval-reference"


@dataclass
class Reference:
    """A seeded subsample of one split: images uint8 [N, C, S, S], labels [N] or None, and their digest;
    ``text`` their captions when the data set has them."""

    x: Tensor
    y: Tensor | None
    split: str
    n_split: int
    seed: int
    sha256: str
    text: list[str] | None = None

    @property
    def n(self) -> int:
        return int(self.x.shape[0])


def reference_subsample(data: ImageData, split: str, n: int, seed: int) -> Reference:
    """``min(n, split size)`` images of ``split`` (``test`` or ``train``) chosen by a permutation seeded with
    ``seed``: never the first N (MNIST's test set is ordered by writer)."""
    x_all, y_all = (data.test_x, data.test_y) if split == "test" else (data.train_x, data.train_y)
    t_all = data.test_text if split == "test" else data.train_text
    n_split = int(x_all.shape[0])
    idx = shuffled_subset(n_split, min(n, n_split), seed)
    x = x_all.index_select(0, idx).contiguous()
    y = None if y_all is None else y_all.index_select(0, idx)
    text = None if t_all is None else [t_all[i] for i in idx.tolist()]
    return Reference(x, y, split, n_split, seed, images_sha256(x), text)


def images_sha256(x: Tensor) -> str:
    """sha256 of uint8 images: a JSON header (shape, dtype) then the raw bytes; the one scheme for image sets."""
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
