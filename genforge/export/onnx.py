"""ONNX export: every graph a family declares (``onnx_graphs``), checked with onnxruntime against PyTorch.

Each graph is written as ``NAME.onnx``; ``verify.json`` records, per graph, the max
|onnxruntime − torch| on its example inputs and on a second batch size, and the exporter used.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from genforge import __version__
from genforge.io import atomic_write_text
from genforge.models.base import GenerativeModel, eval_mode

TOLERANCE = 1e-4
VERIFY = "verify.json"


def _require_onnx() -> Any:
    """onnxruntime, or a one-line error naming the extra to install."""
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except ImportError:
        raise ValueError("ONNX export needs onnx and onnxruntime: pip install 'genforge[export]'") from None
    return onnxruntime


def _as_tuple(out: Tensor | tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return out if isinstance(out, tuple) else (out,)


def export_graph(module: nn.Module, inputs: tuple[Tensor, ...], path: Path, input_names: list[str],
                 output_names: list[str], dynamic_axes: dict[str, dict[int, str]]) -> str:
    """Write ``module`` traced on ``inputs`` to ``path``; returns the exporter used (``torchscript`` or ``dynamo``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, inputs, str(path), input_names=input_names, output_names=output_names,
                              dynamic_axes=dynamic_axes, opset_version=17, dynamo=False)
            return "torchscript"
        except (TypeError, RuntimeError, ImportError):  # a torch without the TorchScript exporter
            shapes = {n: {k: torch.export.Dim.AUTO for k in ax} for n, ax in dynamic_axes.items() if n in input_names}
            torch.onnx.export(module, inputs, str(path), input_names=input_names, output_names=output_names,
                              dynamic_shapes=shapes, dynamo=True)
            return "dynamo"


def max_diff(session: Any, module: nn.Module, inputs: tuple[Tensor, ...], input_names: list[str]) -> float:
    """Max |onnxruntime − torch| over every output of one call on ``inputs``."""
    with torch.no_grad():
        want = _as_tuple(module(*inputs))
    got = session.run(None, {n: t.cpu().numpy() for n, t in zip(input_names, inputs)})
    return max(float(np.abs(g - w.float().cpu().numpy()).max()) if w.numel() else 0.0 for g, w in zip(got, want))


def _rebatch(inputs: tuple[Tensor, ...], input_names: list[str], axes: dict[str, dict[int, str]],
             size: int) -> tuple[Tensor, ...]:
    """The example inputs with every dimension called ``batch`` grown to ``size`` (repeating rows, new noise)."""
    out = []
    for name, t in zip(input_names, inputs):
        dim = next((d for d, a in axes.get(name, {}).items() if a == "batch"), None)
        if dim is None:
            out.append(t)
            continue
        reps = [1] * t.ndim
        reps[dim] = -(-size // t.shape[dim])
        grown = t.repeat(*reps).narrow(dim, 0, size)
        out.append(grown + torch.randn_like(grown) * 0.1 if grown.is_floating_point() else grown)
    return tuple(out)


def export_onnx(model: GenerativeModel, out: Path) -> dict[str, Any]:
    """Write every graph of ``model`` into ``out`` and ``verify.json``; a graph off by more than
    :data:`TOLERANCE` is a ``ValueError`` (the folder is still left for inspection)."""
    ort = _require_onnx()
    graphs = model.onnx_graphs()
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"family": model.family, "genforge_version": __version__, "tolerance": TOLERANCE,
                              "graphs": {}}
    with eval_mode(model):
        for name, (module, inputs, in_names, out_names, axes) in graphs.items():
            path = out / f"{name}.onnx"
            exporter = export_graph(module, inputs, path, in_names, out_names, axes)
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            diffs = {"example": max_diff(session, module, inputs, in_names),
                     "batch_5": max_diff(session, module, _rebatch(inputs, in_names, axes, 5), in_names)}
            report["graphs"][name] = {"file": path.name, "inputs": in_names, "outputs": out_names,
                                      "dynamic_axes": {k: {str(d): a for d, a in v.items()} for k, v in axes.items()},
                                      "exporter": exporter, "max_abs_diff": max(diffs.values()), "checks": diffs}
    atomic_write_text(out / VERIFY, json.dumps(report, indent=2) + "\n")
    worst = {n: g["max_abs_diff"] for n, g in report["graphs"].items() if g["max_abs_diff"] > TOLERANCE}
    if worst:
        raise ValueError(f"ONNX graphs differ from PyTorch by more than {TOLERANCE:g}: {worst} (see {out / VERIFY})")
    return report
