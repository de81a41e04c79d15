"""``imagefolder:PATH``: mixed formats, modes and sizes; labels from sub-folders; bad files skipped."""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genforge.config import DataConfig
from genforge.data import DataError, load_images


def solid(mode: str, size: tuple[int, int], color) -> Image.Image:
    return Image.new(mode, size, color)


def palette_image(size=(50, 40)) -> Image.Image:
    im = Image.new("P", size)
    im.putpalette([0, 0, 255] + [0, 0, 0] * 255)  # index 0 = blue
    return im


@pytest.fixture
def folder(tmp_path) -> Path:
    """cats/: L png, RGB jpg, RGB bmp; dogs/: RGBA webp, P png, RGBA png; plus one corrupt png."""
    root = tmp_path / "pets"
    (root / "cats").mkdir(parents=True)
    (root / "dogs" / "nested").mkdir(parents=True)
    solid("L", (40, 30), 200).save(root / "cats" / "a.png")
    solid("RGB", (64, 64), (255, 0, 0)).save(root / "cats" / "b.jpg", quality=95)
    solid("RGB", (20, 50), (0, 255, 0)).save(root / "cats" / "c.BMP")
    solid("RGBA", (33, 33), (200, 100, 50, 255)).save(root / "dogs" / "d.webp", lossless=True)
    palette_image().save(root / "dogs" / "e.png")
    solid("RGBA", (16, 16), (255, 255, 255, 0)).save(root / "dogs" / "nested" / "f.png")
    (root / "dogs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    (root / "dogs" / "notes.txt").write_text("not an image, ignored")
    return root


def load(cfg: DataConfig):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_images(cfg)
    return data, [str(w.message) for w in caught]


def everything(data) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.cat([data.train_x, data.test_x]), torch.cat([data.train_y, data.test_y])


def test_mixed_folder_loads_with_labels_and_reports_corrupt_file(folder):
    data, messages = load(DataConfig(name=f"imagefolder:{folder}", image_size=16))
    assert data.classes == ["cats", "dogs"]
    assert data.channels == 3 and data.image_size == 16  # any colour image → RGB
    x, y = everything(data)
    assert x.shape == (6, 3, 16, 16) and x.dtype == torch.uint8
    assert sorted(y.tolist()) == [0, 0, 0, 1, 1, 1]
    assert len(data.test_x) >= 1 and len(data.train_x) >= 1
    assert any(str(folder / "dogs" / "broken.png") in m for m in messages), messages
    # solid colours survive decoding, conversion and resizing: find each by its colour
    colours = {tuple(int(v) for v in img[:, 8, 8]): int(lab) for img, lab in zip(x, y)}
    assert colours[(200, 200, 200)] == 0  # L → RGB
    assert colours[(0, 255, 0)] == 0  # BMP, upper-case extension
    assert colours[(0, 0, 255)] == 1  # palette
    assert colours[(200, 100, 50)] == 1  # opaque RGBA webp
    assert colours[(0, 0, 0)] == 1  # fully transparent white, composited over black
    red = next(c for c in colours if c[0] > 240 and c[1] < 15)  # JPEG is lossy
    assert colours[red] == 0


def test_channels_option(folder):
    rgba, _ = load(DataConfig(name=f"imagefolder:{folder}", image_size=8, channels=4))
    x, _ = everything(rgba)
    assert x.shape[1] == 4
    assert sorted(x[:, 3, 4, 4].tolist()) == [0, 255, 255, 255, 255, 255]  # alpha kept
    gray, _ = load(DataConfig(name=f"imagefolder:{folder}", image_size=8, channels=1))
    x, _ = everything(gray)
    assert x.shape == (6, 1, 8, 8)
    assert {200, 150, 0}.issubset(x[:, 0, 4, 4].tolist())  # L kept; green → round(0.587 * 255); transparent → 0


def test_half_transparent_rgba_composites_over_black(tmp_path):
    for i in range(2):
        solid("RGBA", (8, 8), (200, 100, 50, 128)).save(tmp_path / f"{i}.png")
    data, _ = load(DataConfig(name=f"imagefolder:{tmp_path}"))
    x = torch.cat([data.train_x, data.test_x])
    assert x[0, :, 0, 0].tolist() == [100, 50, 25]  # round(v * 128 / 255)


def test_flat_folder_is_unlabelled_and_native_gray(tmp_path):
    for i in range(5):
        solid("L", (12, 12), 10 * i).save(tmp_path / f"{i}.png")
    data, messages = load(DataConfig(name=f"imagefolder:{tmp_path}"))
    assert data.train_y is None and data.test_y is None and data.classes == [] and data.num_classes == 0
    assert data.channels == 1 and data.image_size == 12  # native size kept when all share one square size
    assert len(data.train_x) + len(data.test_x) == 5
    assert sorted(torch.cat([data.train_x, data.test_x])[:, 0, 0, 0].tolist()) == [0, 10, 20, 30, 40]
    assert messages == []


def test_mixed_sizes_need_image_size(folder):
    with pytest.raises(DataError, match="data.image_size"):
        load_images(DataConfig(name=f"imagefolder:{folder}"))


def test_non_square_needs_image_size(tmp_path):
    for i in range(3):
        solid("RGB", (20, 10), (i, i, i)).save(tmp_path / f"{i}.png")
    with pytest.raises(DataError, match="20x10.*data.image_size"):
        load_images(DataConfig(name=f"imagefolder:{tmp_path}"))


def test_center_crop_keeps_the_middle(tmp_path):
    a = np.zeros((10, 30), np.uint8)
    a[:, 10:20] = 255  # white middle third of a wide image
    for i in range(2):
        Image.fromarray(a).save(tmp_path / f"{i}.png")
    data, _ = load(DataConfig(name=f"imagefolder:{tmp_path}", image_size=10))
    assert (data.train_x == 255).all()


def test_split_is_seeded(folder):
    a, _ = load(DataConfig(name=f"imagefolder:{folder}", image_size=8, test_fraction=0.5, split_seed=3))
    b, _ = load(DataConfig(name=f"imagefolder:{folder}", image_size=8, test_fraction=0.5, split_seed=3))
    assert a.train_x.equal(b.train_x) and a.test_y.equal(b.test_y)
    assert len(a.test_x) == 3 and sorted(a.test_y.tolist()) in ([0, 0, 1], [0, 1, 1])  # round(0.5 * 6), stratified
    c, _ = load(DataConfig(name=f"imagefolder:{folder}", image_size=8, test_fraction=0.5, split_seed=4))
    d, _ = load(DataConfig(name=f"imagefolder:{folder}", image_size=8, test_fraction=0.5, split_seed=5))
    assert not (a.test_x.equal(c.test_x) and a.test_x.equal(d.test_x))


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty.*holds no"):
        load_images(DataConfig(name=f"imagefolder:{tmp_path / 'empty'}"))


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_images(DataConfig(name=f"imagefolder:{tmp_path / 'nope'}"))


def test_only_corrupt_files(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"garbage")
    (tmp_path / "b.png").write_bytes(b"")
    with warnings.catch_warnings(record=True), pytest.raises(DataError, match="no readable image"):
        warnings.simplefilter("always")
        load_images(DataConfig(name=f"imagefolder:{tmp_path}"))


def test_truncated_jpeg_is_skipped(tmp_path):
    for i in range(3):
        solid("RGB", (32, 32), (i * 50, 0, 0)).save(tmp_path / f"{i}.jpg")
    raw = (tmp_path / "0.jpg").read_bytes()
    (tmp_path / "0.jpg").write_bytes(raw[: len(raw) // 2])
    data, messages = load(DataConfig(name=f"imagefolder:{tmp_path}"))
    assert len(data.train_x) + len(data.test_x) == 2
    assert any("0.jpg" in m for m in messages)


def test_data_dir_form(tmp_path):
    for i in range(3):
        solid("L", (8, 8), i).save(tmp_path / f"{i}.png")
    data, _ = load(DataConfig(name="imagefolder", data_dir=str(tmp_path)))
    assert len(data.train_x) + len(data.test_x) == 3
    with pytest.raises(DataError, match="already names a folder"):
        load_images(DataConfig(name=f"imagefolder:{tmp_path}", data_dir=str(tmp_path)))


def test_mixed_grayscale_and_colour_warn_once(tmp_path, capsys):
    for i in range(3):
        solid("L", (8, 8), 50 * i).save(tmp_path / f"g{i}.png")
    solid("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "c.png")
    data, _ = load(DataConfig(name=f"imagefolder:{tmp_path}"))
    assert data.channels == 3 and len(data.train_x) + len(data.test_x) == 4
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"genforge: warning: images in {tmp_path} mix grayscale and colour modes (L: 3, RGB: 1); "
                     f"loading all with 3 channels; set data.channels (e.g. --set data.channels=1 for grayscale, "
                     f"3 for RGB) to choose"]
    gray, _ = load(DataConfig(name=f"imagefolder:{tmp_path}", channels=1))  # a choice made: nothing to say
    assert gray.channels == 1 and capsys.readouterr().err == ""


def bilevel_png(path: Path, width: int, height: int) -> None:
    """A black 1-bit PNG written row by row: a few KB on disk, ``width * height`` pixels once decoded."""
    row = bytes(1 + (width + 7) // 8)  # filter byte 0, then the packed bits of one row
    z = zlib.compressobj(9)
    data = b"".join(z.compress(row) for _ in range(height)) + z.flush()

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, grayscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b""))


@pytest.mark.parametrize("side", [10_000, 20_000])  # 100 MP (Pillow only warns) and 400 MP (Pillow refuses)
def test_huge_image_is_skipped_before_decoding(tmp_path, monkeypatch, side):
    from genforge.data import imagefolder

    for i in range(3):
        solid("L", (8, 8), 60 * i).save(tmp_path / f"{i}.png")
    bomb = tmp_path / "bomb.png"
    bilevel_png(bomb, side, side)
    assert bomb.stat().st_size < 100_000
    if side == 10_000:  # (Pillow refuses to open the 400 MP one at all)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(bomb) as im:
                assert im.size == (side, side) and im.mode == "1"
    decoded = []
    real = imagefolder._decode
    monkeypatch.setattr(imagefolder, "_decode", lambda e, *a: decoded.append(e.path.name) or real(e, *a))
    data, messages = load(DataConfig(name=f"imagefolder:{tmp_path}"))
    assert len(data.train_x) + len(data.test_x) == 3 and data.image_size == 8
    assert "bomb.png" not in decoded  # refused from the header, never decoded
    assert len(messages) == 1 and imagefolder.MAX_PIXELS == 40_000_000
    megapixels = "10000x10000 pixels (100 megapixels)" if side == 10_000 else "400 megapixels"
    assert f"{bomb}: too large: {megapixels} is above imagefolder's limit of 40 megapixels; downscale it first" in \
        messages[0], messages
