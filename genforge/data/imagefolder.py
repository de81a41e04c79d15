"""``imagefolder:PATH``: a user's own PNG/JPEG/BMP/WebP images.

Layout: images in immediate sub-folders of PATH are labelled by sub-folder
(sorted names → labels 0, 1, …; files are found recursively inside each);
images directly in PATH are unlabelled. A ``metadata.jsonl`` or ``metadata.csv``
in PATH (Hugging Face's ``imagefolder`` convention, :mod:`genforge.data.captions`)
lists the images instead, with a caption each and optionally a label column. Each image is decoded with Pillow
(any mode: 1, L, LA, P, RGB, RGBA, CMYK, 16-bit …), converted to the target
channels, resized (shorter side → ``image_size``, antialiased) and centre-cropped
to a square, then everything is held in memory as uint8.

Channels: ``data.channels`` when set. Otherwise native: 3 if any image is in
colour (RGB, palette, CMYK, …), else 1; a folder that mixes grayscale and
colour images prints one warning line on stderr with the count per mode, the
channels chosen and how to choose (``data.channels``). Transparency is kept
only when ``channels=4`` is asked for; otherwise images are composited over
``data.background`` (black by default).

Unreadable files are skipped and reported in one warning (path + reason each).
So are images above :data:`MAX_PIXELS` (width × height read from the header,
before any pixel is decoded): a small, highly compressed file (a 1-bit PNG
of a few KB) can otherwise decode to gigabytes.
"""

from __future__ import annotations

import re
import sys
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from genforge.config import DataConfig, parse_colour

from .captions import find_metadata, read_metadata
from .errors import DataError
from .imagedata import ImageData
from .transforms import convert_channels, resize_center_crop, split_indices

__all__ = ["load_imagefolder", "read_image", "IMAGE_EXTENSIONS", "MAX_PIXELS", "PREFIX"]

PREFIX = "imagefolder"
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp"})
# Largest image decoded, in pixels (width × height from the header): 40 megapixels, e.g. 7746x5164, take
# about 160 MB as RGBA uint8 and a few times that while converting and resizing. Larger files are skipped.
MAX_PIXELS = 40_000_000
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})


@dataclass
class _Entry:
    path: Path
    label: int | None
    caption: str | None = None
    mode: str = ""
    size: tuple[int, int] = (0, 0)  # (width, height) as Pillow reports


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def _scan(root: Path) -> tuple[list[_Entry], list[str]]:
    """Image files under ``root`` and the class names (``[]`` when unlabelled)."""
    top = sorted(p for p in root.iterdir() if _is_image(p))
    class_dirs = [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    per_class = [(d.name, sorted(p for p in d.rglob("*") if _is_image(p))) for d in class_dirs]
    per_class = [(name, files) for name, files in per_class if files]
    if not per_class:
        return [_Entry(p, None) for p in top], []
    if top:
        warnings.warn(f"{root}: ignoring {len(top)} image(s) directly in the folder (e.g. {top[0].name}) because "
                      f"its sub-folders hold images and name the classes; move them into a class sub-folder",
                      stacklevel=3)
    classes = [name for name, _ in per_class]
    return [_Entry(p, k) for k, (_, files) in enumerate(per_class) for p in files], classes


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "La", "RGBa", "PA") or "transparency" in im.info


