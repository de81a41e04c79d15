"""The evaluator classifier network: shapes, input handling, pre-activation features."""

from __future__ import annotations

import pytest
import torch

from genforge.config import ConfigError
from genforge.evaluation.features.classifier import ClassifierConfig, EvaluatorClassifier


@pytest.fixture(autouse=True)
def _one_thread():
    """These tensors are tiny: one thread avoids OpenMP hand-offs that dominate (badly so on a busy CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _net(channels: int = 1, size: int = 28, classes: int = 10) -> EvaluatorClassifier:
    return EvaluatorClassifier(ClassifierConfig(channels=channels, image_size=size, num_classes=classes)).eval()


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("size", [8, 28, 32])
def test_shapes_for_every_channel_count_and_size(channels, size):
    net = _net(channels, size, classes=7)
    x = torch.randint(0, 256, (5, channels, size, size), dtype=torch.uint8)
    logits, features = net(x)
    assert logits.shape == (5, 7) and features.shape == (5, 128)
    assert logits.dtype == features.dtype == torch.float32
    assert torch.isfinite(logits).all() and torch.isfinite(features).all()


def test_pool_size_and_stem_stride_follow_the_image_size():
    assert [ClassifierConfig(image_size=s).pool_size for s in (8, 12, 16, 28, 32, 64)] == [2, 3, 2, 4, 4, 4]
    assert ClassifierConfig(image_size=8).stem_stride == 1 and ClassifierConfig(image_size=28).stem_stride == 2


def test_parameter_count_fits_two_megabytes_of_fp32():
    n = _net().num_parameters
    assert 100_000 < n and 4 * n <= 2_000_000


def test_uint8_and_float_inputs_agree():
    net = _net()
    x = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    a = net(x)
    b = net(x.float() / 255)
    c = net((x.double() / 255 + 1e-4).clamp(0, 1))  # quantize rounds the small offset away
    for u, v, w in zip(a, b, c):
        torch.testing.assert_close(u, v)
        torch.testing.assert_close(u, w)
    d = net((x.float() / 255 + 1e-3).clamp(0, 1), quantize=False)[1]
    assert not torch.equal(d, a[1])


def test_bad_inputs_raise_clear_errors():
    net = _net()
    with pytest.raises(ValueError, match=r"\[N, 1, 28, 28\].*\[2, 1, 32, 32\]"):
        net(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\[0, 1\].*max 2"):
        net(torch.full((2, 1, 28, 28), 2.0))
    with pytest.raises(ValueError, match="uint8 or floating"):
        net(torch.zeros(2, 1, 28, 28, dtype=torch.int32))
    with pytest.raises(ValueError, match="channels must be 1, 3 or 4"):
        ClassifierConfig(channels=2)
    with pytest.raises(ValueError, match="image_size"):
        ClassifierConfig(image_size=4)


def test_features_are_pre_activation_and_not_degenerate_after_training(synthetic_classes):
    """A few steps on separable data: features take negative values and their covariance is full rank."""
    x, y = synthetic_classes
    net = EvaluatorClassifier(ClassifierConfig(image_size=16, num_classes=3, feature_dim=32))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(net(x)[0], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    logits, features = net.extract(x, batch_size=50)
    assert (logits.argmax(1) == y).float().mean() > 0.9
    assert (features < 0).float().mean() > 0.2  # a ReLU output would have none
    cov = torch.cov(features.double().T)
    assert torch.linalg.matrix_rank(cov) == 32
    assert torch.linalg.eigvalsh(cov).min() > 1e-8
    relu_cov = torch.cov(torch.relu(features).double().T)
    assert torch.linalg.eigvalsh(relu_cov).min() < torch.linalg.eigvalsh(cov).min()


@pytest.fixture
def synthetic_classes():
    """150 noisy 16×16 images of three classes (a bar at one of three heights)."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(150) % 3
    x = torch.rand(150, 1, 16, 16, generator=g) * 0.3
    for k in range(3):
        x[y == k, :, 2 + 5 * k:5 + 5 * k, 2:14] += 0.7
    return (x.clamp(0, 1) * 255).round().to(torch.uint8), y


def test_extract_batches_match_one_pass_and_restore_the_mode():
    net = _net()
    net.train()
    x = torch.randint(0, 256, (23, 1, 28, 28), dtype=torch.uint8)
    logits, features = net.extract(x, batch_size=5)
    assert net.training
    net.eval()
    with torch.inference_mode():
        ref = net(x)
    torch.testing.assert_close(logits, ref[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(features, ref[1], rtol=1e-5, atol=1e-5)
    empty = net.extract(x[:0])
    assert empty[0].shape == (0, 10) and empty[1].shape == (0, 128)
    with pytest.raises(ValueError, match="batch_size"):
        net.extract(x, batch_size=0)


def test_rescaling_features_keeps_the_logits():
    net = _net()
    x = torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8)
    logits, features = net(x)
    net.rescale_features(0.25)
    logits2, features2 = net(x)
    torch.testing.assert_close(features2, features * 0.25)
    torch.testing.assert_close(logits2, logits, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="positive"):
        net.rescale_features(0.0)


def test_config_json_round_trip_is_strict():
    cfg = ClassifierConfig(channels=3, image_size=32, num_classes=5, widths=(8, 16, 32), feature_dim=64)
    assert ClassifierConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ConfigError, match="unknown config key"):
        ClassifierConfig.from_json('{"channel": 3}')
