"""What the image metrics see: a feature extractor (the dataset's evaluator classifier or the FID Inception-v3).

    >>> ex = evaluator_extractor(data, data_cfg)        # evaluator:<dataset>, 128-d, with class logits
    >>> feats, logits = ex(images_uint8)                # images resized / channel-converted first
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from torch import Tensor

from genforge.config import DataConfig
from genforge.data import ImageData
from genforge.data.transforms import convert_channels, resize_center_crop
from genforge.evaluation.features.evaluators import evaluator_for

__all__ = ["Extractor", "evaluator_extractor", "inception_extractor"]


@dataclass
class Extractor:
    """A feature extractor as the metrics see it.

    Attributes:
        id: ``evaluator:<key>`` or ``inception-v3-fid``.
        sha256: of its weights file.
        dim: feature width D.
        run: uint8 ``[N, C, S, S]`` (already in the extractor's input shape) → (features float32 [N, D],
            logits float32 [N, K] or None).
        channels, image_size: the input it takes (image_size 0: any size).
        num_classes: K of the logits (0 without logits).
        allowed_channels: channel counts taken as they are (others are converted to ``channels``).
        test_accuracy: an evaluator's accuracy on its held-out test split (None for Inception).
        test_examples: how many images that accuracy was measured on.
    """

    id: str
    sha256: str
    dim: int
    run: Callable[[Tensor], tuple[Tensor, Tensor | None]]
    channels: int
    image_size: int
    num_classes: int = 0
    allowed_channels: tuple[int, ...] = ()
    test_accuracy: float | None = None
    test_examples: int = 0

    def prepare(self, images: Tensor) -> Tensor:
        """uint8 images → the extractor's input shape (resize and channel conversion; a no-op when they match).

        Channels are converted on the smaller side of the resize, as the data pipeline does.
        """
        c = images.shape[1]
        target = c if c in self.allowed_channels else self.channels
        if target < c:
            images = convert_channels(images, target)
        if self.image_size and images.shape[-1] != self.image_size:
            images = resize_center_crop(images, self.image_size)
        if images.shape[1] != target:
            images = convert_channels(images, target)
        return images

    def __call__(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        return self.run(self.prepare(images))


def evaluator_extractor(data: ImageData, data_cfg: DataConfig, *, batch_size: int = 500, device: str = "cpu",
                        cache_dir: Path | None = None, progress: bool = False) -> Extractor:
    """The dataset's evaluator classifier as an :class:`Extractor` (raises ``EvaluatorError`` when there is none)."""
    net, info = evaluator_for(data, data_cfg, cache_dir=cache_dir, progress=progress)
    net = net.to(device)

    def run(x: Tensor) -> tuple[Tensor, Tensor | None]:
        logits, features = net.extract(x, batch_size=batch_size)
        return features, logits

    return Extractor(id=info.id, sha256=info.sha256, dim=info.feature_dim, run=run, channels=info.channels,
                     image_size=info.image_size, num_classes=info.num_classes,
                     test_accuracy=info.test_accuracy, test_examples=info.test_examples)


def inception_extractor(*, weights: str | None = None, batch_size: int = 64, device: str = "cpu",
                        cache_dir: Path | None = None, progress: bool = False) -> Extractor:
    """The FID Inception-v3 (pool3, 2048-d) as an :class:`Extractor`; any image size, grey or RGB."""
    from genforge.evaluation.features.inception_weights import find_or_fetch

    w = find_or_fetch(weights, cache_dir=cache_dir, progress=progress)
    model = w.model.to(device).eval()

    def run(x: Tensor) -> tuple[Tensor, Tensor | None]:
        return model.features(x, batch_size=min(batch_size, 64)), None

    from genforge.evaluation.features.inception import FEATURE_DIM

    return Extractor(id=w.extractor_id, sha256=w.sha256, dim=FEATURE_DIM, run=run, channels=3, image_size=0,
                     allowed_channels=(1, 3))
