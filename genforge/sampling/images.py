"""Seeded batched image generation and PNG grids with generation metadata."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from torch import Tensor

from genforge.io import atomic_path
from genforge.models.base import GenerativeModel


@torch.no_grad()
def generate_images(model: GenerativeModel, n: int, *, condition: Any = None, seed: int = 0,
                    batch_size: int = 256) -> Tensor:
    """Draw ``n`` images from ``model`` in batches, reproducibly from ``seed``.

    Args:
        condition: None, an int label, or ``n`` labels (split across batches).
    Returns:
        uint8 [n, C, H, W] on the CPU.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    generator = torch.Generator().manual_seed(seed)
    labels = None
    if condition is not None and not isinstance(condition, int):
        labels = torch.as_tensor(condition, dtype=torch.long)
        if labels.shape != (n,):
            raise ValueError(f"condition must be an int or {n} labels, got shape {list(labels.shape)}")
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, n, batch_size):
            m = min(batch_size, n - start)
            cond = labels[start:start + m] if labels is not None else condition
            x = model.sample(m, condition=cond, generator=generator)  # [m, C, H, W] in [0, 1]
            out.append(to_uint8(x))
    finally:
        model.train(was_training)
    return torch.cat(out)


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


def display_scale(image_size: int, target: int = 64) -> int:
    """Integer upscaling so each tile is about ``target`` pixels wide."""
    return max(1, target // image_size)


def save_grid(images: Tensor, path: str | Path, *, nrow: int = 0, metadata: dict[str, Any] | None = None,
              scale: int | None = None) -> Path:
    """Write uint8 [n, C, H, W] as one PNG grid, atomically, with text metadata.

    ``metadata`` (e.g. model, seed, label, step) is stored as PNG tEXt chunks,
    readable with ``PIL.Image.open(path).text``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scale = display_scale(images.shape[-1]) if scale is None else scale
    grid = make_grid(images, nrow=nrow, scale=scale)
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[grid.shape[2]]
    img = Image.fromarray(grid[..., 0] if mode == "L" else grid, mode=mode)
    info = PngInfo()
    for key, value in (metadata or {}).items():
        info.add_text(str(key), str(value))
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG", pnginfo=info)
    return path


def grid_condition(model: GenerativeModel, n: int) -> tuple[Any, int]:
    """Labels for an ``n``-image grid of ``model`` and the row length.

    A conditional model gets one class per column (labels ``i % K``, rows of
    ``K``); an unconditional one gets ``(None, 0)`` (no labels, square grid).
    """
    k = getattr(model.config, "num_classes", 0)
    if k:
        return [i % k for i in range(n)], k
    return None, 0


def sample_grid_from_run(run_dir: str | Path, *, n: int = 64, label: int | None = None, seed: int = 0,
                         out: str | Path | None = None, nrow: int = 0, batch_size: int = 256,
                         device: str = "cpu") -> Path:
    """Load a run's sampling weights and write an ``n``-image PNG grid (``genforge sample``).

    The PNG's text metadata records model family, run, seed, label and n.
    Default output: ``RUN_DIR/samples/sample-seed<seed>[-label<L>].png``.
    """
    from genforge.models import load  # models/__init__ imports every family; keep it off import paths

    run_dir = Path(run_dir)
    model = load(run_dir).to(device)
    num_classes = getattr(model.config, "num_classes", 0)
    if label is not None and not num_classes:
        raise ValueError(f"{run_dir} holds an unconditional model: --label cannot be used")
    if label is not None and not 0 <= label < num_classes:
        raise ValueError(f"--label must be in [0, {num_classes - 1}], got {label}")
    condition: Any = label
    if label is None and num_classes:
        condition, columns = grid_condition(model, n)
        nrow = nrow or columns
    images = generate_images(model, n, condition=condition, seed=seed, batch_size=batch_size)
    if out is None:
        out = run_dir / "samples" / (f"sample-seed{seed}" + (f"-label{label}" if label is not None else "") + ".png")
    meta = {"genforge_model": model.family, "run": run_dir.resolve().name, "seed": seed, "n": n,
            "label": label if label is not None else ("per-column" if num_classes else "none")}
    return save_grid(images, out, nrow=nrow, metadata=meta)
