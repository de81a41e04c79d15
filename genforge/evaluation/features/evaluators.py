"""Evaluator classifiers: build, ship, find, verify and cache them.

An evaluator is an :class:`~genforge.evaluation.features.classifier.EvaluatorClassifier`
trained by genforge, with a fixed seed, on a dataset's training split. The image
metrics take its pre-activation features (FID, KID, PRDC) and logits
(classifier Inception Score, mode coverage), so two people get the same numbers
exactly when they use the same weights file, named by its sha256.

Where evaluators live (searched in this order by :func:`load_evaluator`):

1. ``genforge/assets/evaluators/``: shipped with the package (``digits``, ``mnist``);
2. ``<cache>/evaluators/``: built by the user (``genforge evaluators build NAME``)
   or trained on demand for ``imagefolder:PATH`` data by :func:`evaluator_for`;
   ``<cache>`` is :func:`genforge.data.cache.default_cache_dir`.

Each folder holds ``<key>.safetensors`` files (fp32 weights; the network config
in the metadata, so loading needs no pickle) and one ``index.json`` mapping
``key`` to the file's sha256, the test accuracy, the training recipe and the
versions that built it. Loading checks the sha256 first.

Training (the recipe, the presets, reproducibility) is
:mod:`genforge.evaluation.features.evaluator_training`.

Shipped: ``digits`` (98.9% on its 180 held-out images, about 15 s to build) and
``mnist`` (99.38% on the official 10k test images, about 3 minutes on one core).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from genforge import __version__
from genforge.config import DataConfig, from_dict, to_dict
from genforge.data import DATASETS, ImageData, default_cache_dir, load_images
from genforge.data.imagefolder import PREFIX as IMAGEFOLDER
from genforge.evaluation.features.classifier import ClassifierConfig, EvaluatorClassifier
from genforge.evaluation.features.evaluator_training import (
    PRESETS,
    RECIPE_VERSION,
    EvaluatorError,
    EvaluatorTrainConfig,
    require_labels,
    train_evaluator,
)
from genforge.evaluation.progress import log
from genforge.io import atomic_path, atomic_write_text

__all__ = [
    "ASSETS_DIR",
    "PRESETS",
    "EvaluatorError",
    "EvaluatorInfo",
    "EvaluatorTrainConfig",
    "build_evaluator",
    "evaluator_for",
    "list_evaluators",
    "load_evaluator",
    "train_evaluator",
]

ASSETS_DIR = Path(__file__).resolve().parents[2] / "assets" / "evaluators"
INDEX_FILE = "index.json"
INDEX_FORMAT = 1
METADATA_KEY = "genforge_evaluator"  # the one safetensors metadata entry: canonical JSON of dataset + network


@dataclass(frozen=True)
class EvaluatorInfo:
    """What identifies an evaluator in a metric record.

    Attributes:
        id: ``"evaluator:<key>"``, e.g. ``"evaluator:mnist"``.
        dataset: the dataset it was trained on (``mnist``, ``imagefolder:PATH`` …).
        sha256: of the weights file (hex).
        feature_dim: F, width of the feature vectors.
        num_classes: K, width of the logits.
        channels, image_size: the input shape ``[C, S, S]`` it takes.
        test_accuracy: top-1 accuracy on the dataset's test split, in [0, 1].
        test_examples: images of that test split (0 when the index does not say).
        path: the weights file.
        source: ``"shipped"`` (inside the package) or ``"cache"``.
    """

    id: str
    dataset: str
    sha256: str
    feature_dim: int
    num_classes: int
    channels: int
    image_size: int
    test_accuracy: float
    path: Path
    source: str
    test_examples: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain data for a metric's protocol record (the path is omitted: it differs per machine)."""
        d = asdict(self)
        del d["path"]
        return d


# --------------------------------------------------------------------------- files


def weights_bytes(net: EvaluatorClassifier, dataset: str) -> bytes:
    """Canonical safetensors bytes: fp32 contiguous tensors and one metadata entry (sorted JSON)."""
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in net.state_dict().items()}
    meta = json.dumps({"format": INDEX_FORMAT, "dataset": dataset, "network": to_dict(net.config)}, sort_keys=True)
    return st_save(state, metadata={METADATA_KEY: meta})


