"""``emoji`` and ``emoji-google``: one vendor's 64 px colour emoji drawings with captions made from their names
(built-in data sets): Twemoji (``emoji``) and Google's Noto Emoji (``emoji-google``, a second drawing style
of the same emoji, to check defaults tuned on the first).

Source: two npm packages, version 16.0.0, downloaded once from the npm registry and checked by sha256:
``emoji-datasource-<vendor>`` (``package/img/<vendor>/64/*.png``; Twemoji graphics (c) Twitter, Inc. and
other contributors, CC-BY 4.0; Noto Emoji graphics (c) Google, Apache 2.0) and ``emoji-datasource``
(``package/emoji.json``: names, categories, skin-tone variations; MIT, (c) 2013 Cal Henderson).
``--data-dir DIR`` reads either the two ``.tgz`` files or their unpacked form (``DIR/emoji.json`` and
``DIR/img/<vendor>/64/*.png``) instead.

Each emoji and each of its skin-tone variations is one image (3,781 with the 5 "Component" colour
swatches left out), captioned "<name>[, <skin tones>] — <category>", e.g. "woman in a wheelchair, medium
skin tone — people & body"; its label is its category (9 classes). The test split holds whole emoji:
an emoji and all its skin-tone variants (near-duplicates) fall on the same side
(:func:`~genforge.data.transforms.split_groups` over ``test_fraction`` / ``split_seed``).

Images are RGBA; unless ``data.channels=4`` they are composited over ``data.background`` (white by
default: the drawings are made to sit on a light page).
"""

from __future__ import annotations

import io
import json
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from genforge.config import DataConfig, parse_colour

from .download import RemoteFile, download_url, verify_file, verify_local_file
from .errors import DataError
from .imagedata import ImageData
from .transforms import convert_channels, split_groups

if TYPE_CHECKING:
    from .registry import DatasetInfo

__all__ = ["FILES", "MIRRORS", "URLS", "VENDORS", "CATEGORIES", "SKIN_TONES", "STYLES", "Vendor", "caption",
           "load_emoji", "load_emoji_styles"]


@dataclass(frozen=True)
class Vendor:
    """One vendor's drawings: its npm package's tarball, the credit line its licence asks for."""

    key: str  # "twitter": emoji.json's has_img_<key>, the package's img/<key>/64 folder
    images: RemoteFile
    credit: str

    @property
    def image_dir(self) -> str:
        return f"img/{self.key}/64"

    @property
    def package(self) -> str:
        return f"emoji-datasource-{self.key}"


NAMES = RemoteFile("emoji-datasource-16.0.0.tgz", md5="c83822ed3e55bfbf46abb541243e94cc",
                   sha256="2006725061dc0098daa832d65f854a7bec0740af2eb47cb5b23d89f7e2c849f9")
VENDORS = {  # data.name → vendor
    "emoji": Vendor("twitter", RemoteFile("emoji-datasource-twitter-16.0.0.tgz", md5="19fb55ef34e83997e985f687762798eb",
                                          sha256="f64a530c63bca463bd8317fdc4615ce63a53a0c65018e4ce2d848aaba7a28877"),
                    "Twemoji, (c) Twitter, Inc. and other contributors, CC-BY 4.0"),
    "emoji-google": Vendor("google", RemoteFile("emoji-datasource-google-16.0.0.tgz",
                                                md5="afdb2b1eb6e038ffd8c59dd6f654720f",
                                                sha256="fb5fd131b362aab7a55542d2a147a79708cce0a8b1c1bbacd470172708b5c438"),
                           "Noto Emoji, (c) Google, Apache 2.0"),
}
IMAGES = VENDORS["emoji"].images
FILES = (IMAGES, NAMES)  # Twemoji's; each vendor's: (vendor.images, NAMES)
# npm's registry and two registries that serve its tarballs unchanged; a package's tarball is
# <registry>/<package>/-/<package>-<version>.tgz
MIRRORS = ("https://registry.npmjs.org/", "https://registry.yarnpkg.com/", "https://registry.npmmirror.com/")
PACKAGES = {NAMES.name: "emoji-datasource", **{v.images.name: v.package for v in VENDORS.values()}}
URLS = {name: tuple(f"{base}{package}/-/" for base in MIRRORS) for name, package in PACKAGES.items()}
JSON = RemoteFile("emoji.json", sha256="1d602e65be88772bf8cc368ce16b855d719eeddbafe128d471b80203f494d29f")
IMAGE_DIR = VENDORS["emoji"].image_dir
CATEGORIES = ("Activities", "Animals & Nature", "Flags", "Food & Drink", "Objects", "People & Body",
              "Smileys & Emotion", "Symbols", "Travel & Places")
SKIN_TONES = {"1F3FB": "light skin tone", "1F3FC": "medium-light skin tone", "1F3FD": "medium skin tone",
              "1F3FE": "medium-dark skin tone", "1F3FF": "dark skin tone"}
