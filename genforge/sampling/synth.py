"""Synthetic labelled datasets drawn from a conditional image model.

    >>> x, y = synthesize(pipeline, 10_000, seed=0)           # balanced classes, uint8 [N, C, S, S], int64 [N]
    >>> write_dataset(x, y, "synthetic/", manifest)          # class sub-folders that ``imagefolder:`` reads back

A folder dataset has one sub-folder per class, named ``<id>-<class name>`` with the id zero-padded
(or just the padded id when the class has no name), so that ``imagefolder:`` — which labels
sub-folders in sorted order — gives every image its original label id; ``manifest.json`` records
the model, seed, sample options, class counts and folder names. An ``.npz`` file holds ``x``
(uint8 [N, C, S, S]) and ``y`` (int64 [N]) with the manifest as a JSON string under ``manifest``.
Nothing is written over: the output must not exist, and is written to a temporary beside it first.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from genforge import __version__
from genforge.io import atomic_dir, atomic_path, claim_new
from genforge.models.base import SampleOptions
from genforge.rundir import RunDirError, check_location
from genforge.sampling.images import ImagePipeline

MANIFEST = "manifest.json"


def class_counts(n: int, num_classes: int) -> list[int]:
    """``n`` split over classes as evenly as possible (the first ``n % K`` classes get one more)."""
    return [n // num_classes + (1 if k < n % num_classes else 0) for k in range(num_classes)]


def balanced(n: int, num_classes: int, seed: int) -> Tensor:
    """int64 [n] labels with :func:`class_counts` per class, in an order shuffled with ``seed``."""
    labels = torch.repeat_interleave(torch.arange(num_classes), torch.tensor(class_counts(n, num_classes)))
    return labels[torch.randperm(n, generator=torch.Generator().manual_seed(seed))]


def synthesize(pipeline: ImagePipeline, n: int, *, seed: int = 0, batch_size: int = 256,
               options: SampleOptions | dict[str, Any] | None = None) -> tuple[Tensor, Tensor]:
    """``n`` generated images with balanced labels: (uint8 [n, C, S, S], int64 [n])."""
    k = pipeline.num_classes
    if not k:
        raise ValueError(f"{pipeline.name} holds an unconditional model: synthetic labelled data needs a "
                         f"class-conditional one (model.conditional=true)")
    if not 1 <= n <= 10_000_000:
        raise ValueError(f"n must be in [1, 10000000], got {n}")
    y = balanced(n, k, seed)
    return pipeline.generate(n, condition=y, seed=seed, batch_size=batch_size, options=options), y


def folder_names(num_classes: int, class_names: list[str]) -> list[str]:
    """Sub-folder name of each label: zero-padded id, plus ``-name`` when the class has a name of its own."""
    width = len(str(num_classes - 1))
    out = []
    for k in range(num_classes):
        name = class_names[k] if k < len(class_names) else ""
        safe = re.sub(r"[^A-Za-z0-9_.+-]+", "_", name).strip("._")
        out.append(f"{k:0{width}d}" + (f"-{safe}" if safe and safe != str(k) else ""))
    return out


def manifest(pipeline: ImagePipeline, y: Tensor, *, seed: int, options: SampleOptions, run: str) -> dict[str, Any]:
    k = pipeline.num_classes
    counts = torch.bincount(y, minlength=k).tolist()
    return {"format": "genforge-synthetic/1", "run": run, "family": pipeline.model.family, "n": int(y.numel()),
            "seed": seed, "sample_options": vars(options), "num_classes": k,
            "class_names": pipeline.model.class_names, "class_counts": counts,
            "folders": folder_names(k, pipeline.model.class_names), "genforge_version": __version__}


def check_new_output(out: str | Path) -> Path:
    """Refuse an output that exists (a folder with anything in it, or any file), an empty name, the root, a
    system folder and any path inside a run (synth owns nothing there); removes (and names) the staging folder
    a killed earlier synth to ``out`` left. Returns the path."""
    check_location(out, command="synth", what="synth output", folder=Path(str(out)).suffix.lower() != ".npz")
    out = Path(out)
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise RunDirError(f"{out} already exists; choose a new output (nothing was changed)")
    if not out.absolute().parent.is_dir():
        raise RunDirError(f"cannot write {out}: {out.absolute().parent} is not a folder")
    if out.suffix.lower() == ".npz":
        claim_new(out)  # another synth's file written there meanwhile is kept (a folder: the rename refuses)
    return out


def write_dataset(x: Tensor, y: Tensor, out: str | Path, meta: dict[str, Any]) -> Path:
    """Write ``x``/``y`` as ``.npz`` (when ``out`` ends in .npz) or as class sub-folders of PNGs + manifest,
    staged beside ``out`` (``.NAME.PID_….tmp``) and renamed into place whole."""
    out = check_new_output(out)
    if out.suffix.lower() == ".npz":
        with atomic_path(out) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, x=x.numpy(), y=y.numpy(), manifest=np.array(json.dumps(meta)))
        return out
    with atomic_dir(out) as tmp:
        names = meta["folders"]
        for name in names:
            (tmp / name).mkdir()
        arr = x.permute(0, 2, 3, 1).numpy()  # [N, S, S, C]
        mode = {1: "L", 3: "RGB", 4: "RGBA"}[arr.shape[-1]]
        for i, (img, label) in enumerate(zip(arr, y.tolist())):
            Image.fromarray(img[..., 0] if mode == "L" else img, mode=mode).save(tmp / names[label] / f"{i:07d}.png")
        (tmp / MANIFEST).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return out
