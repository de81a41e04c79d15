"""One parser for sample requests: a pipeline's own fields plus the family's sample options.

The same mapping arrives from ``--set sample.KEY=VALUE``, CLI flags, an HTTP
request or a Python call, and is validated here in one go, so an unknown key
is reported with every valid key of both parts.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from genforge.config import ConfigError, did_you_mean, from_dict
from genforge.models.conditions import KEYS, refuse


def option_names(*classes: type) -> list[str]:
    """Sorted field names of the given dataclasses."""
    return sorted({f.name for cls in classes for f in dataclasses.fields(cls)})


def parse_options(request_cls: type, options_cls: type, raw: dict[str, Any], *,
                  prefix: str = "sample", model: Any = None, name: str = "") -> tuple[Any, Any]:
    """Split ``raw`` between ``request_cls`` and ``options_cls`` and build both strictly.

    Returns:
        (request, options) dataclass instances.

    Raises:
        ConfigError: a condition ``model`` does not take (label, prompt, image, strength, mask; naming it and
            what the model takes), an unknown key (naming it, the closest valid key and every valid one), a
            wrong type or an out-of-range value (naming the key).
    """
    raw = {k: v for k, v in raw.items() if v is not None or k not in KEYS}  # an absent condition is no condition
    request_keys = {f.name for f in dataclasses.fields(request_cls)}
    accepted = None if model is None else set(model.accepted_conditions())
    valid = [k for k in option_names(request_cls, options_cls) if accepted is None or KEYS.get(k, "") in accepted
             or k not in KEYS]  # the condition fields this model takes, and every other field
    for key in raw:
        if key in KEYS and accepted is not None and KEYS[key] not in accepted:  # a condition it does not take
            raise refuse(model, key, name)
        if key not in valid:
            raise ConfigError(f"unknown sample option {key!r}{did_you_mean(key, valid)} "
                              f"(valid options: {', '.join(valid)})", key=f"{prefix}.{key}")
    request = from_dict(request_cls, {k: v for k, v in raw.items() if k in request_keys}, prefix=prefix)
    options = from_dict(options_cls, {k: v for k, v in raw.items() if k not in request_keys}, prefix=prefix)
    return request, options


def as_dict(*parts: Any) -> dict[str, Any]:
    """Dataclass instances → one flat mapping of their fields (for a resolved ``sample:`` section)."""
    out: dict[str, Any] = {}
    for part in parts:
        out.update({f.name: getattr(part, f.name) for f in dataclasses.fields(part)})
    return out


def pick_fields(cls: type, options: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``options`` that are fields of dataclass ``cls`` and not None."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in options.items() if k in names and v is not None}
