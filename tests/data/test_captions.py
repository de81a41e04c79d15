"""Captioned image data: the Hugging Face imagefolder metadata layout, alpha over a background colour,
captions made from labels, the group split, and the built-in emoji set (from a folder and from the two npm
tarballs served on 127.0.0.1)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import tarfile
import threading
from pathlib import Path

import pytest
import torch
from PIL import Image

from genforge.config import ConfigError, DataConfig, from_dict
from genforge.data import DataError, load_images
from genforge.data import emoji
from genforge.data.transforms import convert_channels, split_groups


def _captioned_folder(root: Path, n: int = 12, kind: str = "jsonl") -> list[dict]:
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        colour = ("red", "green", "blue")[i % 3]
        name = f"sub/{i:02d}.png" if i % 4 == 0 else f"{i:02d}.png"
        (root / name).parent.mkdir(exist_ok=True)
        rgb = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}[colour]
        Image.new("RGBA", (16, 16), (*rgb, 255)).save(root / name)
        rows.append({"file_name": name, "text": f"a {colour} square number {i}", "colour": colour})
    if kind == "jsonl":
        (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        lines = ["file_name,text,colour"] + [f'{r["file_name"]},"{r["text"]}",{r["colour"]}' for r in rows]
        (root / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return rows


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_a_metadata_file_gives_each_image_its_caption_and_a_label_column(tmp_path, kind):
    rows = _captioned_folder(tmp_path / "sq", kind=kind)
    data = load_images(DataConfig(name=f"imagefolder:{tmp_path / 'sq'}", label_column="colour", test_fraction=0.25))
    assert data.captioned and data.classes == ["blue", "green", "red"]
    assert len(data.train_text) + len(data.test_text) == len(rows)
    for x, y, text in [*zip(data.train_x, data.train_y, data.train_text), *zip(data.test_x, data.test_y, data.test_text)]:
        colour = text.split()[1]
        assert data.classes[int(y)] == colour  # the caption, the label and the pixels are one image's
        assert x[:, 0, 0].tolist() == {"red": [255, 0, 0], "green": [0, 255, 0], "blue": [0, 0, 255]}[colour]
    plain = load_images(DataConfig(name=f"imagefolder:{tmp_path / 'sq'}"))
    assert plain.captioned and not plain.labelled


@pytest.mark.parametrize("edit,message", [
    (lambda rows: [{k: v for k, v in r.items() if k != "text"} for r in rows], "no 'text' caption column"),
    (lambda rows: rows + [{"file_name": "missing.png", "text": "gone"}], "'missing.png' names no file"),
    (lambda rows: rows[:1] + [{**rows[1], "text": "  "}], "is empty or not text"),
    (lambda rows: rows + rows[:1], "is listed twice"),
    (lambda rows: rows + [{"file_name": "../outside.png", "text": "x"}], "points outside"),
])
def test_a_bad_metadata_file_is_one_clear_line(tmp_path, edit, message):
    root = tmp_path / "sq"
    rows = _captioned_folder(root)
    (tmp_path / "outside.png").write_bytes((root / "01.png").read_bytes())
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in edit(rows)), encoding="utf-8")
    with pytest.raises(DataError, match=message) as e:
        load_images(DataConfig(name=f"imagefolder:{root}"))
    assert "\n" not in str(e.value)


def test_label_column_needs_a_metadata_file_and_both_kinds_are_refused(tmp_path):
    root = tmp_path / "plain"
    root.mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(root / f"{i}.png")
    with pytest.raises(DataError, match="needs a metadata.jsonl or metadata.csv"):
        load_images(DataConfig(name=f"imagefolder:{root}", label_column="kind"))
    _captioned_folder(tmp_path / "both")
    _captioned_folder(tmp_path / "both", kind="csv")
    with pytest.raises(DataError, match="both metadata.jsonl and metadata.csv"):
        load_images(DataConfig(name=f"imagefolder:{tmp_path / 'both'}"))


def test_transparent_pixels_sit_on_the_background_colour():
    x = torch.tensor([255, 0, 0, 128], dtype=torch.uint8).view(1, 4, 1, 1)  # half-transparent red
    white = convert_channels(x, 3, (255, 255, 255)).flatten().tolist()
    assert white == [255, (255 * 127 + 127) // 255, (255 * 127 + 127) // 255]  # (c·a + bg·(255 - a)) / 255
    assert convert_channels(x, 3).flatten().tolist() == [(255 * 128 + 127) // 255, 0, 0]  # black by default
    with pytest.raises(ConfigError, match="background"):
        from_dict(DataConfig, {"background": "bluish"})
    assert from_dict(DataConfig, {"background": "#ff8000"}).background == "#ff8000"


def test_captions_from_labels_follow_the_template():
    data = load_images(DataConfig(name="digits", caption_template="digit {label}"))
    assert data.train_text[:3] == [f"digit {int(y)}" for y in data.train_y[:3]]
    assert data.test_text[0] == f"digit {int(data.test_y[0])}"
    with pytest.raises(ConfigError, match="caption_template"):
        from_dict(DataConfig, {"caption_template": "no label here"})


def test_a_group_split_keeps_every_group_on_one_side_and_is_seeded():
    groups = [i // 5 for i in range(100)] + [99] * 30  # 20 groups of 5 and one of 30
    train, test = split_groups(groups, 0.1, seed=3)
    sides = {}
    for side, idx in (("train", train), ("test", test)):
        for i in idx.tolist():
            assert sides.setdefault(groups[i], side) == side
    assert len({groups[i] for i in test.tolist()}) == 2  # round(0.1 × 21 groups)
    assert sorted(train.tolist() + test.tolist()) == list(range(130))
    again = split_groups(groups, 0.1, seed=3)
    assert torch.equal(again[1], test) and not torch.equal(split_groups(groups, 0.1, seed=4)[1], test)


# ---------------------------------------------------------------------- emoji
ENTRIES = [
    {"name": "GRINNING FACE", "unified": "1F600", "image": "1f600.png", "category": "Smileys & Emotion",
     "has_img_twitter": True},
    {"name": "WOMAN IN A WHEELCHAIR", "unified": "1F469-200D-1F9BD", "image": "1f469-200d-1f9bd.png",
     "category": "People & Body", "has_img_twitter": True,
     "skin_variations": {t: {"image": f"1f469-{t.lower()}-200d-1f9bd.png", "has_img_twitter": True}
                         for t in ("1F3FB", "1F3FD")}},
    {"name": "EMOJI MODIFIER FITZPATRICK TYPE-1-2", "unified": "1F3FB", "image": "1f3fb.png",
     "category": "Component", "has_img_twitter": True},
    {"name": "RED APPLE", "unified": "1F34E", "image": "1f34e.png", "category": "Food & Drink",
     "has_img_twitter": True},
    {"name": "CAT FACE", "unified": "1F431", "image": "1f431.png", "category": "Animals & Nature",
     "has_img_twitter": True},
]


def _png(seed: int) -> bytes:
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, 256, (64, 64, 4), generator=g, dtype=torch.uint8).numpy()
    out = io.BytesIO()
    Image.fromarray(a, "RGBA").save(out, format="PNG")
    return out.getvalue()


def _images() -> dict[str, bytes]:
    names = [e["image"] for e in ENTRIES] + [v["image"] for v in ENTRIES[1]["skin_variations"].values()]
    return {name: _png(i) for i, name in enumerate(names)}


def _tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _check_emoji(data, images: dict[str, bytes]) -> None:
    captions = data.train_text + data.test_text
    assert sorted(captions) == sorted([
        "grinning face — smileys & emotion", "woman in a wheelchair — people & body",
        "woman in a wheelchair, light skin tone — people & body",
        "woman in a wheelchair, medium skin tone — people & body", "red apple — food & drink",
        "cat face — animals & nature"])  # the Component swatch is left out
    wheelchair = [t for t in data.test_text if "wheelchair" in t]
    assert len(wheelchair) in (0, 3)  # an emoji and its skin tones on one side
    assert data.classes[int(data.train_y[data.train_text.index(data.train_text[0])])].lower() in data.train_text[0]
    assert data.train_x.shape[1:] == (3, 64, 64) and "whole emoji" in data.split
    rgba = Image.open(io.BytesIO(images["1f600.png"]))
    r, g, b, a = (int(v) for v in rgba.getpixel((0, 0)))
    k = (data.train_text + data.test_text).index("grinning face — smileys & emotion")
    x = torch.cat([data.train_x, data.test_x])[k]
    assert x[:, 0, 0].tolist() == [(c * a + 255 * (255 - a) + 127) // 255 for c in (r, g, b)]  # over white


def test_emoji_from_an_unpacked_folder(tmp_path):
    images = _images()
    (tmp_path / "img/twitter/64").mkdir(parents=True)
    for name, data in images.items():
        (tmp_path / "img/twitter/64" / name).write_bytes(data)
    (tmp_path / "emoji.json").write_text(json.dumps(ENTRIES), encoding="utf-8")
    data = load_images(DataConfig(name="emoji", data_dir=str(tmp_path), verify=False, test_fraction=0.3))
    _check_emoji(data, images)
    with pytest.raises(DataError, match="not emoji's emoji.json"):  # verified by default: this is not the real file
        load_images(DataConfig(name="emoji", data_dir=str(tmp_path)))


@pytest.mark.parametrize("name", ["emoji", "emoji-google"])
def test_emoji_downloads_both_tarballs_once_and_checks_them(tmp_path, monkeypatch, name):
    images, vendor = _images(), emoji.VENDORS[name]
    entries = [{**e, f"has_img_{vendor.key}": e["has_img_twitter"]} for e in ENTRIES]
    entries[1]["skin_variations"] = {t: {**v, f"has_img_{vendor.key}": True}
                                     for t, v in ENTRIES[1]["skin_variations"].items()}
    site = tmp_path / "site"
    site.mkdir()
    _tar(site / vendor.images.name, {f"package/img/{vendor.key}/64/{n}": d for n, d in images.items()}
         | {f"package/img/{vendor.key}/32/1f600.png": images["1f600.png"]})
    _tar(site / emoji.NAMES.name, {"package/emoji.json": json.dumps(entries).encode()})
    specs = tuple(emoji.RemoteFile(f.name, sha256=hashlib.sha256((site / f.name).read_bytes()).hexdigest())
                  for f in (vendor.images, emoji.NAMES))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        monkeypatch.setitem(emoji.VENDORS, name, emoji.Vendor(vendor.key, specs[0], vendor.credit))
        monkeypatch.setattr(emoji, "NAMES", specs[1])
        monkeypatch.setattr(emoji, "URLS", {f.name: (url,) for f in specs})
        cache = tmp_path / "cache"
        data = load_images(DataConfig(name=name, test_fraction=0.3), cache_dir=cache)
        _check_emoji(data, images)
        assert sorted(p.name for p in (cache / "emoji").iterdir()) == sorted(f.name for f in specs)
        server.shutdown()  # the second load reads the cache
        again = load_images(DataConfig(name=name, test_fraction=0.3), cache_dir=cache)
        assert again.train_text == data.train_text and torch.equal(again.train_x, data.train_x)
        (cache / "emoji" / specs[1].name).write_bytes(b"not a tarball")
        with pytest.raises(DataError, match="is not the expected"):
            load_images(DataConfig(name=name), cache_dir=cache)
    finally:
        server.server_close()


@pytest.mark.skipif(not (Path(__file__).resolve().parents[3] / "shared/data/emoji-twitter/emoji.json").is_file(),
                    reason="needs the unpacked Twemoji set in shared/data/emoji-twitter")
def test_the_real_emoji_set_has_3781_captioned_drawings_split_by_whole_emoji():
    root = Path(__file__).resolve().parents[3] / "shared/data/emoji-twitter"
    data = load_images(DataConfig(name="emoji", data_dir=str(root), image_size=32))
    assert len(data.train_text) + len(data.test_text) == 3781 and data.train_x.shape[1:] == (3, 32, 32)
    assert "woman in manual wheelchair, medium skin tone — people & body" in data.train_text + data.test_text
    assert 300 < len(data.test_text) < 500 and data.labelled and len(data.classes) == 9


def test_emoji_styles_pairs_both_vendors_drawings_on_one_split(tmp_path):
    images = _images()
    entries = [{**e, "has_img_google": e["image"] != "1f34e.png"} for e in ENTRIES]  # Noto lacks the apple here
    for vendor, shift in (("twitter", 0), ("google", 100)):
        (tmp_path / f"img/{vendor}/64").mkdir(parents=True)
        for i, (name, _) in enumerate(images.items()):
            (tmp_path / f"img/{vendor}/64" / name).write_bytes(_png(i + shift))
    (tmp_path / "emoji.json").write_text(json.dumps(entries), encoding="utf-8")
    data = load_images(DataConfig(name="emoji-styles", data_dir=str(tmp_path), verify=False, test_fraction=0.4))
    assert data.classes == ["twitter", "google"]
    labels = torch.cat([data.train_y, data.test_y]).tolist()
    assert labels.count(0) == 6 and labels.count(1) == 5  # the apple is drawn by one vendor only
    for split_text, split_y in ((data.train_text, data.train_y), (data.test_text, data.test_y)):
        by_vendor = [{c for c, y in zip(split_text, split_y.tolist()) if y == k} for k in (0, 1)]
        assert by_vendor[1] <= by_vendor[0]  # an emoji is held out (or not) in both styles
    assert not set(data.train_text) & set(data.test_text)
    k_tw = (data.train_text + data.test_text).index("cat face — animals & nature")
    k_go = len(data.train_text + data.test_text) - 1 - (data.train_text + data.test_text)[::-1].index(
        "cat face — animals & nature")
    x = torch.cat([data.train_x, data.test_x])
    assert k_tw != k_go and not torch.equal(x[k_tw], x[k_go])  # two drawings of one emoji, one per vendor
