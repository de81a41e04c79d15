"""The protocol record stored with every evaluation number, and the rule that says when two are comparable.

A metric value means little without how it was measured: FID on 2,000 samples
is not FID on 10,000, an evaluator classifier's features are not Inception's,
and a reference made of the first N MNIST test images (which are ordered) is
not a random one. Every result in ``eval.json`` therefore carries a
:class:`Protocol`, and :func:`incompatibilities` compares two of them field by
field. Two results are *comparable* exactly when every protocol field matches;
what was evaluated (run directory, model weights) is kept outside the protocol.

Fields (all plain JSON):

    metric               result name (``fid``, ``kid``, ``bpc`` …; see ``METRICS``)
    extractor            feature extractor / classifier id (``evaluator:mnist``,
                         ``inception-v3-fid``); ``""`` when none is involved
    extractor_sha256     sha256 of the extractor's weights file; ``""`` when none
    feature_dim          width of the features the metric is computed on (0: none)
    n_generated          generated samples used (0: the metric uses none)
    n_reference          reference examples used (images, or held-out tokens for text)
    reference_split      ``test`` / ``train`` (images), ``val`` (text)
    reference_subsample  ``shuffled``: a seeded permutation's first ``n_reference``;
                         ``all``: the whole split (text likelihood), never "the first N"
    subsample_seed       seed of that permutation
    reference_sha256     sha256 of the reference data actually used (pixels or token ids)
    seed                 seed of generation and of any sampling inside the metric
    dataset              dataset name (``mnist``, ``imagefolder:/path``, ``text:...``)
    image_size, channels the images' square side and channels (0 for text)
    tokenizer            text: ``kind/vocab_size/sha256-prefix`` of the run's tokenizer file; ``""`` for images
    split_sizes          examples per split (images) or tokens and characters per split (text)
    params               everything else that changes the number: KID subsets, the k of
                         PRDC, IS splits, importance samples, decoding settings, the
                         sacrebleu signature …
    genforge_version     version that computed it

Results with different ``genforge_version`` are treated as incomparable: the
code that computes a metric may change between versions.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Sequence

from genforge import __version__

__all__ = ["METRICS", "PROTOCOL_FORMAT", "EvalError", "MetricInfo", "Protocol", "Report", "Result", "comparable",
           "format_value", "incompatibilities", "metric_info"]

PROTOCOL_FORMAT = "genforge-protocol/1"


class EvalError(ValueError):
    """An evaluation cannot be run as asked (bad samples file, inapplicable metric, missing run files)."""


def check_metric_names(metrics: Sequence[str] | None, known: Sequence[str], kind: str) -> tuple[str, ...] | None:
    """``metrics`` as a tuple (None stays None, meaning every metric); raises EvalError
    naming any that are not among the ``known`` ``kind`` metrics, or when none is named."""
    if metrics is None:
        return None
    metrics = tuple(metrics)
    unknown = [m for m in metrics if m not in known]
    if unknown:
        raise EvalError(f"unknown {kind} metric(s) {unknown}; choose from {', '.join(known)}")
    if not metrics:
        raise EvalError("--metrics names no metric")
    return metrics


@dataclass(frozen=True, kw_only=True)
class Protocol:
    """How one number was measured; see the module docstring for each field."""

    metric: str
    extractor: str = ""
    extractor_sha256: str = ""
    feature_dim: int = 0
    n_generated: int = 0
    n_reference: int = 0
    reference_split: str = ""
    reference_subsample: str = ""
    subsample_seed: int = 0
    reference_sha256: str = ""
    seed: int = 0
    dataset: str = ""
    image_size: int = 0
    channels: int = 0
    tokenizer: str = ""
    split_sizes: dict[str, int] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    genforge_version: str = __version__
    format: str = PROTOCOL_FORMAT

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-able), keys in field order."""
        return json.loads(json.dumps(asdict(self)))  # deep copy; tuples become lists as in a loaded file

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Protocol:
        """Inverse of :meth:`to_dict`; unknown keys (a newer format) raise ``EvalError``."""
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise EvalError(f"protocol record has unknown fields {sorted(unknown)} (written by a newer genforge?)")
        if "metric" not in data:
            raise EvalError("protocol record lacks 'metric'")
        return cls(**data)

    @property
    def id(self) -> str:
        """Short digest of the canonical JSON: equal protocols, equal ids."""
        return protocol_id(self.to_dict())

    def summary(self) -> str:
        """One line for tables: extractor, N generated/reference, split, seeds."""
        parts = []
        if self.extractor:
            parts.append(f"{self.extractor} ({self.feature_dim}-d)" if self.feature_dim else self.extractor)
        if self.n_generated:
            parts.append(f"{self.n_generated} gen")
        if self.n_reference:
            sub = (f", shuffled seed {self.subsample_seed}" if self.reference_subsample == "shuffled"
                   else f", {self.reference_subsample}" if self.reference_subsample else "")
            parts.append(f"{self.n_reference} {self.reference_split or 'ref'}{sub}")
        if self.tokenizer:
            parts.append(f"tok {self.tokenizer.split('/')[0]}")
        if self.n_generated:
            parts.append(f"seed {self.seed}")
        return "; ".join(parts)


