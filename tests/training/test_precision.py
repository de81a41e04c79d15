"""precision: auto picks bf16-mixed only where bfloat16 runs in hardware."""

from __future__ import annotations

import pytest
import torch

from genforge.config import ConfigError, TrainConfig, from_dict
from genforge.training import precision as prec


@pytest.mark.parametrize("flags, expected", [
    ("fpu sse avx2 avx512f avx512bw", "fp32"),  # AVX-512 without bf16: oneDNN emulates it, slowly
    ("fpu avx512f avx512_bf16", "bf16-mixed"),
    ("fpu amx_tile amx_bf16", "bf16-mixed"),
])
def test_auto_follows_the_cpu_flags(monkeypatch, tmp_path, flags, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\n")
    real_open = open
    monkeypatch.setattr("builtins.open", lambda p, *a, **k: real_open(cpuinfo if p == "/proc/cpuinfo" else p, *a, **k))
    prec.cpu_has_bf16.cache_clear()  # the flags are read once per process: here the fake ones
    try:
        assert prec.auto_precision(torch.device("cpu")) == expected
        resolved = prec.resolve_precision(torch.device("cpu"), "auto")
        assert resolved.name == expected and resolved.use_scaler is False
    finally:
        prec.cpu_has_bf16.cache_clear()


def test_auto_is_a_valid_setting_and_others_are_refused():
    assert from_dict(TrainConfig, {"precision": "auto"}, prefix="train").precision == "auto"
    with pytest.raises(ConfigError, match="precision"):
        from_dict(TrainConfig, {"precision": "bf16"}, prefix="train")