SIDE = 64


def caption(name: str, category: str, tones: str = "") -> str:
    """"<name>[, <tones>] — <category>", lower case: ("WOMAN IN A WHEELCHAIR", "People & Body", "1F3FD") →
    "woman in a wheelchair, medium skin tone — people & body"."""
    words = [SKIN_TONES.get(t, t.lower()) for t in tones.split("-")] if tones else []
    described = ", ".join([name.lower(), *dict.fromkeys(words)])  # "1F3FB-1F3FB": one tone said once
    return f"{described} — {category.lower()}"


def _examples(entries: list[dict], vendor: str = "twitter") -> Iterator[tuple[str, str, int, str]]:
    """(image file name, caption, category index, group key) of every drawing ``vendor`` has, in emoji.json's
    order."""
    has = f"has_img_{vendor}"
    for e in entries:
        if not isinstance(e, dict) or e.get("category") not in CATEGORIES or not e.get(has):
            continue  # the "Component" swatches, and emoji the vendor does not draw
        name, category = e.get("name") or e.get("short_name") or "", e["category"]
        label = CATEGORIES.index(category)
        yield e["image"], caption(name, category), label, e["unified"]
        for tones, variant in sorted((e.get("skin_variations") or {}).items()):
            if variant.get(has, True):
                yield variant["image"], caption(name, category, tones), label, e["unified"]


