"""Build labelled 28x28 image folders that no recipe was tuned on, from the fonts installed on this machine.

    python bench/font_datasets.py --kind letters --out data/font-letters
    python bench/font_datasets.py --kind greek --out data/font-greek
    genforge train mnist-dcgan --set data.name=imagefolder:data/font-letters

``letters``: the capitals A-J; ``greek``: ten lowercase Greek letters (alpha ... pi). Each image is one
glyph in a font chosen at random among the TrueType/OpenType files found (DejaVu, Liberation … whatever
has the glyphs), rotated by up to ``--rotate`` degrees, its ink box scaled to 20 px on the longer side at a
random size jitter and centred by mass in 28x28 (MNIST's own preprocessing), white on black. The result is
one sub-folder per class (``imagefolder:`` reads it; 10% becomes the test split), ``--per-class`` images
each, fully determined by ``--seed`` and the fonts present. The font files used are listed in
``fonts.txt``.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fail  # noqa: E402

CLASSES = {
    "letters": [(c, c) for c in "ABCDEFGHIJ"],
    "greek": [("alpha", "α"), ("beta", "β"), ("gamma", "γ"), ("delta", "δ"), ("epsilon", "ε"), ("zeta", "ζ"),
              ("eta", "η"), ("theta", "θ"), ("lambda", "λ"), ("pi", "π")],
}
FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", str(Path.home() / ".fonts"))


def find_fonts(chars: list[str]) -> list[Path]:
    """Font files that draw every one of ``chars`` with a glyph of its own (not the missing-glyph box)."""
    from PIL import ImageFont

    found = []
    for root in FONT_DIRS:
        for path in sorted(Path(root).rglob("*")) if Path(root).is_dir() else []:
            if path.suffix.lower() not in (".ttf", ".otf") or "Math" in path.name or "STIX" in path.name:
                continue
            try:
                font = ImageFont.truetype(str(path), 32)
            except OSError:
                continue
            masks = {bytes(font.getmask(c)) for c in chars}
            missing = bytes(font.getmask("\uffff"))  # what a font draws for a character it lacks
            if len(masks) == len(chars) and missing not in masks and all(m.strip(b"\x00") for m in masks):
                found.append(path)
    return found


def render(char: str, font_path: Path, rng: random.Random, rotate: float):
    """One glyph as a 28x28 grayscale PIL image, MNIST-style (20 px box centred by mass)."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(font_path), 48)
    canvas = Image.new("L", (96, 96), 0)
    ImageDraw.Draw(canvas).text((48, 48), char, fill=255, font=font, anchor="mm")
    canvas = canvas.rotate(rng.uniform(-rotate, rotate), resample=Image.BILINEAR)
    box = canvas.getbbox()
    glyph = canvas.crop(box)
    side = 20 * rng.uniform(0.8, 1.0)
    scale = side / max(glyph.size)
    glyph = glyph.resize((max(1, round(glyph.width * scale)), max(1, round(glyph.height * scale))), Image.LANCZOS)
    a = np.asarray(glyph, dtype=np.float64)
    ys, xs = np.indices(a.shape)
    cy, cx = (ys * a).sum() / a.sum(), (xs * a).sum() / a.sum()
    out = Image.new("L", (28, 28), 0)
    out.paste(glyph, (round(14 - cx + rng.uniform(-1, 1)), round(14 - cy + rng.uniform(-1, 1))))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", choices=sorted(CLASSES), required=True)
    ap.add_argument("--out", type=Path, required=True, help="new folder to write")
    ap.add_argument("--per-class", type=int, default=1000, help="images per class (default 1000)")
    ap.add_argument("--rotate", type=float, default=12.0, help="max rotation in degrees (default 12)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.out.exists() and any(args.out.iterdir()):
        fail(f"{args.out} exists and is not empty", code=2)
    classes = CLASSES[args.kind]
    fonts = find_fonts([c for _, c in classes])
    if len(fonts) < 3:
        fail(f"found {len(fonts)} fonts with all of {''.join(c for _, c in classes)} under {', '.join(FONT_DIRS)}; "
             f"need at least 3 (install e.g. fonts-dejavu and fonts-liberation)")
    rng = random.Random(args.seed)
    for i, (name, char) in enumerate(classes):
        folder = args.out / f"{i}-{name}"
        folder.mkdir(parents=True)
        for k in range(args.per_class):
            render(char, rng.choice(fonts), rng, args.rotate).save(folder / f"{k:05d}.png")
    (args.out / "fonts.txt").write_text("".join(f"{f}\n" for f in fonts), encoding="utf-8")
    print(f"wrote {len(classes)} classes x {args.per_class} images to {args.out} from {len(fonts)} fonts")


if __name__ == "__main__":
    main()
