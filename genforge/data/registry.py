"""The dataset registry and :func:`load_images`, the one entry point for image data.

``DATASETS`` maps each built-in image dataset to a :class:`DatasetInfo`; user
folders are ``imagefolder:PATH``. :func:`load_images` dispatches on
``data.name``, then applies the options every dataset shares (size, channels,
``max_train``). Text corpora are listed in ``TEXT_DATASETS`` (user files:
``text:PATH``) and loaded by :func:`genforge.data.text.load_text`.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from genforge.config import DataConfig, did_you_mean, parse_colour

from .cache import default_cache_dir
from .digits import load_digits
from .download import RemoteFile
from .emoji import CATEGORIES as EMOJI_CATEGORIES
from .emoji import FILES as EMOJI_FILES
from .emoji import MIRRORS as EMOJI_MIRRORS
from .emoji import NAMES as EMOJI_NAMES
from .emoji import VENDORS as EMOJI_VENDORS
from .emoji import STYLES as EMOJI_STYLES
from .emoji import load_emoji, load_emoji_styles
from .errors import DataError
from .imagedata import ImageData
from .imagefolder import PREFIX as IMAGEFOLDER
from .imagefolder import load_imagefolder
from .mnist import cached_files, load_idx_dataset
from .transforms import convert_channels, resize_center_crop, shuffled_subset

__all__ = ["DatasetInfo", "DATASETS", "TextDatasetInfo", "TEXT_DATASETS", "TEXT_PREFIX", "is_text_dataset",
           "unknown_dataset", "known_files", "load_images", "list_datasets"]

Loader = Callable[[DataConfig, "DatasetInfo", Path, bool], ImageData]


@dataclass(frozen=True)
class DatasetInfo:
    """A built-in dataset.

    Attributes:
        name: registry key (``data.name``) and cache sub-folder.
        description: one line for ``genforge datasets``.
        labelled: whether examples carry class labels.
        image_size: native square side in pixels.
        channels: native channels (1, 3 or 4).
        classes: label names in label order.
        files: what gets downloaded (with checksums); empty for bundled data.
        mirrors: base URLs tried in order for every file.
        bundled: ships with an installed dependency (never downloaded).
        loader: ``(cfg, info, cache_dir, download) -> ImageData`` at native size.
    """

    name: str
    description: str
    labelled: bool
    image_size: int
    channels: int
    classes: tuple[str, ...]
    loader: Loader = field(repr=False)
    files: tuple[RemoteFile, ...] = ()
    mirrors: tuple[str, ...] = ()
    bundled: bool = False

    def is_cached(self, cache_dir: Path) -> bool:
        """True when loading needs no download (bundled, or every file is in the cache)."""
        if self.bundled:
            return importlib.util.find_spec("sklearn") is not None
        return len(cached_files(self, cache_dir)) == len(self.files)


def _digits(cfg: DataConfig, info: DatasetInfo, cache_dir: Path, download: bool) -> ImageData:
    return load_digits(cfg)


# Checksums of the .gz files; sha256 is what gets verified, md5 is kept for reference.
# MNIST: md5s as published (torchvision), sha256s of the real files; raw_sha256 is the sha256
# of each real file's decompressed bytes (whose md5s equal the published ones), which checks
# uncompressed copies in --data-dir. Fashion-MNIST: md5s as published by Zalando/torchvision,
# sha256s as published by two independent loaders whose MNIST sha256s match the real files;
# no decompressed checksum is known, so its uncompressed copies are used unverified (with a
# warning) unless they are recognised as another dataset's.
_MNIST_FILES = (
    RemoteFile("train-images-idx3-ubyte.gz", md5="f68b3c2dcbeaaa9fbdd348bbdeb94873",
               sha256="440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
               raw_sha256="ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    RemoteFile("train-labels-idx1-ubyte.gz", md5="d53e105ee54ea40749a09fcbcd1e9432",
               sha256="3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
               raw_sha256="65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    RemoteFile("t10k-images-idx3-ubyte.gz", md5="9fb629c4189551a2d022fa330f9573f3",
               sha256="8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
               raw_sha256="0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    RemoteFile("t10k-labels-idx1-ubyte.gz", md5="ec29112dd5afa0611ce80d1b7f02629c",
               sha256="f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
               raw_sha256="ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
)
_FASHION_FILES = (
    # md5: Zalando's published table; sha256: of the same official files (they matched md5 and sha256 together)
    RemoteFile("train-images-idx3-ubyte.gz", md5="8d4fb7e6c68d591d4c3dfef9ec88bf0d",
               sha256="3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
    RemoteFile("train-labels-idx1-ubyte.gz", md5="25c81989df183df01b3e8a0aad5dffbe",
               sha256="a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
    RemoteFile("t10k-images-idx3-ubyte.gz", md5="bef4ecab320f06d8554ea6380940ec79",
               sha256="346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
    RemoteFile("t10k-labels-idx1-ubyte.gz", md5="bb300cfdad3c16e7a12a480ee83cd310",
               sha256="67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
)

DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            name="digits",
            description="8x8 handwritten digits bundled with scikit-learn (1797 images, offline)",
            labelled=True, image_size=8, channels=1, classes=tuple(str(d) for d in range(10)),
            loader=_digits, bundled=True,
        ),
        DatasetInfo(
            name="mnist",
            description="MNIST handwritten digits, 28x28 gray (60k train / 10k test)",
            labelled=True, image_size=28, channels=1, classes=tuple(str(d) for d in range(10)),
            loader=load_idx_dataset, files=_MNIST_FILES,
            mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",
                     "http://yann.lecun.com/exdb/mnist/",
                     "https://storage.googleapis.com/cvdf-datasets/mnist/"),
        ),
        DatasetInfo(
            name="fashion-mnist",
            description="Fashion-MNIST clothing images, 28x28 gray (60k train / 10k test)",
            labelled=True, image_size=28, channels=1,
            classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                     "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
            loader=load_idx_dataset, files=_FASHION_FILES,
            mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                     "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/"),
        ),
        DatasetInfo(
            name="emoji",
            description="Twemoji colour drawings, 64x64, captioned from their names (3781; test split by whole "
                        "emoji; CC-BY 4.0 Twemoji)",
            labelled=True, image_size=64, channels=3,
            classes=EMOJI_CATEGORIES, loader=load_emoji,
            files=EMOJI_FILES, mirrors=EMOJI_MIRRORS,  # registries; each file's URL adds its package's path
        ),
        DatasetInfo(
            name="emoji-google",
            description="Google's Noto Emoji colour drawings of the same emoji, 64x64, captioned from their names "
                        "(test split by whole emoji; Apache 2.0 Noto Emoji): a second style to check emoji defaults",
            labelled=True, image_size=64, channels=3,
            classes=EMOJI_CATEGORIES, loader=load_emoji,
            files=(EMOJI_VENDORS["emoji-google"].images, EMOJI_NAMES), mirrors=EMOJI_MIRRORS,
        ),
        DatasetInfo(
            name="emoji-styles",
            description="Twemoji and Noto Emoji drawings of the same emoji together, 64x64, labelled by vendor "
                        "(the style) and captioned from their names; one split by whole emoji for both, so held-out "
                        "drawings pair up across styles (CC-BY 4.0 Twemoji; Apache 2.0 Noto Emoji)",
            labelled=True, image_size=64, channels=3,
            classes=tuple(EMOJI_VENDORS[n].key for n in EMOJI_STYLES), loader=load_emoji_styles,
            files=(*(EMOJI_VENDORS[n].images for n in EMOJI_STYLES), EMOJI_NAMES), mirrors=EMOJI_MIRRORS,
        ),
    )
}


TEXT_PREFIX = "text"


@dataclass(frozen=True)
class TextDatasetInfo:
    """A built-in text corpus: one checksummed file, downloaded or read from ``data_dir``.

    Attributes:
        name: registry key (``data.name``) and cache sub-folder.
        description: one line for ``genforge datasets``.
        file: the file to download (name and sha256); also its name inside ``--data-dir``.
        mirrors: base URLs tried in order.
    """

    name: str
    description: str
    file: RemoteFile
    mirrors: tuple[str, ...]

    def is_cached(self, cache_dir: Path) -> bool:
        """True when the file is already in ``<cache_dir>/<name>/`` (unverified)."""
        return (cache_dir / self.name / self.file.name).is_file()


TEXT_DATASETS: dict[str, TextDatasetInfo] = {
    info.name: info
    for info in (
        TextDatasetInfo(
            name="tinyshakespeare",
            description="Tiny Shakespeare (char-rnn), 1.1 MB of plays; 90/10 contiguous train/val split",
            file=RemoteFile("input.txt",
                            sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"),
            mirrors=("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/",),
        ),
    )
}


def is_text_dataset(name: str) -> bool:
    """True for a built-in text corpus (``tinyshakespeare``) and for ``text:PATH``."""
    return name in TEXT_DATASETS or name.startswith(TEXT_PREFIX + ":")


def known_files() -> list[tuple[str, RemoteFile]]:
    """``(dataset, file)`` for every checksummed file of every built-in dataset, images then text.

    Used to say which dataset a wrong ``--data-dir`` file belongs to.
    """
    return [(info.name, f) for info in DATASETS.values() for f in info.files] + [
        (info.name, info.file) for info in TEXT_DATASETS.values()]


def unknown_dataset(name: str) -> DataError:
    """The error for a name that is no dataset, suggesting the closest built-in one."""
    names = sorted([*DATASETS, *TEXT_DATASETS])
    hint = did_you_mean(name.lower(), names, cutoff=0.6)
    return DataError(f"unknown dataset {name!r}{hint} (available: {', '.join(names)}, "
                     f"or imagefolder:PATH for a folder of your own images, or text:PATH for your own text "
                     f"files; see `genforge datasets`)")


def _finish(data: ImageData, cfg: DataConfig) -> ImageData:
    """Apply ``max_train``, ``image_size`` and ``channels`` to natively loaded data.

    The subset is taken first and channel conversion runs on whichever side of
    the resize has fewer channels (alpha is composited before resampling).
    """
    train_x, test_x, train_y, train_text = data.train_x, data.test_x, data.train_y, data.train_text
    if cfg.max_train is not None and cfg.max_train < train_x.shape[0]:
        keep = shuffled_subset(train_x.shape[0], cfg.max_train, cfg.split_seed)
        train_x = train_x.index_select(0, keep)
        train_y = None if train_y is None else train_y.index_select(0, keep)
        train_text = None if train_text is None else [train_text[i] for i in keep.tolist()]
    c, h, w = train_x.shape[1:]
    convert = cfg.channels is not None and cfg.channels != c
    background = parse_colour(cfg.background) if cfg.background else (0, 0, 0)
    if convert and cfg.channels < c:
        train_x, test_x = (convert_channels(t, cfg.channels, background) for t in (train_x, test_x))
    if cfg.image_size is not None and (h, w) != (cfg.image_size, cfg.image_size):
        train_x, test_x = (resize_center_crop(t, cfg.image_size) for t in (train_x, test_x))
    elif h != w:
        raise DataError(f"dataset {data.name!r} has {h}x{w} images; set data.image_size to make them square")
    if convert and cfg.channels > c:
        train_x, test_x = (convert_channels(t, cfg.channels, background) for t in (train_x, test_x))
    test_text = data.test_text
    if cfg.caption_template is not None and train_text is None:
        if train_y is None or data.test_y is None:
            raise DataError(f"data.caption_template makes captions from labels, but dataset {data.name!r} is "
                            f"unlabelled")
        train_text, test_text = ([cfg.caption_template.replace("{label}", data.classes[k]) for k in y.tolist()]
                                 for y in (train_y, data.test_y))
    return replace(data, train_x=train_x.contiguous(), test_x=test_x.contiguous(), train_y=train_y,
                   train_text=train_text, test_text=test_text)


def load_images(cfg: DataConfig, *, cache_dir: Path | None = None, download: bool = True) -> ImageData:
    """Load the image dataset described by ``cfg`` into memory.

    Args:
        cfg: ``data`` section: ``name`` (a key of :data:`DATASETS` or
            ``imagefolder:PATH``), ``data_dir`` (read the dataset's files from this
            folder instead of the cache), ``verify`` (check ``data_dir`` files
            against the dataset's known checksums), ``image_size`` (shorter side resized
            to it, antialiased, then centre-cropped square), ``channels`` (1/3/4;
            gray↔RGB↔RGBA, alpha composited over black when dropped),
            ``test_fraction``/``split_seed`` (split of datasets without an
            official one), ``max_train`` (first N training images after a
            shuffle seeded by ``split_seed``).
        cache_dir: download cache root; default :func:`default_cache_dir`.
        download: fetch missing files from the mirrors; False makes a missing
            file a DataError.

    Returns:
        ImageData with uint8 ``[N, C, S, S]`` train and ``[M, C, S, S]`` test images.

    Raises:
        DataError: unknown name, missing/corrupt files, a ``data_dir`` file that
            is not the dataset's (e.g. MNIST's under ``fashion-mnist``), failed
            downloads, a folder without readable images …; the message says what to do.
    """
    name = cfg.name
    if is_text_dataset(name):
        raise DataError(f"dataset {name!r} is text, not images; train a text model on it (e.g. a gpt recipe)")
    if name == IMAGEFOLDER or name.startswith(IMAGEFOLDER + ":"):
        data = load_imagefolder(cfg)
    else:
        info = DATASETS.get(name)
        if info is None:
            raise unknown_dataset(name)
        root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        data = info.loader(cfg, info, root, download)
    return _finish(data, cfg)


def list_datasets(cache_dir: Path | None = None) -> list[dict[str, Any]]:
    """One row per built-in dataset, images first, for ``genforge datasets``.

    Returns:
        dicts with ``name``, ``kind`` (``"image"`` or ``"text"``), ``description``,
        ``shape`` (``(C, H, W)`` native; ``()`` for text), ``labelled`` (bool),
        ``num_classes`` (0 for text), ``cached`` (bool: loading needs no download).
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    images = [
        {"name": info.name, "kind": "image", "description": info.description,
         "shape": (info.channels, info.image_size, info.image_size), "labelled": info.labelled,
         "num_classes": len(info.classes), "cached": info.is_cached(root)}
        for info in DATASETS.values()
    ]
    texts = [
        {"name": info.name, "kind": "text", "description": info.description, "shape": (), "labelled": False,
         "num_classes": 0, "cached": info.is_cached(root)}
        for info in TEXT_DATASETS.values()
    ]
    return images + texts