def _decode(data: bytes, where: str) -> np.ndarray:
    """PNG bytes → uint8 [4, 64, 64] RGBA."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            a = np.asarray(im.convert("RGBA"), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as e:
        raise DataError(f"{where}: not a readable PNG ({e})") from None
    if a.shape != (SIDE, SIDE, 4):
        raise DataError(f"{where}: a {a.shape[1]}x{a.shape[0]} image, expected {SIDE}x{SIDE}")
    return a.transpose(2, 0, 1)


class _Folder:
    """The unpacked layout: ``root/emoji.json`` and ``root/img/<vendor>/64/*.png``."""

    def __init__(self, root: Path, vendor: Vendor) -> None:
        self.root, self.vendor = root, vendor

    def entries(self, verify: bool) -> list[dict]:
        path = self.root / JSON.name
        if verify:
            verify_local_file(path, JSON, "emoji")
        return _json(path.read_bytes(), str(path))

    def image(self, name: str) -> np.ndarray:
        path = self.root / self.vendor.image_dir / name
        if not path.is_file():
            raise DataError(f"{path} is missing: the emoji folder needs every image emoji.json names")
        return _decode(path.read_bytes(), str(path))


class _Tarballs:
    """The two npm tarballs (verified by sha256): images read straight from the first, names from the second."""

    def __init__(self, images: Path, names: Path, vendor: Vendor) -> None:
        self.images, self.names, self.vendor = images, names, vendor

    def entries(self, verify: bool) -> list[dict]:
        with _open_tar(self.names) as tar:
            member = _member(tar, "package/emoji.json", self.names)
            return _json(tar.extractfile(member).read(), f"{self.names}:package/emoji.json")

    def read_all(self, wanted: set[str]) -> dict[str, np.ndarray]:
        found = {}
        prefix = f"package/{self.vendor.image_dir}/"
        with _open_tar(self.images) as tar:
            for member in tar:  # one pass over the stream: members are read in archive order
                name = member.name[len(prefix):] if member.name.startswith(prefix) else None
                if name in wanted and member.isfile():
                    found[name] = _decode(tar.extractfile(member).read(), f"{self.images}:{member.name}")
        return found


def _open_tar(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, "r:gz")
    except (tarfile.TarError, OSError) as e:
        raise DataError(f"{path}: not a readable .tgz file ({e})") from None


def _member(tar: tarfile.TarFile, name: str, path: Path) -> tarfile.TarInfo:
    try:
        return tar.getmember(name)
    except KeyError:
        raise DataError(f"{path} holds no {name}: it is not the emoji-datasource package") from None


def _json(data: bytes, where: str) -> list[dict]:
    try:
        entries = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{where}: not readable JSON ({e})") from None
    if not isinstance(entries, list) or not entries:
        raise DataError(f"{where}: expected a list of emoji, got {type(entries).__name__}")
    return entries


def _source(cfg: DataConfig, vendor: Vendor, cache_dir: Path, download: bool,
            progress: bool) -> _Folder | _Tarballs:
    """Where the files are: ``--data-dir`` (unpacked or the tarballs), else the cache (downloading)."""
    files = (vendor.images, NAMES)
    if cfg.data_dir is not None:
        root = Path(cfg.data_dir).expanduser()
        if (root / JSON.name).is_file() and (root / vendor.image_dir).is_dir():
            return _Folder(root, vendor)
        paths = [root / f.name for f in files]
        if not all(p.is_file() for p in paths):
            raise DataError(f"--data-dir {root} holds neither emoji.json + {vendor.image_dir}/*.png nor "
                            f"{' and '.join(f.name for f in files)}")
        if cfg.verify:
            for path, spec in zip(paths, files):
                verify_local_file(path, spec, cfg.name)
        return _Tarballs(*paths, vendor)
    folder = cache_dir / "emoji"
    paths = []
    for spec in files:
        path = folder / spec.name
        if path.is_file():
            verify_file(path, spec)
        elif not download:
            raise DataError(f"dataset {cfg.name!r} is not in the cache: {folder} lacks {spec.name} and downloads are "
                            f"off; pass --data-dir with the unpacked files or the two tarballs")
        else:
            urls = [base.rstrip("/") + "/" + spec.name for base in URLS[spec.name]]
            download_url(urls, path, spec.digest, progress=progress,
                         hint=f"put {spec.name} into {folder}, or pass --data-dir")
        paths.append(path)
    return _Tarballs(*paths, vendor)


def _drawings(cfg: DataConfig, vendor: Vendor, cache_dir: Path, download: bool,
              progress: bool) -> tuple[Tensor, list[tuple[str, str, int, str]]]:
    """One vendor's drawings: uint8 [N, 4, 64, 64] RGBA and their (file, caption, category, group) rows."""
    source = _source(cfg, vendor, cache_dir, download, progress)
    examples = list(_examples(source.entries(cfg.verify), vendor.key))
    if not examples:
        raise DataError(f"emoji.json lists no emoji the {vendor.key} package draws")
    if isinstance(source, _Tarballs):
        pixels = source.read_all({name for name, *_ in examples})
        missing = [name for name, *_ in examples if name not in pixels]
        if missing:
            raise DataError(f"{source.images} lacks {len(missing)} image(s) emoji.json names, e.g. {missing[0]}")
        images = [pixels[name] for name, *_ in examples]
    else:
        images = [source.image(name) for name, *_ in examples]
    return torch.from_numpy(np.stack(images)), examples


def _split_data(cfg: DataConfig, x: Tensor, labels: list[int], captions: list[str], groups: list[str],
                classes: list[str]) -> ImageData:
    """Colour over ``data.background`` (or RGBA), and the split by whole emoji (``groups``)."""
    if cfg.channels != 4:
        x = convert_channels(x, 3, parse_colour(cfg.background or "white"))
    y = torch.tensor(labels, dtype=torch.int64)
    train, test = split_groups(groups, cfg.test_fraction, cfg.split_seed, what="emoji")
    return ImageData(name=cfg.name, train_x=x[train].contiguous(), train_y=y[train], test_x=x[test].contiguous(),
                     test_y=y[test], classes=classes,
                     train_text=[captions[i] for i in train.tolist()],
                     test_text=[captions[i] for i in test.tolist()],
                     split=f"whole emoji (an emoji and its skin-tone variants on one side), test_fraction "
                           f"{cfg.test_fraction}, split_seed {cfg.split_seed}")


def load_emoji(cfg: DataConfig, info: DatasetInfo, cache_dir: Path, download: bool = True,
               progress: bool = True) -> ImageData:
    """An emoji data set (``cfg.name``: a key of :data:`VENDORS`) at 64 px: uint8 [N, 3, 64, 64] over
    ``data.background`` (white by default), or RGBA with ``data.channels=4``; captions, category labels, a
    split by whole emoji."""
    vendor = VENDORS[cfg.name]
    x, examples = _drawings(cfg, vendor, cache_dir, download, progress)  # [N, 4, 64, 64]
    if progress:
        print(f"{cfg.name}: {len(examples)} drawings ({vendor.credit})", file=sys.stderr, flush=True)
    return _split_data(cfg, x, [k for _, _, k, _ in examples], [c for _, c, _, _ in examples],
                       [g for *_, g in examples], list(CATEGORIES))


STYLES = ("emoji", "emoji-google")  # the vendors of ``emoji-styles``, in label order


def load_emoji_styles(cfg: DataConfig, info: DatasetInfo, cache_dir: Path, download: bool = True,
                      progress: bool = True) -> ImageData:
    """``emoji-styles``: every vendor's drawings of :data:`STYLES` together, labelled by vendor (the style),
    with the emoji's caption; the split by whole emoji is shared, so a held-out emoji is held out in every
    style and its drawings pair up across styles by caption."""
    xs, labels, captions, groups = [], [], [], []
    for k, name in enumerate(STYLES):
        x, examples = _drawings(cfg, VENDORS[name], cache_dir, download, progress)
        xs.append(x)
        labels += [k] * len(examples)
        captions += [c for _, c, _, _ in examples]
        groups += [g for *_, g in examples]
        if progress:
            print(f"{cfg.name}: {len(examples)} drawings ({VENDORS[name].credit})", file=sys.stderr, flush=True)
    return _split_data(cfg, torch.cat(xs), labels, captions, groups, [VENDORS[n].key for n in STYLES])
