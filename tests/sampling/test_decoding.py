"""The one decode loop: GPT.sample, TextPipeline and TextEngine give the same tokens for a seeded request; a second
language-model family defined here decodes through the pipeline and the engine with no other file changed; the
no-cache reference; a job whose prefill fails leaves the others alone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor, nn

from genforge.data.tokenizers import CharTokenizer
from genforge.models import decoding
from genforge.models.base import GenerativeModel, ModelConfig
from genforge.models.capabilities import LanguageModel, LanguageModelOptions, next_tokens
from genforge.models.decoding import DecodeLoop
from genforge.models.gpt import GPT, GPTConfig
from genforge.sampling.engine import TextEngine, TextPiece
from genforge.sampling.text import TextPipeline, TextRequest

TEXT = "the quick brown fox jumps over the lazy dog. " * 20


def engine_texts(pipe: TextPipeline, requests: list[tuple[TextRequest, dict]]) -> list[list[str]]:
    """Every (request, options) submitted at once to one engine: the generated texts of each."""
    engine = TextEngine(pipe, max_rows=8)
    outs = [[""] * r.n for r, _ in requests]
    try:
        jobs = []
        for k, (request, options) in enumerate(requests):
            def sink(event, k=k):
                if isinstance(event, TextPiece):
                    outs[k][event.index] += event.text
            jobs.append(engine.submit(request, options, sink=sink))
        assert all(job.wait(60) for job in jobs)
    finally:
        engine.close()
    return outs


# ---------------------------------------------------------------------------------------------- GPT, three ways
@pytest.fixture(scope="module")
def gpt_pipe() -> TextPipeline:
    torch.manual_seed(0)
    tok = CharTokenizer.from_text(TEXT)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=2, n_head=2, n_embd=32)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(6.0) if p.ndim >= 2 else None  # peaked logits: a wrong token would show
    return TextPipeline(model, tok)


@pytest.mark.parametrize("options", [{"max_new_tokens": 40, "temperature": 0.9, "top_k": 5},
                                     {"max_new_tokens": 30, "temperature": 0.0},
                                     {"max_new_tokens": 35, "temperature": 1.3, "top_p": 0.8}])
def test_gpt_sample_pipeline_and_engine_give_the_same_tokens(gpt_pipe, options):
    model, tok = gpt_pipe.model, gpt_pipe.tokenizer
    request = TextRequest(prompt="the lazy", n=3, seed=11)
    ids = model.sample(3, condition=tok.encode("the lazy"), generator=torch.Generator().manual_seed(11), **options)
    sampled = [tok.decode(row[len("the lazy"):]) for row in ids.tolist()]  # 40 tokens: the window slides
    piped = [t[len("the lazy"):] for t in gpt_pipe.generate(request, options)]
    beside = (TextRequest(prompt="dog", n=2, seed=1), {"max_new_tokens": 25, "temperature": 1.0})
    served = engine_texts(gpt_pipe, [beside, (request, options)])[1]
    uncached = [t[len("the lazy"):] for t in gpt_pipe.generate(request, options, use_cache=False)]
    assert sampled == piped == served == uncached
    assert len(set(sampled)) > 1 or options["temperature"] == 0


def test_decode_loop_jobs_joining_midway_get_their_own_tokens(gpt_pipe):
    model = gpt_pipe.model
    prompts = [torch.tensor([[1, 2, 3]]).expand(2, -1), torch.tensor([[4, 5, 6, 7, 8]])]
    alone = [list(decoding.stream(model, p, 30, generator=torch.Generator().manual_seed(k), temperature=1.0))
             for k, p in enumerate(prompts)]
    loop = DecodeLoop(model, 5)
    first = loop.add(prompts[0], 30, generator=torch.Generator().manual_seed(0), temperature=1.0)
    got: dict[Any, list[Tensor]] = {first: []}
    for step in range(40):
        if step == 7:  # joins a running batch, into slots 2..2 while rows 0-1 are at another length
            second = loop.add(prompts[1], 30, generator=torch.Generator().manual_seed(1), temperature=1.0)
            got[second] = []
        for job, tokens in loop.step():
            got[job].append(tokens)
    assert first.done and second.done and loop.free == [0, 1, 2, 3, 4] and loop.steps > 30
    for want, job in zip(alone, (first, second)):
        assert torch.equal(torch.stack(got[job], 1), torch.stack(want, 1))
        assert torch.equal(job.new_ids, torch.stack(want, 1))


# ---------------------------------------------------------------------------------------------- a second family
@dataclass(kw_only=True)
class BigramConfig(ModelConfig):
    task: ClassVar[str] = "text"
    family: str = "bigram"
    vocab_size: int = 0


class Bigram(GenerativeModel, LanguageModel):
    """A toy language model: logits = table[newest token] + bias[its place in the window of at most 4 tokens].

    Its cache holds each slot's place in the window; a window longer than 4 slides to its last 2 tokens.
    """

    config_class: ClassVar[type[BigramConfig]] = BigramConfig
    family: ClassVar[str] = "bigram"
    sample_options: ClassVar[type[LanguageModelOptions]] = LanguageModelOptions
    WINDOW = 4

    def __init__(self, config: BigramConfig) -> None:
        super().__init__(config)
        g = torch.Generator().manual_seed(0)
        self.table = nn.Parameter(torch.randn(config.vocab_size, config.vocab_size, generator=g) * 3)  # (V, V)
        self.bias = nn.Parameter(torch.randn(self.WINDOW, config.vocab_size, generator=g))  # (WINDOW, V)

    @property
    def context_length(self) -> int:
        return self.WINDOW

    def window_start(self, length: int, start: int | None) -> int:
        if start is None:
            return max(0, length - self.WINDOW)
        return start if length - start <= self.WINDOW else length - 2

    def new_slots(self, slots: int) -> list[int]:
        return [0] * slots  # the place of each slot's newest token in its window

    @torch.no_grad()
    def prefill(self, ids: Tensor, cache: list[int], slots: Tensor) -> Tensor:
        for s in slots.tolist():
            cache[s] = ids.shape[1] - 1
        return self.table[ids[:, -1]] + self.bias[ids.shape[1] - 1]  # (n, V)

    @torch.no_grad()
    def decode(self, tokens: Tensor, cache: list[int], slots: Tensor) -> Tensor:
        places = []
        for s in slots.tolist():
            cache[s] += 1
            places.append(cache[s])
        return self.table[tokens] + self.bias[places]  # (B, V)

    def sample(self, n: int, *, condition: Any = None, generator: torch.Generator | None = None,
               **options: Any) -> Tensor:
        opts = self.parse_sample_options(options)
        prompt = torch.as_tensor(condition if condition is not None else [0]).expand(n, -1)
        new = list(decoding.stream(self, prompt, opts.max_new_tokens, generator=generator, **opts.decoding()))
        return torch.cat([prompt, torch.stack(new, 1)], 1)


def bigram_reference(model: Bigram, prompt: list[int], n: int, steps: int, seed: int,
                     **options: Any) -> list[list[int]]:
    """The bigram's tokens for ``n`` rows decoded by hand: its window rule and logits, without any cache."""
    ids, start, g = torch.tensor([prompt] * n), None, torch.Generator().manual_seed(seed)  # (n, P)
    for _ in range(steps):
        start = model.window_start(ids.shape[1], start)
        logits = (model.table[ids[:, -1]] + model.bias[ids.shape[1] - 1 - start]).detach()  # (n, V)
        ids = torch.cat([ids, next_tokens(logits, g, **options)[:, None]], 1)
    return ids[:, len(prompt):].tolist()


