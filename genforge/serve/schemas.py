"""Request bodies in OpenAI's shapes (pydantic, strict: a string is not a number, unknown fields are refused).

Fields OpenAI defines that genforge cannot honour are accepted only at their
neutral value (``logprobs: null``, ``presence_penalty: 0``, ...) and refused
with a message naming them otherwise. Image requests also carry the family's
own sample options (``steps``, ``sampler``, ``guidance``, ...) as extra fields,
which the family's options dataclass validates, as for ``genforge sample``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SEED_MAX = 2**63 - 1


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    include_usage: bool = True


class CompletionRequest(BaseModel):
    """``POST /v1/completions``; ``top_k`` is genforge's addition."""

    model_config = ConfigDict(extra="forbid", strict=True)
    model: str = Field(min_length=1, max_length=256)
    prompt: str | list[str] | None = None
    max_tokens: int = Field(16, ge=1)
    temperature: float = Field(1.0, ge=0, allow_inf_nan=False)
    top_p: float | None = Field(None, gt=0, le=1, allow_inf_nan=False)
    top_k: int | None = Field(None, ge=1)
    n: int = Field(1, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, le=SEED_MAX)
    stream: bool = False
    stream_options: StreamOptions | None = None
    echo: bool = False
    user: str | None = None
    # OpenAI fields accepted only at their neutral value
    logprobs: int | None = None
    best_of: int | None = None
    suffix: str | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None

    def unsupported(self) -> str | None:
        """The first field set to something genforge does not do, or None."""
        for name, neutral in (("logprobs", None), ("suffix", None), ("presence_penalty", 0.0),
                              ("frequency_penalty", 0.0)):
            if getattr(self, name) != neutral:
                return name
        if self.best_of not in (None, 1):
            return "best_of"
        if self.logit_bias:
            return "logit_bias"
        return None

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def prompts(self) -> list[str | None]:
        return self.prompt if isinstance(self.prompt, list) else [self.prompt]


class ChatRequest(BaseModel):
    """``POST /v1/chat/completions``: only ``model`` is read (genforge's language models have no chat format)."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1, max_length=256)


class ImageGenerationRequest(BaseModel):
    """``POST /v1/images/generations``; ``label``, ``seed`` and the family's sample options are genforge's.

    ``prompt`` selects the class of a class-conditional model by id or name (when ``label`` is not
    given); an unconditional model takes none.
    """

    model_config = ConfigDict(extra="allow", strict=True)
    model: str = Field(min_length=1, max_length=256)
    prompt: str | None = None
    n: int = Field(1, ge=1)
    response_format: Literal["b64_json", "url"] | None = "b64_json"
    size: str | None = None
    seed: int | None = Field(None, ge=0, le=SEED_MAX)
    label: int | str | None = None
    user: str | None = None
    quality: str | None = None
    style: str | None = None

    def family_options(self) -> dict[str, Any]:
        """The extra fields: the family's sample options, validated by the model's options dataclass."""
        return dict(self.model_extra or {})
