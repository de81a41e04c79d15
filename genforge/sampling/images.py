"""The image sampling pipeline: load a run once, validate options, draw seeded batches, write PNG grids.

    >>> pipe = ImagePipeline.from_run("runs/digits-dcgan")
    >>> request, options = pipe.parse({"n": 16, "label": 3, "seed": 1})   # unknown keys: ConfigError
    >>> images = pipe.generate(16, condition=3, seed=1)                      # uint8 [16, C, H, W]
    >>> pipe.write("threes.png", request, options)                           # grid + generation metadata

``genforge sample``, the trainer's periodic grids, ``genforge eval`` and the
HTTP server all draw images through :class:`ImagePipeline`.
"""

from __future__ import annotations

import dataclasses
import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TextIO

import numpy as np
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from torch import Tensor

from genforge.config import FieldError
from genforge.io import atomic_path
from genforge.models.base import WEIGHTS_FILE, GenerativeModel, SampleOptions, eval_mode
from genforge.models.capabilities import EmbedsTextAndImages
from genforge.models.conditions import Condition, label_classes, label_id, parse_condition
from genforge.rundir import RunDir, check_output
from genforge.sampling.options import parse_options


def to_uint8(x: Tensor) -> Tensor:
    """float [.., C, H, W] in [0, 1] → uint8 on the CPU (rounded, clamped)."""
    return x.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu()


def make_grid(images: Tensor, *, nrow: int = 0, padding: int = 2, scale: int = 1) -> np.ndarray:
    """Tile uint8 [n, C, H, W] into one uint8 [H', W', C] array (C = 1, 3 or 4).

    ``nrow`` images per row (0 = square-ish); ``scale`` enlarges each pixel
    (nearest neighbour) so tiny images stay legible.
    """
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"make_grid wants uint8 [n, C, H, W], got {images.dtype} {list(images.shape)}")
    n, c, h, w = images.shape
    if scale > 1:
        images = images.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
        h, w = h * scale, w * scale
    ncol = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / ncol)
    grid = np.zeros((rows * (h + padding) + padding, ncol * (w + padding) + padding, c), np.uint8)
    if c == 4:
        grid[..., 3] = 255  # opaque padding
    arr = images.permute(0, 2, 3, 1).numpy()  # [n, H, W, C]
    for i in range(n):
        r, col = divmod(i, ncol)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        grid[y:y + h, x:x + w] = arr[i]
    return grid