def read_image(path: str | Path, channels: int) -> tuple[torch.Tensor, str]:
    """One image file → (uint8 ``[channels, H, W]`` at its own size, the file's Pillow mode).

    Colour and transparency are converted as :func:`convert_channels` does (RGB → gray by luma, alpha
    composited over black); the mode tells the caller what was converted.

    Raises:
        DataError: the file is missing, not an image Pillow can read, or larger than :data:`MAX_PIXELS`.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such image file")
    entry = _Entry(path, None)
    try:
        _header(entry)
        return _decode(entry, channels, None), entry.mode
    except _TooLarge as e:
        raise DataError(f"{path}: {e}") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{path}: not a readable image ({why})") from None


def _decode(entry: _Entry, channels: int, size: int | None,
            background: tuple[int, int, int] = (0, 0, 0)) -> torch.Tensor:
    """One file → uint8 ``[channels, S, S]`` (``[channels, H, W]`` when ``size`` is None)."""
    with Image.open(entry.path) as im:
        if size is not None and im.format == "JPEG":
            im.draft("RGB" if im.mode not in _GRAY_MODES else "L", (size, size))  # fast DCT-domain downscale
        im = ImageOps.exif_transpose(im)  # camera rotation
        if im.mode.startswith("I") or im.mode == "F":  # 16/32-bit grayscale → 8-bit
            a = np.asarray(im, dtype=np.float64)
            im = Image.fromarray(np.clip(a / 257.0 if a.max() > 255 else a, 0, 255).round().astype(np.uint8))
        gray = im.mode in _GRAY_MODES
        mode = ("LA" if gray else "RGBA") if _has_alpha(im) else ("L" if gray else "RGB")
        if mode == "LA":
            mode = "RGBA"  # one alpha path for all: LA → RGBA keeps gray values
        a = np.asarray(im.convert(mode), dtype=np.uint8)
    t = torch.from_numpy(a.copy()).reshape(a.shape[0], a.shape[1], -1).permute(2, 0, 1).unsqueeze(0)
    t = convert_channels(t, channels, background)
    if size is not None:
        t = resize_center_crop(t, size)
    return t[0]


class _TooLarge(Exception):
    pass


def _header(entry: _Entry) -> None:
    """Fill mode and size from the file header (no pixel decoding).

    Raises:
        _TooLarge: the image has more than :data:`MAX_PIXELS` pixels.
    """
    limit = f"is above imagefolder's limit of {MAX_PIXELS / 1e6:g} megapixels; downscale it first"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below with our own message
        try:
            im = Image.open(entry.path)  # lazy: reads the header only
        except Image.DecompressionBombError as e:  # over twice Pillow's own limit: it refuses before we can
            m = re.search(r"\((\d+) pixels\)", str(e))
            raise _TooLarge(f"{int(m[1]) / 1e6:.0f} megapixels {limit}" if m else f"{e}") from None
    with im:
        entry.mode, entry.size = im.mode, im.size
        w, h = im.size
        if w * h > MAX_PIXELS:
            raise _TooLarge(f"{w}x{h} pixels ({w * h / 1e6:.0f} megapixels) {limit}")
        if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):
            entry.size = entry.size[::-1]  # EXIF rotation by 90° swaps width and height


def _warn_mixed_modes(root: Path, entries: list[_Entry], channels: int) -> None:
    """One stderr line when grayscale and colour images mix and the native channel count decides."""
    modes = Counter(e.mode for e in entries)
    if not (any(m in _GRAY_MODES for m in modes) and any(m not in _GRAY_MODES for m in modes)):
        return
    counts = ", ".join(f"{m}: {n}" for m, n in sorted(modes.items(), key=lambda kv: (-kv[1], kv[0])))
    print(f"genforge: warning: images in {root} mix grayscale and colour modes ({counts}); loading all with "
          f"{channels} channels; set data.channels (e.g. --set data.channels=1 for grayscale, 3 for RGB) to "
          f"choose", file=sys.stderr, flush=True)


def resolve_root(cfg: DataConfig) -> Path:
    """The folder of ``imagefolder:PATH`` (or ``imagefolder`` with ``data_dir=PATH``)."""
    path = cfg.name.split(":", 1)[1] if ":" in cfg.name else ""
    if path and cfg.data_dir is not None:
        raise DataError(f"data name {cfg.name!r} already names a folder; drop --data-dir {cfg.data_dir} "
                        f"(or use name 'imagefolder' with --data-dir)")
    path = path or cfg.data_dir or ""
    if not path:
        raise DataError("imagefolder needs a folder: use imagefolder:PATH (e.g. --set data.name=imagefolder:./images)")
    return Path(path).expanduser()


def load_imagefolder(cfg: DataConfig) -> ImageData:
    """Load the images of ``imagefolder:PATH`` into memory and split them.

    Uses ``cfg.image_size`` (resize + centre-crop; when None all images must
    already be one square size), ``cfg.channels`` (None = native, see module
    docstring), ``cfg.test_fraction`` and ``cfg.split_seed`` (stratified by class).

    Returns:
        ImageData with uint8 ``[N, C, S, S]`` images; labels from sub-folders or None.

    Files that cannot be read, or hold more than :data:`MAX_PIXELS` pixels, are
    skipped and listed in one warning.

    Raises:
        DataError: folder missing or without any readable image; mixed or
            non-square sizes with ``image_size`` unset; fewer than 2 images.
    """
    root = resolve_root(cfg)
    if not root.exists():
        raise DataError(f"image folder {root} does not exist; check the path in {cfg.name!r}")
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; imagefolder:PATH needs a folder of images "
                        f"(or of class sub-folders of images)")
    metadata = find_metadata(root)
    if metadata is not None:
        entries, classes = _listed(metadata, cfg)
    elif cfg.label_column is not None:
        raise DataError(f"data.label_column={cfg.label_column!r} needs a metadata.jsonl or metadata.csv in {root} "
                        f"(file_name, text and {cfg.label_column} columns)")
    else:
        entries, classes = _scan(root)
    exts = "/".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))
    if not entries:
        raise DataError(f"image folder {root} holds no {exts} images (directly or in class sub-folders)")

    ok, skipped = _read_headers(entries)  # pass 1: headers only, to choose size and channels before decoding

    size = cfg.image_size
    if size is None and ok:
        sizes = {e.size for e in ok}
        first = ok[0]
        if len(sizes) > 1 or first.size[0] != first.size[1]:
            other = next((e for e in ok if e.size != first.size), first)
            raise DataError(f"images in {root} are not all one square size (e.g. {first.size[0]}x{first.size[1]} "
                            f"{first.path.name}, {other.size[0]}x{other.size[1]} {other.path.name}); set "
                            f"data.image_size (e.g. --set data.image_size=64) to resize and centre-crop them")
    channels = cfg.channels or (3 if any(e.mode not in _GRAY_MODES for e in ok) else 1)
    if cfg.channels is None:
        _warn_mixed_modes(root, ok, channels)

    background = parse_colour(cfg.background or "black")
    images, labels, captions = [], [], []
    for e in ok:  # pass 2: decode
        try:
            images.append(_decode(e, channels, size, background))
            labels.append(e.label)
            captions.append(e.caption)
        except Exception as err:
            skipped.append(f"  {e.path}: {type(err).__name__}: {err}")
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable or too large image(s) in {root}:\n" + "\n".join(skipped),
                      stacklevel=2)
    if not images:
        raise DataError(f"image folder {root} holds no readable image ({len(entries)} file(s) failed to decode or "
                        f"are too large)")
    if size is None and len({tuple(t.shape) for t in images}) > 1:  # headers lied (rare): still refuse a mix
        raise DataError(f"images in {root} decode to different sizes; set data.image_size to resize them")

    x = torch.stack(images)  # [N, C, S, S]
    y = torch.tensor(labels, dtype=torch.int64) if classes else None
    train, test = split_indices(len(x), cfg.test_fraction, cfg.split_seed, labels=y, what=f"image folder {root}")
    text = captions if metadata is not None else None
    return ImageData(name=cfg.name, train_x=x[train].contiguous(), train_y=None if y is None else y[train],
                     test_x=x[test].contiguous(), test_y=None if y is None else y[test], classes=classes,
                     train_text=None if text is None else [text[i] for i in train.tolist()],
                     test_text=None if text is None else [text[i] for i in test.tolist()])


def _read_headers(entries: list[_Entry]) -> tuple[list[_Entry], list[str]]:
    """The entries whose headers read (mode and size filled in), and one line per file skipped."""
    skipped: list[str] = []
    ok: list[_Entry] = []
    for e in entries:
        try:
            _header(e)
            ok.append(e)
        except _TooLarge as err:
            skipped.append(f"  {e.path}: too large: {err}")
        except Exception as err:  # Pillow raises many types for bad files
            skipped.append(f"  {e.path}: {type(err).__name__}: {err}")
    return ok, skipped


def _listed(metadata: Path, cfg: DataConfig) -> tuple[list[_Entry], list[str]]:
    """The images a metadata file lists, with their captions, and the class names of its label column."""
    meta = read_metadata(metadata, cfg.caption_column, cfg.label_column)
    unlisted = sum(1 for p in metadata.parent.rglob("*") if _is_image(p)) - len(meta.files)
    if unlisted > 0:
        print(f"genforge: note: {unlisted} image(s) in {metadata.parent} are not listed in {metadata.name} and are "
              f"not used", file=sys.stderr, flush=True)
    if meta.labels is None:
        return [_Entry(f, None, c) for f, c in zip(meta.files, meta.captions)], []
    classes = sorted(set(meta.labels))
    index = {name: k for k, name in enumerate(classes)}
    return [_Entry(f, index[v], c) for f, c, v in zip(meta.files, meta.captions, meta.labels)], classes
