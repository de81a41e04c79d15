"""A contrastive text–image evaluator (CLIP-style, trained by genforge on a captioned data set's training
split) for CLIP score and R-precision of text-to-image models.

It is never the model that conditions a generator: its own word vocabulary, its own towers, its own seed,
and its file's sha256 goes into every result it scores. Image tower: four conv stages (GroupNorm, SiLU,
stride-2) → global mean → linear; text tower: :class:`~genforge.models.text_encoder.TextEncoder` over a
:class:`~genforge.models.text_encoder.WordTokenizer` of the training captions (held-out words read as
"unknown") → its pooled vector → linear. Both are L2-normalised; the loss is CLIP's symmetric InfoNCE with
a learned temperature (:func:`~genforge.models.clip.contrastive_loss`). Training is seeded, on one
thread, with deterministic algorithms (as the classifier evaluators), with random shifts of up to 1/8 of
the side.

Shape legend: N images, C channels, S side, D embedding width.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from genforge.data import ImageData
from genforge.evaluation.features.evaluator_training import _reproducible
from genforge.evaluation.progress import log
from genforge.io import atomic_path
from genforge.metrics.text_image import r_precision
from genforge.models.base import eval_mode
from genforge.models.clip import MAX_LOGIT_SCALE, contrastive_loss, conv_tower
from genforge.models.text_encoder import TextEncoder, WordTokenizer

__all__ = ["ContrastiveConfig", "ContrastiveEvaluator", "train_contrastive", "save_contrastive",
           "load_contrastive", "contrastive_for", "at_side", "CONTRASTIVE_VERSION", "ALIGN_SIDE"]

ALIGN_SIDE = 32  # the side the evaluator works at: larger images are resized to it (antialiased bicubic)

CONTRASTIVE_VERSION = 1  # bump when training changes what a config produces


@dataclass(kw_only=True)
class ContrastiveConfig:
    """The evaluator's shape and its training."""

    channels: int
    image_size: int
    words: list[str] = field(default_factory=list)
    text_len: int = 32
    width: int = 128  # D and the text tower's width
    image_width: int = 32  # channels of the first conv stage (×2 per stage, at most ×8)
    text_layers: int = 2
    seed: int = 0
    steps: int = 1500
    batch_size: int = 128
    lr: float = 2e-3
    num_threads: int = 1


