"""MNIST-format datasets (``mnist``, ``fashion-mnist``): four IDX gz files each.

Files come from ``data.data_dir`` when set (``--data-dir``; ``.gz`` or
uncompressed), else from ``<cache>/<dataset>/``, where missing files are
downloaded from the dataset's mirrors. Every file is verified against the
dataset's known checksum: in the cache always; in ``data_dir`` unless
``data.verify`` is false (``--no-verify``), so that e.g. MNIST's files given
for ``fashion-mnist`` are refused, naming the dataset they belong to (see
:func:`genforge.data.download.verify_local_file` for uncompressed copies).
Each file is hashed at most once per process.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from genforge.config import DataConfig

from .download import RemoteFile, download_file, verify_file, verify_local_file
from .errors import DataError
from .idx import read_idx_images, read_idx_labels
from .imagedata import ImageData

if TYPE_CHECKING:
    from .registry import DatasetInfo

__all__ = ["load_idx_dataset", "find_local_files", "verify_local_files", "cached_files"]

# Role → standard file name; the same four names for every MNIST-format dataset.
TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"
FILE_NAMES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)


def _accepted_names(name: str) -> list[str]:
    """``x-idx3-ubyte.gz`` may also be given as ``x-idx3-ubyte`` or ``x.idx3-ubyte`` (the Windows-unzipped form)."""
    plain = name.removesuffix(".gz")
    dotted = plain.replace("-idx", ".idx")
    return [name, plain, dotted, dotted + ".gz"]


def find_local_files(folder: Path, names: tuple[str, ...] = FILE_NAMES) -> dict[str, Path]:
    """Locate the files of a ``--data-dir`` folder.

    Returns:
        standard name → existing path.

    Raises:
        DataError: the folder is missing, or files are; names each missing file and the folder.
    """
    if not folder.is_dir():
        raise DataError(f"data_dir {folder} is not a folder; pass --data-dir DIR holding {', '.join(names)}")
    found, missing = {}, []
    for name in names:
        path = next((folder / n for n in _accepted_names(name) if (folder / n).is_file()), None)
        if path is None:
            missing.append(name)
        else:
            found[name] = path
    if missing:
        raise DataError(f"data_dir {folder} lacks {', '.join(missing)} (uncompressed copies without .gz are "
                        f"accepted too); put the file(s) there or drop --data-dir to download them")
    return found


def verify_local_files(info: DatasetInfo, paths: dict[str, Path]) -> None:
    """Check ``data_dir`` files (standard name → path) against ``info``'s checksums (:func:`verify_local_file`).

    Raises:
        DataError: a file is not ``info``'s; names the dataset it belongs to when it is a known file.
    """
    from .registry import known_files  # the registry imports this module

    known = known_files()
    for spec in info.files:
        if spec.name in paths:
            verify_local_file(paths[spec.name], spec, info.name, known)


def cached_files(info: DatasetInfo, cache_dir: Path) -> dict[str, Path]:
    """Standard name → path of the files already in ``<cache_dir>/<dataset>/`` (unverified)."""
    folder = cache_dir / info.name
    return {f.name: folder / f.name for f in info.files if (folder / f.name).is_file()}


def _manual_hint(info: DatasetInfo, folder: Path) -> str:
    names = ", ".join(f.name for f in info.files)
    return (f"Download them by hand ({', '.join(info.mirrors)}) and put {names} into {folder}, "
            f"or pass --data-dir DIR with a folder that holds them.")


def _cache_files(info: DatasetInfo, cache_dir: Path, download: bool, progress: bool) -> dict[str, Path]:
    """The verified cache paths of ``info.files``, downloading the missing ones."""
    folder = cache_dir / info.name
    paths: dict[str, Path] = {}
    missing: list[RemoteFile] = []
    for spec in info.files:
        path = folder / spec.name
        if path.is_file():
            verify_file(path, spec)
            paths[spec.name] = path
        else:
            missing.append(spec)
    if missing and not download:
        raise DataError(f"dataset {info.name!r} is not in the cache: {folder} lacks "
                        f"{', '.join(s.name for s in missing)} and downloads are off. {_manual_hint(info, folder)}")
    for spec in missing:
        paths[spec.name] = download_file(spec, folder, info.mirrors, progress=progress,
                                         hint=_manual_hint(info, folder))
    return paths


def _pair(images: Path, labels: Path, num_classes: int, size: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Parse one images/labels pair → uint8 ``[N, 1, H, W]``, int64 ``[N]``."""
    x = read_idx_images(images)
    y = read_idx_labels(labels)
    if len(x) != len(y):
        raise DataError(f"{images} holds {len(x)} images but {labels} holds {len(y)} labels; "
                        f"they must come from the same release")
    if size is not None and x.shape[1:] != (size, size):
        raise DataError(f"{images} holds {x.shape[1]}x{x.shape[2]} images, expected {size}x{size}")
    if len(y) and int(y.max()) >= num_classes:
        raise DataError(f"{labels} holds label {int(y.max())}, expected 0..{num_classes - 1}")
    return torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y).to(torch.int64)


def load_idx_dataset(cfg: DataConfig, info: DatasetInfo, cache_dir: Path, download: bool = True,
                     progress: bool = True) -> ImageData:
    """Load an MNIST-format dataset at its native size (1×28×28 for both built-ins).

    Args:
        cfg: the ``data`` section; only ``data_dir`` and ``verify`` are used here.
        info: registry entry (file names, checksums, mirrors, classes).
        cache_dir: root of the download cache.
        download: fetch missing files; when False a missing file is a DataError.
        progress: print download progress on stderr.
    """
    if cfg.data_dir is not None:
        paths = find_local_files(Path(cfg.data_dir).expanduser(), tuple(f.name for f in info.files))
        if cfg.verify:
            verify_local_files(info, paths)
    else:
        paths = _cache_files(info, cache_dir, download, progress)
    k = len(info.classes)
    train_x, train_y = _pair(paths[TRAIN_IMAGES], paths[TRAIN_LABELS], k, info.image_size)
    test_x, test_y = _pair(paths[TEST_IMAGES], paths[TEST_LABELS], k, info.image_size)
    return ImageData(name=cfg.name, train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y,
                     classes=list(info.classes))