def caption_tiles(grid: np.ndarray, captions: list[str], tile: int, padding: int, ncol: int) -> np.ndarray:
    """The grid with each tile's caption written in a white strip under its row of tiles (Pillow's built-in
    bitmap font, wrapped to the tile's width, at most 3 lines): uint8 [H', W', C] → [H'', W', C]."""
    from PIL import ImageDraw, ImageFont

    font = ImageFont.load_default()
    per_line = max(4, tile // 6)
    plain = [c.replace("\u2014", "-").replace("\u2013", "-").encode("latin-1", "replace").decode("latin-1")
             for c in captions]  # the bitmap font draws Latin-1 only
    lines = [textwrap.wrap(c, per_line)[:3] or [""] for c in plain]
    strip = 11 * max(len(ls) for ls in lines) + 2
    rows = math.ceil(len(captions) / ncol)
    h = (grid.shape[0] - padding) // rows - padding
    c = grid.shape[2]
    out = Image.new("RGB", (grid.shape[1], grid.shape[0] + rows * strip), (255, 255, 255))
    canvas = Image.fromarray(grid[..., 0] if c == 1 else grid[..., :3]).convert("RGB")
    draw = ImageDraw.Draw(out)
    for r in range(rows):
        top = r * (h + padding + strip)
        out.paste(canvas.crop((0, r * (h + padding), grid.shape[1], (r + 1) * (h + padding) + padding)), (0, top))
        for k in range(r * ncol, min(len(captions), (r + 1) * ncol)):
            x = padding + (k % ncol) * (tile + padding)
            for j, line in enumerate(lines[k]):
                draw.text((x, top + h + padding + 1 + 11 * j), line, fill=(0, 0, 0), font=font)
    return np.asarray(out, dtype=np.uint8)


def display_scale(image_size: int, target: int = 64) -> int:
    """Integer upscaling so each tile is about ``target`` pixels wide."""
    return max(1, target // image_size)


IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}  # suffix → Pillow format


def image_format(path: str | Path) -> str:
    """The Pillow format a file name asks for; an unsupported suffix is a ``ValueError`` naming the choices."""
    suffix = Path(path).suffix.lower()
    if suffix not in IMAGE_FORMATS:
        raise ValueError(f"cannot write images as {suffix or 'a file without a suffix'!r} ({path}): "
                         f"name the file .png, .jpg/.jpeg or .webp")
    return IMAGE_FORMATS[suffix]


def save_grid(images: Tensor, path: str | Path, *, nrow: int = 0, metadata: dict[str, Any] | None = None,
              scale: int | None = None, padding: int = 2, captions: list[str] | None = None) -> Path:
    """Write uint8 [n, C, H, W] as one image grid, atomically, in the format the suffix names.

    ``captions`` (one per image) are written under the tiles, which are then enlarged to about 128 px
    so the text fits; the grid becomes RGB.

    ``scale=1, padding=0`` writes a single image as it is. PNG (lossless) stores ``metadata`` (e.g. model, seed, label, step) as tEXt chunks, readable
    with ``PIL.Image.open(path).text``; JPEG (quality 95, no alpha) stores it as a comment and
    WebP is written lossless.
    """
    path = Path(path)
    fmt = image_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scale = display_scale(images.shape[-1], 128 if captions else 64) if scale is None else scale
    grid = make_grid(images, nrow=nrow, scale=scale, padding=padding)
    if captions is not None:
        grid = caption_tiles(grid, captions, images.shape[-1] * scale, padding,
                             nrow or math.ceil(math.sqrt(images.shape[0])))
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[grid.shape[2]]
    img = Image.fromarray(grid[..., 0] if mode == "L" else grid, mode=mode)
    text = {str(k): str(v) for k, v in (metadata or {}).items()}
    if fmt == "PNG":
        info = PngInfo()
        for key, value in text.items():
            info.add_text(key, value)
        kwargs: dict[str, Any] = {"pnginfo": info}
    elif fmt == "JPEG":
        img = img.convert("RGB") if mode == "RGBA" else img
        kwargs = {"quality": 95, "comment": "; ".join(f"{k}={v}" for k, v in text.items()).encode()}
    else:
        kwargs = {"lossless": True}
    with atomic_path(path) as tmp:
        img.save(tmp, format=fmt, **kwargs)
    return path


MAX_BATCH = 8192  # images per forward pass


@dataclass(kw_only=True)
class ImageRequest:
    """What to draw, besides the family's own options.

    Attributes:
        n: images.
        seed: seeds labels and noise: the same seed gives the same images.
        label: class of every image (conditional models), its id or name; None = one class per grid column.
        prompt: text every image is generated from (models that take a text condition).
        image: a source image file (models that take an image condition), used for every image.
        strength: how far from the source image generation may go, in [0, 1].
        nrow: images per grid row (0 = the class count for per-column labels, else square-ish).
        batch_size: images generated per forward pass (does not change the images).
    """

    n: int = 64
    seed: int = 0
    label: int | str | None = None
    prompt: str | None = None
    image: str | None = None
    strength: float | None = None
    nrow: int = 0
    batch_size: int = 256

    def __post_init__(self) -> None:
        if not 1 <= self.n <= 100_000:
            raise FieldError("n", f"must be in [1, 100000], got {self.n}")
        if self.nrow < 0:
            raise FieldError("nrow", f"must be >= 0, got {self.nrow}")
        if not 1 <= self.batch_size <= MAX_BATCH:
            raise FieldError("batch_size", f"must be in [1, {MAX_BATCH}], got {self.batch_size}")


class ImagePipeline:
    """Seeded image generation from one loaded image model (see the module docstring).

    Args:
        model: an image family (:class:`~genforge.models.capabilities.ImageModel`).
        name: shown in PNG metadata and errors (the run directory's name).
    """

    task = "image"
    request_class = ImageRequest

    def __init__(self, model: GenerativeModel, *, name: str = "", references: Tensor | None = None) -> None:
        if model.task != "image":
            raise ValueError(f"{name or 'this run'} holds a {model.family} model, which does not generate images")
        self.model = model
        self.name = name or model.family
        self.references = references  # uint8 [N, C, S, S]: real images previews of image-conditioned models start from

    @classmethod
    def from_run(cls, run_dir: str | Path, *, device: str = "cpu", weights: str = WEIGHTS_FILE) -> ImagePipeline:
        """Load a run's sampling weights once (eval mode) for many calls."""
        from genforge.models import load  # models/__init__ imports every family; keep it off import paths

        run = RunDir(run_dir)
        model = load(run.path, weights=weights)
        if isinstance(model, EmbedsTextAndImages):
            model.sample(1)  # raises NotGenerative: the one line that says what the run is for
        return cls(model.to(device), name=run.path.resolve().name)

    @property
    def num_classes(self) -> int:
        """Classes a label can name (0 when the model takes no label condition)."""
        return label_classes(self.model)

    def parse(self, options: dict[str, Any] | None = None) -> tuple[ImageRequest, SampleOptions]:
        """Validate ``options`` (request fields, the condition and the family's sample options) in one go."""
        request, opts = parse_options(ImageRequest, self.model.sample_options, options or {}, model=self.model,
                                      name=self.name)
        opts = self.model.parse_sample_options(opts)  # the family's own checks (a sampler it cannot build …)
        condition = self.condition(request)
        if condition is not None and isinstance(condition.label, int):
            request.label = condition.label
        return request, opts

    def condition(self, request: ImageRequest) -> Condition | None:
        """The request's :class:`Condition` (its source image read from the file), through the one parser."""
        image = None
        if request.image is not None:
            from genforge.sampling.masks import read_model_image

            image = read_model_image(request.image, self.model.image_shape[0]).unsqueeze(0)  # [1, C, s, s]
        raw = {"label": request.label, "prompt": request.prompt, "image": image, "strength": request.strength}
        return parse_condition(self.model, raw, name=self.name)

    def label_id(self, label: int | str) -> int:
        """A class label as its id (see :func:`~genforge.models.conditions.label_id`)."""
        if not self.num_classes:
            raise ValueError(f"{self.name} holds an unconditional model: label cannot be used")
        return label_id(self.model, label)

    @torch.no_grad()
    def generate(self, n: int, *, condition: Any = None, seed: int = 0, batch_size: int = 256,
                 options: SampleOptions | dict[str, Any] | None = None,
                 on_batch: Callable[[int, int], None] | None = None) -> Tensor:
        """Draw ``n`` images in batches, reproducibly from ``seed`` (eval mode, restored after).

        Args:
            condition: None, an int label, ``n`` labels, or a :class:`Condition` (of one row or ``n``), split
                across batches.
            options: the family's sample options.
            on_batch: called with (images done, n) after every batch (progress lines).

        Returns:
            uint8 [n, C, H, W] on the CPU.
        """
        if n < 1:
            raise FieldError("n", f"must be >= 1, got {n}")
        opts = self.model.parse_sample_options(options)
        generator = torch.Generator().manual_seed(seed)
        if isinstance(condition, Condition):
            condition = condition.expand(n)
        elif condition is not None and not isinstance(condition, int):
            condition = torch.as_tensor(condition, dtype=torch.long)
            if condition.shape != (n,):
                raise FieldError("condition", f"must be an int or {n} labels, got shape {list(condition.shape)}")
        out = []
        with eval_mode(self.model):
            for start in range(0, n, batch_size):
                m = min(batch_size, n - start)
                cond = _rows(condition, start, start + m)
                x = self.model.sample(m, condition=cond, generator=generator, **vars(opts))  # [m, C, H, W] in [0, 1]
                out.append(to_uint8(x))
                if on_batch is not None:
                    on_batch(start + m, n)
        return torch.cat(out)

    def grid_condition(self, n: int) -> tuple[Any, int]:
        """Labels for an ``n``-image grid and its row length: one class per column (rows of K) when
        conditional, else ``(None, 0)`` (no labels, square grid)."""
        k = self.num_classes
        return ([i % k for i in range(n)], k) if k else (None, 0)

    def write(self, path: str | Path, request: ImageRequest, options: SampleOptions | None = None, *,
              step: int | None = None) -> Path:
        """Draw ``request`` and write it as one PNG grid with its generation metadata.

        The PNG's text chunks record model family, run, seed and label, plus the training
        ``step`` for grids written during training, or ``n`` for ``genforge sample``.
        """
        if isinstance(self.model, EmbedsTextAndImages):
            return self.write_retrieval(path, request, step=step)
        given = self.condition(request)
        if given is not None and given.image is None and "image" in self.model.required_conditions():
            given = None  # a strength alone: the preview draws its sources from the references
        if given is None and "image" in self.model.required_conditions():
            return self.write_sources(path, request, options, step=step)
        condition: Any = request.label if given is None or given.kinds() == ("label",) else given
        nrow, captions = request.nrow, None
        prompts = self.model.config.sample_prompts if "text" in self.model.accepted_conditions() else []
        if given is None and prompts:  # a preview: the run's own list of prompts, one per tile, written under it
            captions = [prompts[i % len(prompts)] for i in range(request.n)]
            condition = Condition(text=tuple(captions))
        if request.label is None and self.num_classes:
            labels, columns = self.grid_condition(request.n)
            condition = labels if given is None else dataclasses.replace(given, label=torch.tensor(labels))
            nrow = nrow or columns
        images = self.generate(request.n, condition=condition, seed=request.seed, batch_size=request.batch_size,
                               options=options)
        label = request.label if request.label is not None else ("per-column" if self.num_classes else "none")
        meta: dict[str, Any] = {"genforge_model": self.model.family, "run": self.name}
        meta.update({"step": step, "seed": request.seed} if step is not None else {"seed": request.seed, "n": request.n})
        meta["label"] = label
        if request.prompt is not None:
            meta["prompt"] = request.prompt
        if request.image is not None:
            meta.update(image=Path(request.image).name, strength=given.strength)
        if captions is not None:
            meta["prompts"] = " | ".join(captions)
        return save_grid(images, path, nrow=nrow, metadata=meta, captions=captions)

    def write_retrieval(self, path: str | Path, request: ImageRequest, *, step: int | None = None) -> Path:
        """The preview of a model that embeds rather than generates (a clip run): for each of the run's prompts
        (one per tile, at most ``n``), the reference image it ranks first, with the prompt under it."""
        if self.references is None:
            self.model.sample(request.n)  # raises: this model does not generate
        prompts = list(self.model.config.sample_prompts)
        captions = [prompts[i % len(prompts)] for i in range(request.n)] if prompts else []
        if not captions:
            raise ValueError(f"{self.name} has no sample_prompts to rank the reference images for")
        texts = self.model.embed_texts(self.model.tokenizer.encode(captions, strict=False))  # [n, E]
        best = (texts @ self.model.embed_images(self.references).T).argmax(dim=1)  # [n] of N references
        meta: dict[str, Any] = {"genforge_model": self.model.family, "run": self.name,
                                "prompts": " | ".join(captions), "rows": "the reference ranked first per prompt"}
        if step is not None:
            meta["step"] = step
        return save_grid(self.references[best], path, nrow=request.nrow, metadata=meta, captions=captions)

    def write_sources(self, path: str | Path, request: ImageRequest, options: SampleOptions | None = None, *,
                      step: int | None = None) -> Path:
        """The preview of a model that generates from a source image: ``min(n, 16)`` reference images (a
        seeded pick), then per source variant (``x4``, ``x2`` …) rows of the source (nearest-enlarged), the
        baseline and the model's output."""
        if self.references is None:
            raise ValueError(f"{self.name} generates from a source image; give one (--image FILE)")
        g = torch.Generator().manual_seed(request.seed)
        n = min(request.n, 16, self.references.shape[0])
        real = self.references[torch.randperm(self.references.shape[0], generator=g)[:n]]  # [n, C, S, S]
        size, rows, names = real.shape[-1], [real], []
        for variant in self.model.source_variants():
            source = self.model.make_source(real, variant)  # [n, C, s, s]
            method, base = self.model.baseline(source)
            f = max(1, size // source.shape[-1])
            out = self.generate(n, condition=Condition(image=source), seed=request.seed, options=options)
            shown = [] if torch.equal(source, real) else [source.repeat_interleave(f, 2).repeat_interleave(f, 3)]
            rows += [*shown, base, out]  # a source that is the original itself (an autoencoder's) is not repeated
            names.append(f"{variant}: {'source, ' if shown else ''}{method.split(' (')[0]}, model")
        meta: dict[str, Any] = {"genforge_model": self.model.family, "run": self.name, "seed": request.seed,
                                "rows": "original; " + "; ".join(names)}
        if step is not None:
            meta["step"] = step
        return save_grid(torch.cat(rows), path, nrow=n, metadata=meta)

    def sample_to(self, out: str | Path | None, request: ImageRequest, options: SampleOptions | None = None, *,
                  run_dir: str | Path, stream: TextIO | None = None, overwrite: bool = False) -> Path:
        """``genforge sample``: write the grid to ``out`` (default :meth:`default_output`); returns the path.

        The path is checked before anything is drawn: a run's own files, folders, unsupported
        suffixes and (without ``overwrite``) existing files are refused.
        """
        path = check_output(self.default_output(run_dir, request) if out is None else out, overwrite=overwrite,
                            command="sample")
        image_format(path)
        return self.write(path, request, options)

    def default_output(self, run_dir: str | Path, request: ImageRequest) -> Path:
        """``RUN_DIR/samples/sample-seed<S>[-label<L>].png``."""
        label = f"-label{request.label}" if request.label is not None else ""
        return RunDir(run_dir).sample_output(f"sample-seed{request.seed}{label}.png")


def _rows(condition: Any, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of a ``generate`` condition (an int label applies to every row)."""
    if isinstance(condition, Condition):
        return condition.take(start, stop)
    return condition[start:stop] if isinstance(condition, Tensor) else condition


def generate_images(model: GenerativeModel, n: int, *, condition: Any = None, seed: int = 0,
                    batch_size: int = 256, **options: Any) -> Tensor:
    """``ImagePipeline(model).generate(...)``: uint8 [n, C, H, W] on the CPU (see :meth:`ImagePipeline.generate`)."""
    return ImagePipeline(model).generate(n, condition=condition, seed=seed, batch_size=batch_size, options=options)
