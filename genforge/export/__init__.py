"""``genforge export``: a trained run as ONNX graphs or a Hugging Face-style model folder.

    >>> export_run("runs/digits-dcgan", "onnx")           # runs/digits-dcgan/export-onnx/generator.onnx + verify.json
    >>> export_run("runs/shakespeare-char", "hf", out="hub/char-gpt")

Which graphs a family has is declared by the family (``GenerativeModel.onnx_graphs``);
this layer loads the run, writes the files and checks every graph against PyTorch.
Layer: imports base, models, data, sampling and tasks.
"""

from __future__ import annotations

import json
from pathlib import Path

from genforge.config import ConfigError
from genforge.io import atomic_dir, atomic_write_text
from genforge.rundir import RunDir, RunDirError, check_location

FORMATS = ("onnx", "hf")
TOLERANCE = 1e-4  # max |onnxruntime − torch| allowed at export time

__all__ = ["FORMATS", "TOLERANCE", "ExportError", "export_run", "output_dir"]


class ExportError(ConfigError):
    """The run cannot be exported as asked (unknown format, a family without it, an existing output)."""


def output_dir(run_dir: str | Path, fmt: str, out: str | Path | None) -> Path:
    """``out``, or ``RUN/export-FORMAT``; an existing non-empty folder (or a file), an empty name, the root or a
    system folder, and a folder inside a run other than its ``export-FORMAT/`` are refused (:class:`ExportError`).
    Staging folders of a killed earlier export to this path are removed (and named)."""
    path = Path(out) if out is not None else Path(run_dir) / f"export-{fmt}"
    try:
        check_location(out if out is not None else path, command="export", what="export folder", folder=True)
    except RunDirError as e:
        raise ExportError(str(e)) from None
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ExportError(f"export folder {path} already exists and is not empty; choose another --out "
                          f"(nothing was changed)")
    return path


def export_run(run_dir: str | Path, fmt: str, *, out: str | Path | None = None) -> Path:
    """Export the run at ``run_dir`` as ``fmt`` (``onnx`` or ``hf``) into ``out``; returns the folder.

    Everything is written into a staging folder beside ``out`` (``.NAME.PID_….tmp``), verified, then renamed
    onto ``out``: the export appears complete or not at all."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; formats: {', '.join(FORMATS)}")
    run = RunDir(run_dir)
    run.require()
    from genforge.models import load

    model = load(run.path).eval()  # refuses a missing or changed parent before anything is written
    if fmt == "onnx":
        try:
            model.onnx_graphs()  # the family's own refusal: a family, or a configuration of one, it cannot trace
        except NotImplementedError as e:
            raise ExportError(str(e)) from None
    if fmt not in type(model).export_formats:
        raise ExportError(f"family {model.family} cannot be exported as {fmt}; formats it supports: "
                          f"{', '.join(type(model).export_formats)}")
    path = output_dir(run.path, fmt, out)
    with atomic_dir(path) as staging:
        _export_into(run, model, fmt, staging)
    return path


def _export_into(run: RunDir, model, fmt: str, path: Path) -> None:
    """Write the export of ``run`` (its loaded ``model``) and of the runs it stands on into the folder ``path``."""
    if fmt == "onnx":
        from genforge.export.onnx import export_onnx

        try:
            export_onnx(model, path)
        except ValueError as e:  # verification failed: the staged folder goes, so the message cannot point at it
            raise ValueError(str(e).split(" (see ")[0] + "; nothing was written") from None
    else:
        from genforge.export.hf import export_hf

        export_hf(model, run.path, path)
    _export_parents(run, fmt, path)


def _export_parents(run: RunDir, fmt: str, path: Path) -> None:
    """The whole chain in one folder: each run this one stands on exported (in the same format) into
    ``parents/<role>/``, and ``chain.json`` naming them with the sha256 of the weights the run was trained on."""
    parents = run.verify_chain()
    if not parents:
        return
    from genforge.models import load

    chain = {}
    for parent in parents:
        target = path / "parents" / parent.role
        target.mkdir(parents=True)
        _export_into(RunDir(parent.path), load(parent.path).eval(), fmt, target)
        chain[parent.role] = {"path": f"parents/{parent.role}", "source": str(parent.path), "sha256": parent.sha256}
    atomic_write_text(path / "chain.json", json.dumps({"parents": chain}, indent=1) + "\n")