def _read_index(folder: Path) -> dict[str, dict[str, Any]]:
    path = folder / INDEX_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return dict(data["evaluators"])
    except (ValueError, KeyError, TypeError) as e:
        raise EvaluatorError(f"{path} is not a valid evaluator index ({e}); delete it and rebuild the "
                             f"evaluators listed there") from None


def _write(folder: Path, key: str, blob: bytes, entry: dict[str, Any]) -> Path:
    """Write ``<key>.safetensors`` and merge ``entry`` into ``index.json``, each atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{key}.safetensors"
    with atomic_path(path) as tmp:
        tmp.write_bytes(blob)
    index = _read_index(folder)
    index[key] = entry
    text = json.dumps({"format": INDEX_FORMAT, "evaluators": dict(sorted(index.items()))}, indent=2, sort_keys=True)
    atomic_write_text(folder / INDEX_FILE, text + "\n")
    return path


def _entry(key: str, dataset: str, net: EvaluatorClassifier, blob: bytes, report: dict[str, Any],
           config: EvaluatorTrainConfig, data_sha256: str) -> dict[str, Any]:
    cfg = net.config
    return {
        "id": f"evaluator:{key}", "dataset": dataset, "file": f"{key}.safetensors",
        "sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob), "parameters": net.num_parameters,
        "feature_dim": cfg.feature_dim, "num_classes": cfg.num_classes, "channels": cfg.channels,
        "image_size": cfg.image_size, "test_accuracy": round(report["test_accuracy"], 6),
        "test_examples": report["test_examples"], "train_examples": report["train_examples"],
        "feature_scale": report["feature_scale"], "data_sha256": data_sha256, "network": to_dict(cfg),
        "training": {**to_dict(config), "steps": report["steps"], "recipe_version": RECIPE_VERSION},
        "build_seconds": report["seconds"], "genforge_version": __version__, "torch_version": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def _cache_folder(cache_dir: Path | str | None) -> Path:
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / "evaluators"


def _folders(cache_dir: Path | str | None) -> list[tuple[str, Path]]:
    return [("shipped", ASSETS_DIR), ("cache", _cache_folder(cache_dir))]


def _open(source: str, folder: Path, key: str, entry: dict[str, Any]) -> tuple[EvaluatorClassifier, EvaluatorInfo]:
    """Read, verify and build one indexed evaluator."""
    path = folder / entry.get("file", f"{key}.safetensors")
    if not path.is_file():
        raise EvaluatorError(f"evaluator {key!r} is listed in {folder / INDEX_FILE} but {path} is missing; "
                             f"rebuild it with `genforge evaluators build {entry.get('dataset', key)}`")
    blob = path.read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != entry.get("sha256"):
        fix = ("reinstall genforge" if source == "shipped"
               else f"delete it and rebuild with `genforge evaluators build {entry.get('dataset', key)}`")
        raise EvaluatorError(f"evaluator file {path} has sha256 {digest} but {folder / INDEX_FILE} expects "
                             f"{entry.get('sha256')}: the file is corrupt or was modified; {fix}")
    try:
        meta = json.loads(_metadata(blob)[METADATA_KEY])
        net = EvaluatorClassifier(from_dict(ClassifierConfig, meta["network"]))
        net.load_state_dict(st_load(blob), strict=True)
    except (KeyError, ValueError, TypeError, RuntimeError) as e:
        raise EvaluatorError(f"evaluator file {path} is not a genforge evaluator of this version ({e})") from None
    net.eval().requires_grad_(False)
    net.to(memory_format=torch.channels_last)
    cfg = net.config
    info = EvaluatorInfo(id=f"evaluator:{key}", dataset=str(meta["dataset"]), sha256=digest,
                         feature_dim=cfg.feature_dim, num_classes=cfg.num_classes, channels=cfg.channels,
                         image_size=cfg.image_size, test_accuracy=float(entry.get("test_accuracy", float("nan"))),
                         path=path, source=source, test_examples=int(entry.get("test_examples", 0)))
    return net, info


def _metadata(blob: bytes) -> dict[str, str]:
    """The ``__metadata__`` of safetensors bytes (header only; no tensors are read)."""
    if len(blob) < 8:
        raise ValueError("too short for a safetensors file")
    n = int.from_bytes(blob[:8], "little")
    if n > len(blob) - 8:
        raise ValueError("truncated safetensors header")
    return dict(json.loads(blob[8:8 + n]).get("__metadata__") or {})


def _key(name: str) -> str:
    return name.removeprefix("evaluator:")


def _missing(name: str, cache_dir: Path | str | None) -> EvaluatorError:
    where = f"{ASSETS_DIR} or {_cache_folder(cache_dir)}"
    if name in DATASETS:
        return EvaluatorError(f"no evaluator for dataset {name!r} is shipped or cached (looked in {where}); build "
                              f"one with `genforge evaluators build {name} --data-dir DIR` (DIR holding the "
                              f"dataset's files), or use --features inception")
    known = sorted({k for _, folder in _folders(cache_dir) for k in _read_index(folder)})
    return EvaluatorError(f"no evaluator named {name!r} (looked in {where}; known: {', '.join(known) or 'none'})")


def load_evaluator(name: str, *, cache_dir: Path | str | None = None) -> tuple[EvaluatorClassifier, EvaluatorInfo]:
    """Load a shipped or cached evaluator by dataset name (``"mnist"``) or id (``"evaluator:mnist"``).

    Shipped evaluators win over cached ones of the same name. The file's sha256
    is checked against its ``index.json`` before anything is loaded.

    Args:
        name: dataset name, evaluator key (``imagefolder-…``) or id.
        cache_dir: cache root; default :func:`default_cache_dir` (evaluators in ``<root>/evaluators``).

    Returns:
        ``(net, info)``: net in eval mode with gradients off, on the CPU.

    Raises:
        EvaluatorError: none found (naming ``genforge evaluators build NAME --data-dir DIR``
            for a built-in dataset), a missing file, or a sha256 mismatch.
    """
    key = _key(name)
    for source, folder in _folders(cache_dir):
        entry = _read_index(folder).get(key)
        if entry is not None:
            return _open(source, folder, key, entry)
    raise _missing(key, cache_dir)


def list_evaluators(*, cache_dir: Path | str | None = None) -> list[dict[str, Any]]:
    """Every indexed evaluator (shipped first), as its index entry plus ``source``; files are not verified."""
    return [{**entry, "source": source} for source, folder in _folders(cache_dir)
            for _, entry in sorted(_read_index(folder).items())]


# --------------------------------------------------------------------------- building


def data_sha256(data: ImageData) -> str:
    """sha256 of the training images and labels (shape, classes and bytes)."""
    h = hashlib.sha256()
    h.update(json.dumps({"shape": list(data.train_x.shape), "classes": data.classes}).encode())
    h.update(data.train_x.contiguous().numpy().tobytes())
    if data.train_y is not None:
        h.update(data.train_y.contiguous().numpy().tobytes())
    return h.hexdigest()


def build_evaluator(dataset: str, *, data_dir: str | Path | None = None, out: str | Path | None = None,
                    config: EvaluatorTrainConfig | None = None, cache_dir: Path | str | None = None,
                    progress: bool = True, verify: bool = True) -> EvaluatorInfo:
    """Train the evaluator of a built-in labelled dataset and write it; ``genforge evaluators build NAME``.

    Args:
        dataset: ``digits``, ``mnist`` or ``fashion-mnist``.
        data_dir: folder with the dataset's files (else the download cache is used).
        out: folder to write ``<dataset>.safetensors`` and ``index.json`` into;
            default ``<cache>/evaluators`` (where :func:`load_evaluator` finds it).
            genforge's own assets are built with ``out=ASSETS_DIR``.
        config: the recipe; default the dataset's preset in ``PRESETS``.
        cache_dir: cache root for the default ``out`` and for downloads.
        progress: print progress to stderr.
        verify: check ``data_dir`` files against the dataset's checksums (``--no-verify``: your own variant).

    Returns:
        The :class:`EvaluatorInfo` of the written file (test accuracy on the official test split).
    """
    info = DATASETS.get(dataset)
    if info is None or not info.labelled:
        known = ", ".join(n for n, i in DATASETS.items() if i.labelled)
        raise EvaluatorError(f"cannot build an evaluator for {dataset!r}: built-in labelled datasets are {known}; "
                             f"evaluators for imagefolder:PATH data are trained automatically when evaluating")
    config = config or PRESETS.get(dataset, EvaluatorTrainConfig())
    data = load_images(DataConfig(name=dataset, data_dir=None if data_dir is None else str(data_dir), verify=verify),
                       cache_dir=None if cache_dir is None else Path(cache_dir))
    folder = Path(out).expanduser() if out is not None else _cache_folder(cache_dir)
    return _train_builtin(dataset, data, config, folder, progress)


def _train_builtin(dataset: str, data: ImageData, config: EvaluatorTrainConfig, folder: Path,
                   progress: bool) -> EvaluatorInfo:
    """Train the evaluator of built-in ``dataset`` on its loaded ``data`` and write it into ``folder``."""
    net, report = train_evaluator(data, config, progress=progress, name=dataset)
    blob = weights_bytes(net, dataset)
    path = _write(folder, dataset, blob, _entry(dataset, dataset, net, blob, report, config, data_sha256(data)))
    log(progress, f"wrote {path} ({len(blob) / 1e6:.2f} MB, sha256 {hashlib.sha256(blob).hexdigest()[:16]}…)",
        prefix="")
    source = "shipped" if folder.resolve() == ASSETS_DIR else "cache"
    return _open(source, folder, dataset, _read_index(folder)[dataset])[1]


def evaluator_for(data: ImageData, data_cfg: DataConfig, *, cache_dir: Path | str | None = None,
                  config: EvaluatorTrainConfig | None = None,
                  progress: bool = False) -> tuple[EvaluatorClassifier, EvaluatorInfo]:
    """The evaluator to measure images of ``data`` with.

    A built-in dataset uses its shipped (or user-built) evaluator, whatever
    ``image_size``/``channels`` the run chose: compare ``info.image_size`` and
    ``info.channels`` with the images and convert them (``genforge.data.transforms``)
    before :meth:`EvaluatorClassifier.extract`. Any other labelled data
    (``imagefolder:PATH`` with class sub-folders) gets one trained on demand with
    ``config`` (default :class:`EvaluatorTrainConfig`: fewer steps for small data),
    cached under a key hashing the training images, labels and the recipe, so the
    next call with the same data only loads it.

    Raises:
        EvaluatorError: unlabelled data (features need labels; suggests ``--features inception``),
            or a built-in dataset without a shipped or built evaluator.
    """
    name = data_cfg.name
    if name in DATASETS:
        try:
            return load_evaluator(name, cache_dir=cache_dir)
        except EvaluatorError:
            if not DATASETS[name].labelled:
                raise
        folder = _cache_folder(cache_dir)
        log(True, f"no evaluator for {name} yet: training one with its preset recipe into {folder} (once; "
                  f"`genforge evaluators build {name}` does it ahead of time)", prefix="")
        _train_builtin(name, data, PRESETS.get(name, EvaluatorTrainConfig()), folder, progress)
        return load_evaluator(name, cache_dir=cache_dir)
    require_labels(data)
    config = config or EvaluatorTrainConfig()
    network = ClassifierConfig(channels=data.channels, image_size=data.image_size, num_classes=data.num_classes)
    if data.image_size < 8:
        raise EvaluatorError(f"dataset {name!r} has {data.image_size}x{data.image_size} images; evaluator "
                             f"classifiers need at least 8x8 (set data.image_size)")
    data_hash = data_sha256(data)
    recipe = json.dumps({"recipe_version": RECIPE_VERSION, "network": to_dict(network),
                         "training": to_dict(config), "data": data_hash}, sort_keys=True)
    prefix = IMAGEFOLDER if name.startswith(IMAGEFOLDER) else "data"
    key = f"{prefix}-{hashlib.sha256(recipe.encode()).hexdigest()[:16]}"
    folder = _cache_folder(cache_dir)
    entry = _read_index(folder).get(key)
    if entry is not None:
        return _open("cache", folder, key, entry)
    log(progress, f"training an evaluator classifier for {name} ({data.train_x.shape[0]} images, "
                  f"{data.num_classes} classes); cached as {key}", prefix="")
    net, report = train_evaluator(replace(data, name=name), config, network=network, progress=progress)
    blob = weights_bytes(net, name)
    _write(folder, key, blob, _entry(key, name, net, blob, report, config, data_hash))
    return _open("cache", folder, key, _read_index(folder)[key])