@pytest.fixture(scope="module")
def bigram_pipe() -> TextPipeline:
    tok = CharTokenizer.from_text(TEXT)
    return TextPipeline(Bigram(BigramConfig(vocab_size=tok.vocab_size)), tok)


def test_a_second_family_decodes_through_the_pipeline_and_the_engine(bigram_pipe):
    model, tok = bigram_pipe.model, bigram_pipe.tokenizer
    requests = [(TextRequest(prompt="the fox", n=2, seed=4), {"max_new_tokens": 20, "temperature": 1.0}),
                (TextRequest(prompt="a", n=1, seed=9), {"max_new_tokens": 15, "temperature": 0.7, "top_k": 3}),
                (TextRequest(prompt="dog", n=1, seed=2), {"max_new_tokens": 12, "temperature": 0.0})]
    served = engine_texts(bigram_pipe, requests)
    for (request, options), texts in zip(requests, served):
        piped = [t[len(request.prompt):] for t in bigram_pipe.generate(request, options)]
        assert piped == texts
        opts = model.parse_sample_options(options)
        want = bigram_reference(model, tok.encode(request.prompt), request.n, opts.max_new_tokens, request.seed,
                                **opts.decoding())
        assert texts == [tok.decode(row) for row in want]
    sampled = model.sample(2, condition=tok.encode("the fox"), generator=torch.Generator().manual_seed(4),
                           max_new_tokens=20, temperature=1.0)
    assert [tok.decode(row[7:]) for row in sampled.tolist()] == served[0]


def test_the_no_cache_reference_and_a_failing_prefill(bigram_pipe):
    model = bigram_pipe.model
    prompt = torch.tensor([[1, 2, 3, 4, 5, 6]]).expand(3, -1)
    runs = [torch.stack(list(decoding.stream(model, prompt, 25, generator=torch.Generator().manual_seed(3),
                                             temperature=1.0, use_cache=use_cache)), 1) for use_cache in (True, False)]
    assert torch.equal(runs[0], runs[1])

    class Flaky(Bigram):
        def prefill(self, ids: Tensor, cache: list[int], slots: Tensor) -> Tensor:
            if ids.shape[1] == 1:
                raise ValueError("a window of 1 token cannot be encoded")
            return super().prefill(ids, cache, slots)

    flaky = Flaky(model.config)
    loop = DecodeLoop(flaky, 4)
    bad = loop.add(torch.tensor([[0]]), 5)
    good = loop.add(prompt, 25, generator=torch.Generator().manual_seed(3), temperature=1.0)
    while loop.jobs:
        loop.step()
    assert isinstance(bad.error, ValueError) and bad.done and bad.generated == 0
    assert torch.equal(good.new_ids, runs[0]) and loop.free == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="1 token"):
        list(decoding.stream(flaky, torch.tensor([[0]]), 3))
