"""The FID Inception-v3 in pure PyTorch: pool3 features ``[N, 2048]`` of images.

This is the network of TensorFlow's 2015-12-05 Inception graph, the one every
published FID uses (pytorch-fid's ``FIDInceptionA/C/E_1/E_2``, NVIDIA's
``inception-2015-12-05.pt``). It differs from torchvision's Inception-v3 in
three places: the average pools of blocks A, C and E_1 exclude the padding
(``count_include_pad=False``), the pool branch of the last block (E_2) is a
*max* pool, and BatchNorm uses ``eps=1e-3`` with no learnt scale.

Preprocessing repeats NVIDIA's TorchScript op for op: pixels in 0..255
(float32; float images are first rounded to 8-bit levels), resized to
299×299 with its ``affine_grid``/``grid_sample`` emulation of
``tf.image.resize_bilinear`` (always run, even at 299×299), then mapped to
``[-1, 1)`` by ``(x - 128) / 128``. The network itself matches the reference
bit for bit with ``exact=True``; the faster default is within ~1e-5.

Parameter names follow torchvision/pytorch-fid (``Mixed_5b.branch1x1.conv.weight``),
so pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` loads after dropping
its classifier; ``convert_torchscript_state`` renames NVIDIA's TorchScript
(``layers.mixed.tower.conv.weight``). State-dict conversion and the safetensors
files live in ``genforge.evaluation.features.inception_convert``, file locating
and downloading in ``genforge.evaluation.features.inception_weights``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "EXTRACTOR_ID",
    "FEATURE_DIM",
    "INPUT_SIZE",
    "FIDInceptionV3",
    "tf_bilinear_resize",
]

EXTRACTOR_ID = "inception-v3-fid"  # stable name of this feature extractor in evaluation records
FEATURE_DIM = 2048  # pool3 width
INPUT_SIZE = 299  # pixels, height and width the network sees
BN_EPS = 1e-3


# --------------------------------------------------------------------------- blocks


class _FrozenBatchNorm(nn.Module):
    """Inference-only BatchNorm: ``(x - running_mean) / sqrt(running_var + eps) * weight + bias``.

    Buffers (not parameters) named as in ``nn.BatchNorm2d`` but without
    ``num_batches_tracked``; the extractor is never trained.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("weight", torch.ones(channels))
        self.register_buffer("bias", torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: Tensor) -> Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, BN_EPS)


