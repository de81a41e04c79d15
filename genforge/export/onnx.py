"""ONNX export: every graph a family declares (``onnx_graphs``), checked with onnxruntime against PyTorch.

Each graph is written as ``NAME.onnx``; ``verify.json`` records, per graph, the max
|onnxruntime − torch| on its example inputs and on a second batch size, and the exporter used.
A language model's ``decoder`` graph is also run behind the decoding protocol
(:class:`OnnxLanguageModel`) through the one decode loop of :mod:`genforge.models.decoding`,
and a seeded request past a window slide must give the tokens PyTorch gives (``generation``).
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
from genforge.models.capabilities import LanguageModel
from genforge.models.decoding import stream

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


class OnnxLanguageModel(LanguageModel):
    """An exported ``decoder`` graph run by onnxruntime behind the decoding protocol (new_slots / prefill / decode /
    window_start), so :class:`~genforge.models.decoding.DecodeLoop` drives it like the PyTorch model.

    The graph maps tokens int64 [B, T] and past_keys / past_values float32 [L, B, H, P, D] to logits [B, T, V]
    and present_keys / present_values [L, B, H, P + T, D] (``GPT.onnx_graphs``). Each slot keeps its own past
    (numpy [L, 1, H, P, D]); rows at one length are run together. The context rule, context length and
    vocabulary are those of ``model``, the PyTorch model it was exported from.
    """

    def __init__(self, session: Any, model: LanguageModel) -> None:
        self.session, self.model, self.config = session, model, model.config
        layers, _, heads, _, head_size = session.get_inputs()[1].shape  # past_keys [L, batch, H, past, D]
        self.past_shape = (int(layers), int(heads), int(head_size))

    @property
    def context_length(self) -> int:
        return self.model.context_length

    def window_start(self, length: int, start: int | None) -> int:
        return self.model.window_start(length, start)

    def new_slots(self, slots: int) -> list[tuple[np.ndarray, np.ndarray] | None]:
        return [None] * slots

    def _run(self, tokens: Tensor, keys: np.ndarray, values: np.ndarray) -> tuple[Tensor, np.ndarray, np.ndarray]:
        """tokens int64 [B, T] after pasts [L, B, H, P, D] → (last position logits float32 [B, V], presents)."""
        feed = {"tokens": np.ascontiguousarray(tokens.cpu().numpy()), "past_keys": keys, "past_values": values}
        logits, keys, values = self.session.run(None, feed)
        return torch.from_numpy(logits[:, -1]).float(), keys, values

    def prefill(self, ids: Tensor, cache: list, slots: Tensor) -> Tensor:
        L, H, D = self.past_shape
        empty = np.zeros((L, ids.shape[0], H, 0, D), dtype=np.float32)  # P = 0: a prompt
        logits, keys, values = self._run(ids, empty, empty)
        for j, s in enumerate(slots.tolist()):
            cache[s] = (keys[:, j:j + 1], values[:, j:j + 1])
        return logits  # (n, V)

    def decode(self, tokens: Tensor, cache: list, slots: Tensor) -> Tensor:
        rows = slots.tolist()
        by_length: dict[int, list[int]] = {}
        for r, s in enumerate(rows):
            by_length.setdefault(cache[s][0].shape[3], []).append(r)
        out: list[Tensor | None] = [None] * len(rows)
        for group in by_length.values():
            keys = np.concatenate([cache[rows[r]][0] for r in group], axis=1)  # (L, b, H, P, D)
            values = np.concatenate([cache[rows[r]][1] for r in group], axis=1)
            logits, keys, values = self._run(tokens[group, None], keys, values)
            for j, r in enumerate(group):
                cache[rows[r]] = (keys[:, j:j + 1], values[:, j:j + 1])
                out[r] = logits[j]
        return torch.stack(out)  # (B, V)


def check_generation(model: LanguageModel, exported: LanguageModel, *, rows: int = 2, seed: int = 0) -> dict[str, Any]:
    """Decode one seeded request through the same loop with ``model`` and with ``exported``, for one and a half
    context windows (so the window slides and is encoded again); ``same_tokens`` says whether they agree."""
    steps = model.context_length + model.context_length // 2
    prompt = torch.arange(rows * 3).remainder(model.vocab_size).view(rows, 3)  # (rows, 3), a different prompt a row
    tokens = [torch.stack(list(stream(m, prompt, steps, generator=torch.Generator().manual_seed(seed),
                                      temperature=1.0)), dim=1) for m in (model, exported)]  # 2 × (rows, steps)
    return {"rows": rows, "prompt_tokens": 3, "new_tokens": steps, "temperature": 1.0, "seed": seed,
            "same_tokens": torch.equal(tokens[0].cpu(), tokens[1].cpu())}


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
            module.eval()  # a wrapper is built in training mode, and torch.onnx.export restores the mode it found:
            exporter = export_graph(module, inputs, path, in_names, out_names, axes)  # the reference runs in eval
            module.eval()
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            diffs = {"example": max_diff(session, module, inputs, in_names),
                     "batch_5": max_diff(session, module, _rebatch(inputs, in_names, axes, 5), in_names)}
            report["graphs"][name] = {"file": path.name, "inputs": in_names, "outputs": out_names,
                                      "dynamic_axes": {k: {str(d): a for d, a in v.items()} for k, v in axes.items()},
                                      "exporter": exporter, "max_abs_diff": max(diffs.values()), "checks": diffs}
            if model.task == "text" and name == "decoder":  # a language model's decoder: decode with it too
                report["graphs"][name]["generation"] = check_generation(model, OnnxLanguageModel(session, model))
    atomic_write_text(out / VERIFY, json.dumps(report, indent=2) + "\n")
    worst = {n: g["max_abs_diff"] for n, g in report["graphs"].items() if g["max_abs_diff"] > TOLERANCE}
    if worst:
        raise ValueError(f"ONNX graphs differ from PyTorch by more than {TOLERANCE:g}: {worst} (see {out / VERIFY})")
    if not all(g.get("generation", {}).get("same_tokens", True) for g in report["graphs"].values()):
        raise ValueError(f"the exported decoder generates other tokens than PyTorch (see {out / VERIFY})")
    return report