@dataclass
class Result:
    """One number with its protocol.

    Attributes:
        metric: key of :data:`METRICS` (``fid``, ``precision``, ``bpc`` …).
        value: the number; None when it could not be computed.
        protocol: how it was measured.
        std: spread where the metric has one (KID over subsets, IS over splits), else None.
        details: secondary numbers (denominators, counts) that are reported but not compared.
    """

    metric: str
    value: float | None
    protocol: Protocol
    std: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "value": self.value, "std": self.std, "details": self.details,
                "protocol_id": self.protocol.id, "protocol": self.protocol.to_dict()}


@dataclass
class Report:
    """An evaluation's results, with its warnings, stage timings (seconds) and how the samples were drawn.

    ``images`` (uint8 ``[N, C, H, W]``) or ``texts`` hold the samples for a grid or an excerpt; they are
    not written to ``eval.json``.
    """

    results: list[Result]
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    generation: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    images: Any = None
    texts: list[str] | None = None


def protocol_id(data: dict[str, Any]) -> str:
    """12 hex digits of the sha256 of ``data`` as canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def _as_dict(p: Protocol | dict[str, Any]) -> dict[str, Any]:
    return p.to_dict() if isinstance(p, Protocol) else dict(p)


def _show(v: Any) -> str:
    s = json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else str(v)
    if isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v):
        s = v[:12] + "…"  # a sha256
    return s if len(s) <= 60 else s[:57] + "…"


def incompatibilities(a: Protocol | dict[str, Any], b: Protocol | dict[str, Any]) -> list[str]:
    """Why results measured under ``a`` and ``b`` cannot be compared: one line per differing field.

    ``params`` is compared key by key, so the reason names e.g. ``params.subset_size``.
    An empty list means the two are comparable.
    """
    da, db = _as_dict(a), _as_dict(b)
    reasons = []
    for key in sorted(set(da) | set(db)):
        va, vb = da.get(key), db.get(key)
        if va == vb:
            continue
        if key == "params" and isinstance(va, dict) and isinstance(vb, dict):
            for pk in sorted(set(va) | set(vb)):
                if va.get(pk) != vb.get(pk):
                    reasons.append(f"params.{pk}: {_show(va.get(pk, '(absent)'))} vs {_show(vb.get(pk, '(absent)'))}")
        else:
            shown_a, shown_b = (_show(d[key]) if key in d else "(absent)" for d in (da, db))
            reasons.append(f"{key}: {shown_a} vs {shown_b}")
    return reasons


def comparable(a: Protocol | dict[str, Any], b: Protocol | dict[str, Any]) -> bool:
    """True when every protocol field matches (see :func:`incompatibilities`)."""
    return not incompatibilities(a, b)


@dataclass(frozen=True)
class MetricInfo:
    """How to show and rank a result.

    Attributes:
        label: column title.
        better: ``"lower"``, ``"higher"`` or ``""`` (not ranked: e.g. density, where 1 means "like the data").
        fmt: format spec of the value.
        group: ``"image"`` or ``"text"``.
        table: the leaderboard table the metric is shown in (metrics of one kind of measurement).
    """

    label: str
    better: str
    fmt: str
    group: str
    table: str


_SAMPLES = "Samples vs reference images"
_RECON = "Reconstruction of reference images"
_IMAGE_NLL = "Likelihood of reference images"
_ALIGN = "Text–image alignment (images drawn from the reference captions)"
_TEXT_NLL = "Likelihood of the validation text"
_TEXT_SAMPLES = "Diversity of generated text"
_TEXT_BLEU = "Continuations of held-out prompts"
_APP_TABLES = {"inpaint": "Inpainting of test images (masked region)", "upscale": "Super-resolution of test images",
               "augment": "Generated data as classifier training data"}

METRICS: dict[str, MetricInfo] = {
    "fid": MetricInfo("FID", "lower", ".3f", "image", _SAMPLES),
    "kid": MetricInfo("KID", "lower", ".4g", "image", _SAMPLES),
    "precision": MetricInfo("precision", "higher", ".3f", "image", _SAMPLES),
    "recall": MetricInfo("recall", "higher", ".3f", "image", _SAMPLES),
    "density": MetricInfo("density", "", ".3f", "image", _SAMPLES),
    "coverage": MetricInfo("coverage", "higher", ".3f", "image", _SAMPLES),
    "is": MetricInfo("IS (classifier)", "higher", ".3f", "image", _SAMPLES),
    "modes_hit": MetricInfo("modes hit", "higher", ".0f", "image", _SAMPLES),
    "modes_kl": MetricInfo("mode KL", "lower", ".4f", "image", _SAMPLES),
    "clip_score": MetricInfo("CLIP score", "higher", ".2f", "image", _ALIGN),
    "r_precision": MetricInfo("R-precision", "higher", ".3f", "image", _ALIGN),
    "r_precision_real": MetricInfo("R-precision of real images", "", ".3f", "image", _ALIGN),
    "r_precision_chance": MetricInfo("R-precision by chance", "", ".3f", "image", _ALIGN),
    "category_accuracy": MetricInfo("category accuracy", "higher", ".3f", "image", _ALIGN),
    "mse": MetricInfo("MSE", "lower", ".5f", "image", _RECON),
    "psnr": MetricInfo("PSNR dB", "higher", ".2f", "image", _RECON),
    "ssim": MetricInfo("SSIM", "higher", ".4f", "image", _RECON),
    "nll": MetricInfo("NLL nats", "lower", ".2f", "image", _IMAGE_NLL),
    "bits_per_dim": MetricInfo("bits/dim", "lower", ".4f", "image", _IMAGE_NLL),
    "loss": MetricInfo("val loss", "lower", ".4f", "text", _TEXT_NLL),
    "perplexity": MetricInfo("perplexity", "lower", ".3f", "text", _TEXT_NLL),
    "bpc": MetricInfo("bits/char", "lower", ".4f", "text", _TEXT_NLL),
    "distinct_1": MetricInfo("distinct-1", "higher", ".4f", "text", _TEXT_SAMPLES),
    "distinct_2": MetricInfo("distinct-2", "higher", ".4f", "text", _TEXT_SAMPLES),
    "self_bleu": MetricInfo("self-BLEU", "lower", ".2f", "text", _TEXT_SAMPLES),
    "bleu": MetricInfo("BLEU", "higher", ".2f", "text", _TEXT_BLEU),
    "cas": MetricInfo("CAS (trained on generated)", "higher", ".4f", "image", _APP_TABLES["augment"]),
    "cas_real": MetricInfo("same, trained on real", "", ".4f", "image", _APP_TABLES["augment"]),
}
TABLES = (_SAMPLES, _ALIGN, _RECON, _IMAGE_NLL, *_APP_TABLES.values(), _TEXT_NLL, _TEXT_SAMPLES, _TEXT_BLEU)  # leaderboard order


_APP_MEASURES = {"psnr": ("PSNR dB", "higher", ".2f"), "ssim": ("SSIM", "higher", ".4f"),
                 "accuracy": ("accuracy", "higher", ".4f"), "fid": ("FID", "lower", ".3f"),
                 "seconds_per_image": ("s/image", "", ".4f"), "baseline": ("accuracy, real subset only", "", ".4f"),
                 "gain": ("accuracy gain", "higher", "+.4f")}


def metric_info(name: str) -> MetricInfo:
    """The :class:`MetricInfo` of ``name``; application metrics (``inpaint/center/psnr``,
    ``upscale/x4/bicubic/ssim``, ``augment/gain`` …) take their measure's, unranked for baselines; other
    unknown names get an unranked default."""
    if name in METRICS:
        return METRICS[name]
    parts = name.split("/")
    if len(parts) >= 2 and parts[0] in _APP_TABLES and parts[-1] in _APP_MEASURES:
        label, better, fmt = _APP_MEASURES[parts[-1]]
        baseline = any(p in ("meanfill", "bicubic") for p in parts[1:-1])
        return MetricInfo(" ".join(parts[1:-1] + [label]), "" if baseline else better, fmt, "image",
                          _APP_TABLES[parts[0]])
    return MetricInfo(name, "", ".4g", "image", "Other metrics")


def format_value(name: str, value: float | None, std: float | None = None) -> str:
    """``value`` (± ``std``) with the metric's format; ``n/a`` for None."""
    if value is None:
        return "n/a"
    fmt = metric_info(name).fmt
    text = format(value, fmt)
    if std is not None:
        text += " ± " + format(std, fmt)
    return text