class _BasicConv2d(nn.Module):
    """Conv (no bias) → BatchNorm(eps=1e-3) → ReLU, torchvision's ``BasicConv2d``.

    With ``fused`` (set by :attr:`FIDInceptionV3.exact`) the BatchNorm is
    folded into the convolution's weight and bias at each call (a few million
    multiplies, against billions in the convolutions), saving one pass over
    the activations; the stored weights stay unfused.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int | tuple[int, int], stride: int = 1,
                 padding: int | tuple[int, int] = 0):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False)
        self.bn = _FrozenBatchNorm(c_out)
        self.fused = True

    def forward(self, x: Tensor) -> Tensor:
        if not self.fused:
            return F.relu(self.bn(self.conv(x)))
        bn = self.bn
        scale = bn.weight * torch.rsqrt(bn.running_var + BN_EPS)                  # (C_out,)
        weight = self.conv.weight * scale[:, None, None, None]                    # (C_out, C_in, kh, kw)
        bias = bn.bias - bn.running_mean * scale                                  # (C_out,)
        return F.relu(F.conv2d(x, weight, bias, self.conv.stride, self.conv.padding))


def _avg_pool(x: Tensor) -> Tensor:
    # TF's SAME average pool divides by the number of real (unpadded) pixels
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class _InceptionA(nn.Module):
    """35×35 block: 1x1 | 1x1→5x5 | 1x1→3x3→3x3 | avgpool→1x1.  [N, c_in, 35, 35] → [N, 224+pool, 35, 35]"""

    def __init__(self, c_in: int, pool_features: int):
        super().__init__()
        self.branch1x1 = _BasicConv2d(c_in, 64, 1)
        self.branch5x5_1 = _BasicConv2d(c_in, 48, 1)
        self.branch5x5_2 = _BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = _BasicConv2d(c_in, 64, 1)
        self.branch3x3dbl_2 = _BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = _BasicConv2d(c_in, pool_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_avg_pool(x))
        return torch.cat([b1, b5, b3, bp], 1)


class _InceptionB(nn.Module):
    """Grid reduction 35→17: 3x3/2 | 1x1→3x3→3x3/2 | maxpool/2.  [N, 288, 35, 35] → [N, 768, 17, 17]"""

    def __init__(self, c_in: int):
        super().__init__()
        self.branch3x3 = _BasicConv2d(c_in, 384, 3, stride=2)
        self.branch3x3dbl_1 = _BasicConv2d(c_in, 64, 1)
        self.branch3x3dbl_2 = _BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = F.max_pool2d(x, 3, stride=2)
        return torch.cat([b3, bd, bp], 1)


class _InceptionC(nn.Module):
    """17×17 block with factorised 7x7 convs.  [N, 768, 17, 17] → [N, 768, 17, 17]"""

    def __init__(self, c_in: int, c7: int):
        super().__init__()
        self.branch1x1 = _BasicConv2d(c_in, 192, 1)
        self.branch7x7_1 = _BasicConv2d(c_in, c7, 1)
        self.branch7x7_2 = _BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = _BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = _BasicConv2d(c_in, c7, 1)
        self.branch7x7dbl_2 = _BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = _BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = _BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = _BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = _BasicConv2d(c_in, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = layer(bd)
        bp = self.branch_pool(_avg_pool(x))
        return torch.cat([b1, b7, bd, bp], 1)


class _InceptionD(nn.Module):
    """Grid reduction 17→8.  [N, 768, 17, 17] → [N, 1280, 8, 8]"""

    def __init__(self, c_in: int):
        super().__init__()
        self.branch3x3_1 = _BasicConv2d(c_in, 192, 1)
        self.branch3x3_2 = _BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = _BasicConv2d(c_in, 192, 1)
        self.branch7x7x3_2 = _BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        bp = F.max_pool2d(x, 3, stride=2)
        return torch.cat([b3, b7, bp], 1)


class _InceptionE(nn.Module):
    """8×8 block with split 1x3/3x1 heads; ``pool`` is "avg" in Mixed_7b, "max" in Mixed_7c (the FID quirk).

    [N, c_in, 8, 8] → [N, 2048, 8, 8]
    """

    def __init__(self, c_in: int, pool: str):
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.pool = pool
        self.branch1x1 = _BasicConv2d(c_in, 320, 1)
        self.branch3x3_1 = _BasicConv2d(c_in, 384, 1)
        self.branch3x3_2a = _BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = _BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _BasicConv2d(c_in, 448, 1)
        self.branch3x3dbl_2 = _BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = _BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = _BasicConv2d(c_in, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)                                                    # (N, 320, 8, 8)
        a = self.branch3x3_1(x)
        b3 = [self.branch3x3_2a(a), self.branch3x3_2b(a)]                         # 2 × (N, 384, 8, 8)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = [self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)]                   # 2 × (N, 384, 8, 8)
        pooled = _avg_pool(x) if self.pool == "avg" else F.max_pool2d(x, 3, stride=1, padding=1)
        bp = self.branch_pool(pooled)                                             # (N, 192, 8, 8)
        return torch.cat([b1, *b3, *bd, bp], 1)


# --------------------------------------------------------------------------- network


def tf_bilinear_resize(x: Tensor, size: int = INPUT_SIZE) -> Tensor:
    """Resize like NVIDIA's FID TorchScript: ``tf.image.resize_bilinear`` emulated with ``grid_sample``.

    Args:
        x: float images ``[N, C, H, W]`` (any value range).
        size: output height and width.

    Returns:
        ``[N, C, size, size]`` in ``x``'s dtype. The half-pixel shift of the
        affine matrix and ``padding_mode="border"`` reproduce TF's
        (align-corners-free, top-left anchored) sampling.
    """
    n, c, h, w = x.shape
    theta = torch.eye(2, 3, device=x.device)                                      # float32, as in the reference
    theta[0, 2] += theta[0, 0] / w - theta[0, 0] / size
    theta[1, 2] += theta[1, 1] / h - theta[1, 1] / size
    theta = theta.to(x.dtype).unsqueeze(0).repeat([n, 1, 1])                     # (N, 2, 3)
    grid = F.affine_grid(theta, [n, c, size, size], align_corners=False)         # (N, size, size, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class FIDInceptionV3(nn.Module):
    """Images → pool3 features of the FID Inception-v3 (random weights until loaded).

    Load weights with ``genforge.evaluation.features.inception_weights.find_or_fetch()``
    or ``genforge.evaluation.features.inception_convert.load_safetensors``. The module is in eval mode from construction;
    BatchNorm statistics are buffers and never update.

    Args:
        exact: run conv → BatchNorm unfused and in NCHW, which reproduces
            NVIDIA's TorchScript on the CPU bit for bit. The default folds
            BatchNorm into the convolutions and feeds CPU convolutions
            channels-last tensors: about 1.3–1.4× faster on CPU, features
            within ~1e-5 (absolute; features reach ~5) of the exact ones.
            Settable later through the :attr:`exact` property.
    """

    def __init__(self, *, exact: bool = False) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = _BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = _BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = _BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = _BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = _BasicConv2d(80, 192, 3)
        self.Mixed_5b = _InceptionA(192, pool_features=32)
        self.Mixed_5c = _InceptionA(256, pool_features=64)
        self.Mixed_5d = _InceptionA(288, pool_features=64)
        self.Mixed_6a = _InceptionB(288)
        self.Mixed_6b = _InceptionC(768, c7=128)
        self.Mixed_6c = _InceptionC(768, c7=160)
        self.Mixed_6d = _InceptionC(768, c7=160)
        self.Mixed_6e = _InceptionC(768, c7=192)
        self.Mixed_7a = _InceptionD(768)
        self.Mixed_7b = _InceptionE(1280, pool="avg")
        self.Mixed_7c = _InceptionE(2048, pool="max")
        self.exact = exact
        self.eval()

    @property
    def exact(self) -> bool:
        """Bit-exact (unfused, NCHW) computation instead of the faster fused one; see the class docstring."""
        return self._exact

    @exact.setter
    def exact(self, value: bool) -> None:
        self._exact = bool(value)
        for module in self.modules():
            if isinstance(module, _BasicConv2d):
                module.fused = not self._exact

    @staticmethod
    def preprocess(images: Tensor, *, quantize: bool = True) -> Tensor:
        """Validate, resize to 299×299 and normalise as the reference does.

        Args:
            images: ``[N, 3, H, W]`` or ``[N, 1, H, W]`` (grey, repeated to 3
                channels), either ``uint8`` in 0..255 or float in ``[0, 1]``.
            quantize: round float images to the 256 levels of an 8-bit image
                first (``round(x * 255)``), as the standard protocol feeds the
                reference network uint8 images. Ignored for uint8 input.

        Returns:
            float32 ``[N, 3, 299, 299]`` in ``[-1, 1)``.
        """
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"images must be [N, 3, H, W] or [N, 1, H, W], got shape {tuple(images.shape)}")
        if images.shape[0] == 0 or images.shape[2] == 0 or images.shape[3] == 0:
            raise ValueError(f"images must be non-empty, got shape {tuple(images.shape)}")
        if images.dtype == torch.uint8:
            x = images.to(torch.float32)                                          # (N, C, H, W) in 0..255
        elif images.is_floating_point():
            lo, hi = torch.aminmax(images.detach())
            if not (lo >= 0 and hi <= 1):  # also catches NaN
                raise ValueError(f"float images must lie in [0, 1], got min {lo.item():.4g}, max {hi.item():.4g}; "
                                 f"map [-1, 1] images with (x + 1) / 2, or pass uint8")
            x = images.to(torch.float32) * 255
            if quantize:
                x = x.round()
        else:
            raise ValueError(f"images must be uint8 or floating point, got {images.dtype}")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = tf_bilinear_resize(x.contiguous(), INPUT_SIZE)                       # (N, 3, 299, 299)
        return (x - 128) / 128

    def forward_preprocessed(self, x: Tensor) -> Tensor:
        """Network only: ``[N, 3, 299, 299]`` in ``[-1, 1)`` (from :meth:`preprocess`) → float32 ``[N, 2048]``."""
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"expected preprocessed images [N, 3, {INPUT_SIZE}, {INPUT_SIZE}], got shape "
                             f"{tuple(x.shape)}; pass raw images to forward() instead")
        if not self._exact and x.device.type == "cpu":  # measured faster with oneDNN; GPUs not measured
            x = x.contiguous(memory_format=torch.channels_last)
        for layer in (self.Conv2d_1a_3x3, self.Conv2d_2a_3x3, self.Conv2d_2b_3x3):
            x = layer(x)                                                          # (N, 64, 147, 147)
        x = F.max_pool2d(x, 3, stride=2)                                          # (N, 64, 73, 73)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))                             # (N, 192, 71, 71)
        x = F.max_pool2d(x, 3, stride=2)                                          # (N, 192, 35, 35)
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))                        # (N, 288, 35, 35)
        x = self.Mixed_6a(x)                                                      # (N, 768, 17, 17)
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(x))))         # (N, 768, 17, 17)
        x = self.Mixed_7a(x)                                                      # (N, 1280, 8, 8)
        x = self.Mixed_7c(self.Mixed_7b(x))                                       # (N, 2048, 8, 8)
        return F.avg_pool2d(x, 8).flatten(1)                                      # (N, 2048) pool3, as the reference

    def forward(self, images: Tensor, *, quantize: bool = True) -> Tensor:
        """Images → pool3 features.

        Args:
            images: see :meth:`preprocess` (uint8 0..255 or float ``[0, 1]``,
                1 or 3 channels, any H×W), on this module's device.
            quantize: see :meth:`preprocess`.

        Returns:
            float32 ``[N, 2048]``.
        """
        return self.forward_preprocessed(self.preprocess(images, quantize=quantize))

    @torch.inference_mode()
    def features(self, images: Tensor, *, batch_size: int = 32, quantize: bool = True) -> Tensor:
        """:meth:`forward` in chunks of ``batch_size`` under ``inference_mode``, results gathered on the CPU.

        ``images`` may live on any device (e.g. a large uint8 set on the CPU);
        each chunk is moved to this module's device. Returns float32 ``[N, 2048]`` on the CPU.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        device = self.Conv2d_1a_3x3.conv.weight.device
        return torch.cat([self(chunk.to(device), quantize=quantize).cpu() for chunk in images.split(batch_size)])

