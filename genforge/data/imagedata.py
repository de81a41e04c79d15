"""``ImageData``: a whole image dataset held in memory as uint8 tensors."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["ImageData"]


@dataclass
class ImageData:
    """Train and test images of one dataset, ready for :class:`BatchStream`.

    Attributes:
        name: the dataset name as given in ``data.name`` (e.g. ``"mnist"``).
        train_x: uint8 ``[N, C, H, W]``, contiguous, pixel values 0..255.
        train_y: int64 ``[N]`` labels in ``0..num_classes-1``, or None when unlabelled.
        test_x: uint8 ``[M, C, H, W]`` with the same ``C, H, W`` as ``train_x``.
        test_y: int64 ``[M]`` or None (None exactly when ``train_y`` is None).
        classes: label names in label order (``classes[k]`` names label ``k``);
            ``[]`` when unlabelled.
        train_text: one caption per training image, or None when uncaptioned.
        test_text: one caption per test image, or None (None exactly when ``train_text`` is None).
        split: how the test split was drawn, one line for the evaluation protocol ("" = the dataset's own).
    """

    name: str
    train_x: Tensor
    train_y: Tensor | None
    test_x: Tensor
    test_y: Tensor | None
    classes: list[str]
    train_text: list[str] | None = None
    test_text: list[str] | None = None
    split: str = ""

    def __post_init__(self) -> None:
        for key in ("train_x", "test_x"):
            x = getattr(self, key)
            if x.dtype != torch.uint8 or x.dim() != 4:
                raise ValueError(f"{key} must be uint8 [N, C, H, W], got {x.dtype} {list(x.shape)}")
            if x.shape[1] not in (1, 3, 4):
                raise ValueError(f"{key} must have 1, 3 or 4 channels, got {x.shape[1]}")
        if self.train_x.shape[1:] != self.test_x.shape[1:]:
            raise ValueError(f"train_x {list(self.train_x.shape[1:])} and test_x {list(self.test_x.shape[1:])} "
                             f"images differ in shape")
        if (self.train_y is None) != (self.test_y is None):
            raise ValueError("train_y and test_y must both be labels or both be None")
        for xk, yk in (("train_x", "train_y"), ("test_x", "test_y")):
            y = getattr(self, yk)
            if y is None:
                continue
            if y.dtype != torch.int64 or y.shape != getattr(self, xk).shape[:1]:
                raise ValueError(f"{yk} must be int64 [{getattr(self, xk).shape[0]}], got {y.dtype} {list(y.shape)}")
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= len(self.classes)):
                raise ValueError(f"{yk} holds labels outside 0..{len(self.classes) - 1} ({len(self.classes)} classes)")
        self.classes = list(self.classes)
        if (self.train_text is None) != (self.test_text is None):
            raise ValueError("train_text and test_text must both be captions or both be None")
        for xk, tk in (("train_x", "train_text"), ("test_x", "test_text")):
            text = getattr(self, tk)
            if text is not None:
                if len(text) != getattr(self, xk).shape[0] or not all(isinstance(t, str) for t in text):
                    raise ValueError(f"{tk} must hold one caption (a str) per image of {xk}")
                setattr(self, tk, list(text))

    @property
    def channels(self) -> int:
        """C: 1 (grayscale), 3 (RGB) or 4 (RGBA)."""
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> int:
        """H in pixels (images are square after :func:`load_images`)."""
        return int(self.train_x.shape[2])

    @property
    def num_classes(self) -> int:
        """``len(classes)``; 0 when unlabelled."""
        return len(self.classes)

    @property
    def labelled(self) -> bool:
        return self.train_y is not None

    @property
    def captioned(self) -> bool:
        return self.train_text is not None

    def __repr__(self) -> str:
        c, h, w = self.train_x.shape[1:]
        return (f"ImageData({self.name!r}, train={self.train_x.shape[0]}, test={self.test_x.shape[0]}, "
                f"shape={c}x{h}x{w}, classes={self.num_classes}{', captioned' if self.captioned else ''})")