class ContrastiveEvaluator(nn.Module):
    """Image and caption embeddings in one space: ``embed_images`` uint8 [N, C, S, S] → [N, D] and
    ``embed_texts`` captions → [N, D], L2-normalised."""

    def __init__(self, config: ContrastiveConfig) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = WordTokenizer(config.words, config.text_len)
        self.image_tower, w = conv_tower(config.channels, config.image_width)  # the clip family's image tower
        self.image_head = nn.Linear(w, config.width)
        self.text_tower = TextEncoder(self.tokenizer.vocab_size, config.text_len, config.width, config.text_layers)
        self.text_head = nn.Linear(config.width, config.width)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def _images(self, x: Tensor) -> Tensor:
        h = self.image_tower(x.float() / 127.5 - 1).mean(dim=(2, 3))  # [N, W]
        return F.normalize(self.image_head(h), dim=-1)

    def _texts(self, ids: Tensor) -> Tensor:
        return F.normalize(self.text_head(self.text_tower(ids)[2]), dim=-1)

    @torch.no_grad()
    def embed_images(self, x: Tensor, batch_size: int = 256) -> Tensor:
        """uint8 [N, C, S, S] (the evaluator's C and S) → float32 [N, D]."""
        c, s = self.config.channels, self.config.image_size
        if x.dtype != torch.uint8 or tuple(x.shape[1:]) != (c, s, s):
            raise ValueError(f"the contrastive evaluator takes uint8 [N, {c}, {s}, {s}], got {x.dtype} {list(x.shape)}")
        with eval_mode(self):
            return torch.cat([self._images(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])

    @torch.no_grad()
    def embed_texts(self, captions: list[str], batch_size: int = 256) -> Tensor:
        """Captions → float32 [N, D]; words it never saw read as "unknown", long captions are cut."""
        with eval_mode(self):
            ids = self.tokenizer.encode(captions, strict=False)
            return torch.cat([self._texts(ids[i:i + batch_size]) for i in range(0, ids.shape[0], batch_size)])

    def r_precision(self, images: Tensor, captions: list[str], pool: list[str], *, k: int = 100,
                    seed: int = 0) -> float:
        """Top-1 R-precision of uint8 images [N, C, S, S] whose true captions are ``captions`` (each in
        ``pool``) among k candidates from ``pool`` (distinct texts only)."""
        texts = sorted(set(pool))
        index = {t: i for i, t in enumerate(texts)}
        missing = [c for c in captions if c not in index]
        if missing:
            raise ValueError(f"caption {missing[0]!r} is not in the candidate pool")
        truth = torch.tensor([index[c] for c in captions])
        return r_precision(self.embed_images(images), truth, self.embed_texts(texts), k=k,
                           generator=torch.Generator().manual_seed(seed))


def _shift(x: Tensor, g: torch.Generator) -> Tensor:
    """Random translations of up to S/8 pixels, edge-padded: uint8 [B, C, S, S] → same."""
    s = x.shape[-1]
    m = max(1, s // 8)
    padded = F.pad(x.float(), (m, m, m, m), mode="replicate")
    dx, dy = (int(v) for v in torch.randint(0, 2 * m + 1, (2,), generator=g))
    return padded[..., dy:dy + s, dx:dx + s].round().to(torch.uint8)


def train_contrastive(data: ImageData, config: ContrastiveConfig | None = None, *,
                      progress: bool = True) -> tuple[ContrastiveEvaluator, dict]:
    """Train the evaluator on ``data``'s training images and captions; returns it and a report with its
    held-out top-1 R-precision among 32 candidates on the test split (real images: the ceiling)."""
    if not data.captioned:
        raise ValueError(f"dataset {data.name!r} has no captions: a contrastive evaluator needs them")
    config = config or ContrastiveConfig(channels=data.channels, image_size=data.image_size)
    config.channels, config.image_size = data.channels, data.image_size
    if not config.words:
        config.words = WordTokenizer.fit(data.train_text, config.text_len).words
    with _reproducible(config.seed, config.num_threads):
        net = ContrastiveEvaluator(config)
        ids = net.tokenizer.encode(data.train_text, strict=False)  # [N, L]
        opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=0.01)
        g = torch.Generator().manual_seed(config.seed + 1)
        n = data.train_x.shape[0]
        b = min(config.batch_size, n)
        for step in range(config.steps):
            lr = config.lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * step / config.steps))
            for group in opt.param_groups:
                group["lr"] = lr
            pick = torch.randperm(n, generator=g)[:b]
            images = _shift(data.train_x[pick], g)
            loss = contrastive_loss(net._images(images), net._texts(ids[pick]), net.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if progress and (step + 1) % max(1, config.steps // 5) == 0:
                log(True, f"contrastive evaluator: step {step + 1}/{config.steps}, loss {float(loss.detach()):.3f}")
    net.eval()
    k = min(32, len(set(data.test_text)))
    report = {"steps": config.steps, "final_loss": float(loss.detach()), "heldout_r_precision_k": k,
              "heldout_r_precision": net.r_precision(data.test_x, data.test_text, data.test_text, k=k)}
    return net, report


def save_contrastive(net: ContrastiveEvaluator, path: str | Path, report: dict) -> str:
    """Write the weights (config and report in the safetensors metadata) atomically; returns the sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"config": json.dumps(asdict(net.config)), "report": json.dumps(report),
            "version": str(CONTRASTIVE_VERSION)}
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp), metadata=meta)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_contrastive(path: str | Path) -> tuple[ContrastiveEvaluator, dict, str]:
    """(evaluator, its training report, the file's sha256) from :func:`save_contrastive`'s file."""
    from safetensors import safe_open

    path = Path(path)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if meta.get("version") != str(CONTRASTIVE_VERSION) or "config" not in meta:
        raise ValueError(f"{path} is not a contrastive evaluator of version {CONTRASTIVE_VERSION}")
    net = ContrastiveEvaluator(ContrastiveConfig(**json.loads(meta["config"])))
    net.load_state_dict(load_file(str(path)), strict=True)
    return net.eval(), json.loads(meta.get("report", "{}")), hashlib.sha256(path.read_bytes()).hexdigest()


def at_side(data: ImageData, side: int = ALIGN_SIDE) -> ImageData:
    """``data`` with both splits resized to at most ``side`` (antialiased bicubic; as is when no larger)."""
    from dataclasses import replace

    from genforge.data.transforms import resize_center_crop

    if data.image_size <= side:
        return data
    return replace(data, train_x=resize_center_crop(data.train_x, side), test_x=resize_center_crop(data.test_x, side))


def contrastive_for(data: ImageData, cache_dir: str | Path, *, steps: int = 1500, seed: int = 0,
                    progress: bool = True) -> tuple[ContrastiveEvaluator, dict, str]:
    """The contrastive evaluator of ``data`` (at :data:`ALIGN_SIDE` at most), trained once and cached under
    ``cache_dir/evaluators`` by the data's sha256, its captions, the config and :data:`CONTRASTIVE_VERSION`:
    (evaluator, its training report, its file's sha256)."""
    from genforge.evaluation.features.evaluators import data_sha256

    data = at_side(data)
    config = ContrastiveConfig(channels=data.channels, image_size=data.image_size, steps=steps, seed=seed)
    key = hashlib.sha256(f"{data_sha256(data)}|{'|'.join(data.train_text)}|{asdict(config)}|"
                         f"{CONTRASTIVE_VERSION}".encode()).hexdigest()[:16]
    path = Path(cache_dir) / "evaluators" / f"contrastive-{data.name}-{key}.safetensors"
    if not path.is_file():
        log(progress, f"training the contrastive text–image evaluator of {data.name} ({steps} steps, once; cached "
                      f"in {path.parent}) …")
        net, report = train_contrastive(data, config, progress=progress)
        save_contrastive(net, path, report)
    return load_contrastive(path)
