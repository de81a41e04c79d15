"""Typed conditions: what a sample is generated *from*, and the one parser that builds them.

A family declares the kinds of condition it accepts (:meth:`GenerativeModel.accepted_conditions`, e.g.
``("label",)`` for a class-conditional GAN, ``("image",)`` for super-resolution, ``("text",)`` for a
text-to-image model) and those it cannot sample without (:meth:`GenerativeModel.required_conditions`).
The CLI flags (``--label``, ``--prompt``, ``--image``, ``--strength``, ``--mask``), a recipe's ``sample:``
section, Python and the HTTP API all hand plain values to :func:`parse_condition`, which refuses a kind
the model does not take in one line naming it and listing what the model takes, and returns one
:class:`Condition`. ``model.sample(n, condition=...)`` receives it (class-conditional families still take a
bare int or ``n`` labels too).

Shape legend: n rows (samples), C channels, s source side, S the model's image side, K classes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import torch
from torch import Tensor

from genforge.config import ConfigError, FieldError

if TYPE_CHECKING:
    from genforge.models.base import GenerativeModel

KINDS = ("label", "text", "image", "mask")
KEYS = {"label": "label", "prompt": "text", "image": "image", "strength": "image", "mask": "mask"}  # key → kind
SHOWN = {"label": "a class label (--label)", "text": "a text prompt (--prompt)",
         "image": "a source image (--image, --strength)", "mask": "a mask (--mask)"}


@dataclass(frozen=True, kw_only=True)
class Condition:
    """What ``n`` samples are generated from; every part is optional.

    Attributes:
        label: an int (every row), int64 [n] class ids, or float [n, K] class weights (rows sum to 1).
        text: one prompt per row (a tuple of n strings), encoded by the model's own text encoder.
        image: source images uint8 [n, C, s, s] (super-resolution input, img2img source).
        strength: how far from the source image generation may go, in [0, 1] (1 = as far as the model goes).
        mask: bool [n, 1, S, S], True = a pixel to generate (inpainting).
    """

    label: int | Tensor | None = None
    text: tuple[str, ...] | None = None
    image: Tensor | None = None
    strength: float = 1.0
    mask: Tensor | None = None

    def kinds(self) -> tuple[str, ...]:
        """The kinds this condition holds, in :data:`KINDS` order."""
        have = {"label": self.label is not None, "text": self.text is not None, "image": self.image is not None,
                "mask": self.mask is not None}
        return tuple(k for k in KINDS if have[k])

    def rows(self) -> int | None:
        """The number of rows it fixes (None when every part applies to any number of rows)."""
        for part in (self.text, self.image, self.mask, None if isinstance(self.label, int) else self.label):
            if part is not None:
                return len(part)
        return None

    def take(self, start: int, stop: int) -> Condition:
        """Rows ``start:stop`` (a batch of a larger request); parts shared by every row stay as they are."""
        def cut(part: Any) -> Any:
            return part if part is None or isinstance(part, int) else part[start:stop]

        return dataclasses.replace(self, label=cut(self.label), text=cut(self.text), image=cut(self.image),
                                   mask=cut(self.mask))

    def expand(self, n: int) -> Condition:
        """The condition for ``n`` rows: a single prompt or source image is repeated; other counts are refused."""
        text, image = self.text, self.image
        if text is not None and len(text) == 1 and n != 1:
            text = text * n
        if image is not None and image.shape[0] == 1 and n != 1:
            image = image.expand(n, *image.shape[1:])
        out = dataclasses.replace(self, text=text, image=image)
        rows = out.rows()
        if rows is not None and rows != n:
            raise ConfigError(f"the condition holds {rows} rows but {n} samples were asked for", key="sample.n")
        return out


def _concat(parts: list[Any], rows: list[int]) -> Any:
    """One part of several conditions, row-wise (an int label becomes its rows)."""
    if all(p is None for p in parts):
        return None
    if any(p is None for p in parts):
        raise ValueError("conditions of different kinds cannot share a batch")
    if isinstance(parts[0], tuple):
        return tuple(t for p in parts for t in p)
    return torch.cat([torch.full((n,), p) if isinstance(p, int) else p for p, n in zip(parts, rows)])


def label_classes(model: GenerativeModel) -> int:
    """How many class labels ``model`` can be given: K when it takes a ``label`` condition, else 0 (a model
    that knows class names but is conditioned on something else, e.g. text, takes no label)."""
    return model.num_classes if "label" in model.accepted_conditions() else 0


def concat(conditions: list[Condition], rows: list[int]) -> Condition:
    """Several requests' conditions (each of its own ``rows``, already expanded) as one batch's, row-wise;
    their kinds and strengths must agree."""
    if len({(c.kinds(), c.strength) for c in conditions}) > 1:
        raise ValueError("conditions of different kinds or strengths cannot share a batch")
    parts = {f: _concat([getattr(c, f) for c in conditions], rows) for f in ("label", "text", "image", "mask")}
    return Condition(**parts, strength=conditions[0].strength)


def label_of(condition: Any) -> Any:
    """The label part of a ``sample(condition=...)`` argument: a :class:`Condition`'s ``label``, or the
    argument itself (an int, labels, class weights or None) for callers that pass labels directly."""
    return condition.label if isinstance(condition, Condition) else condition


def _describe(model: GenerativeModel) -> str:
    kinds = model.accepted_conditions()
    return ", ".join(SHOWN[k] for k in kinds) if kinds else "no condition (it is an unconditional model)"


def refuse(model: GenerativeModel, key: str, name: str = "") -> ConfigError:
    """The one-line error for a condition ``key`` (label, prompt, image, strength, mask) the model does not take."""
    who = f"{name} (a {model.family} model)" if name else f"this {model.family} model"
    return ConfigError(f"{who} does not take {SHOWN[KEYS[key]].split(' (')[0]} ({key}); it takes "
                       f"{_describe(model)}", key=f"sample.{key}")


def label_id(model: GenerativeModel, label: int | str) -> int:
    """A class label as its id: an int in [0, K), or one of the class names recorded at training (case, spaces,
    ``_`` and ``-`` ignored; a unique prefix is enough)."""
    k = model.num_classes
    if isinstance(label, str) and label.strip().lstrip("-").isdigit():
        label = int(label)
    if isinstance(label, int):
        if not 0 <= label < k:
            raise ConfigError(f"label must be in [0, {k - 1}], got {label}", key="sample.label")
        return label
    names = model.class_names

    def norm(text: str) -> str:
        return "".join(ch for ch in text.lower() if ch.isalnum())

    exact = [i for i, c in enumerate(names) if norm(c) == norm(label)]
    hits = exact or [i for i, c in enumerate(names) if norm(c).startswith(norm(label)) and norm(label)]
    if len(hits) == 1:
        return hits[0]
    shown = ", ".join(f"{i}={c}" for i, c in enumerate(names)) or "none recorded (give the label id)"
    why = "matches several classes" if hits else "is not a class name"
    raise ConfigError(f"label {label!r} {why}; classes: {shown}", key="sample.label")


def _prompts(prompt: str | Sequence[str]) -> tuple[str, ...]:
    texts = (prompt,) if isinstance(prompt, str) else tuple(prompt)
    if not texts or any(not isinstance(t, str) or not t.strip() for t in texts):
        raise ConfigError("prompt must be a non-empty text (or a list of them)", key="sample.prompt")
    return texts


def parse_condition(model: GenerativeModel, raw: dict[str, Any], *, extra: Sequence[str] = (),
                    name: str = "") -> Condition | None:
    """Build the :class:`Condition` of plain values, checked against what ``model`` accepts.

    Args:
        raw: any of ``label`` (id, class name, n ids or class weights), ``prompt`` (a text or one per row),
            ``image`` (uint8 [n, C, s, s]), ``strength`` (in [0, 1]), ``mask`` (bool [n, 1, S, S]); None
            values are ignored.
        extra: kinds the caller handles beyond sampling (``genforge inpaint`` adds ``image`` and ``mask``).
        name: the run's name, for messages.

    Returns:
        None when ``raw`` holds no condition.

    Raises:
        ConfigError: a kind the model does not take (naming it and what the model takes), a label that is
            no class, an empty prompt, a strength outside [0, 1]; ``key`` is the field.
    """
    given = {k: v for k, v in raw.items() if k in KEYS and v is not None}
    accepted = set(model.accepted_conditions()) | set(extra)
    for key in given:
        if KEYS[key] not in accepted:
            raise refuse(model, key, name)
    if not given:
        return None
    label = given.get("label")
    if isinstance(label, (int, str)):
        label = label_id(model, label)
    elif label is not None:
        label = torch.as_tensor(label)
        if not label.is_floating_point():
            label = torch.as_tensor([label_id(model, int(v)) for v in label.tolist()], dtype=torch.long)
    strength = float(given.get("strength", 1.0))
    if not 0.0 <= strength <= 1.0:
        raise ConfigError(f"strength must be in [0, 1], got {strength}", key="sample.strength")
    text = _prompts(given["prompt"]) if "prompt" in given else None
    condition = Condition(label=label, text=text, image=given.get("image"), strength=strength, mask=given.get("mask"))
    try:
        model.check_condition(condition)
    except FieldError as e:
        raise ConfigError(f"invalid value: sample.{e}", key=f"sample.{e.field}") from None
    return condition
