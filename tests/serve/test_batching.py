"""Continuous batching and image batching: a seeded request gives the same result alone or beside others."""

from __future__ import annotations

import threading

import pytest
import torch

from genforge.data.tokenizers import CharTokenizer
from genforge.models.gpt import GPT, GPTConfig
from genforge.models.rng import RowGenerators, rand, randint, randn
from genforge.sampling.batcher import ImageBatcher
from genforge.sampling.engine import JobDone, QueueFull, SampleDone, TextEngine, TextPiece, Tokens
from genforge.sampling.images import ImagePipeline
from genforge.sampling.text import TextPipeline, TextRequest
from genforge.tasks import open_run

TEXT = "the quick brown fox jumps over the lazy dog. " * 20


@pytest.fixture(scope="module")
def pipe() -> TextPipeline:
    torch.manual_seed(0)
    tok = CharTokenizer.from_text(TEXT)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=2, n_head=2, n_embd=32)).eval()
    return TextPipeline(model, tok)


def _run(engine: TextEngine, requests) -> list[list[str]]:
    """Submit every (request, options) at once; the texts of each, and check the event protocol."""
    outs = [[""] * r.n for r, _ in requests]
    events: list[list] = [[] for _ in requests]
    jobs = []
    for k, (request, options) in enumerate(requests):
        def sink(event, k=k):
            events[k].append(event)
            if isinstance(event, TextPiece):
                outs[k][event.index] += event.text
        jobs.append(engine.submit(request, options, sink=sink))
    for job in jobs:
        assert job.wait(60)
    for (request, options), ev in zip(requests, events):
        assert isinstance(ev[-1], JobDone) and ev[-1].error is None
        assert sum(e.count for e in ev if isinstance(e, Tokens)) == ev[-1].completion_tokens
        assert sorted(e.index for e in ev if isinstance(e, SampleDone)) == list(range(request.n))
    return outs


REQUESTS = [  # sliding windows (block 16), stop strings, several samples, each its own options
    (TextRequest(prompt="the", n=2, seed=3, stop=("x",)), {"max_new_tokens": 40, "temperature": 1.0}),
    (TextRequest(prompt="quick brown", n=1, seed=5), {"max_new_tokens": 25, "temperature": 0.7, "top_k": 5}),
    (TextRequest(prompt="dog", n=3, seed=9), {"max_new_tokens": 30, "temperature": 1.2, "top_p": 0.9}),
    (TextRequest(prompt="a lazy fox jumps over the dog", n=1, seed=1), {"max_new_tokens": 12, "temperature": 0}),
]


def test_a_seeded_request_gives_the_same_text_alone_beside_others_and_as_genforge_sample(pipe):
    engine = TextEngine(pipe, max_rows=8)
    try:
        alone = [_run(engine, [r])[0] for r in REQUESTS]
        together = _run(engine, REQUESTS)
        reference = [pipe.generate(r, o) for r, o in REQUESTS]
    finally:
        engine.close()
    assert together == alone
    for (request, _), texts, ref in zip(REQUESTS, alone, reference):
        assert [request.prompt + t for t in texts] == ref


def test_requests_join_and_leave_a_running_batch(pipe):
    engine = TextEngine(pipe, max_rows=4)
    rows_seen = []
    engine.on_batch = rows_seen.append
    try:
        long = (TextRequest(prompt="the", n=1, seed=0), {"max_new_tokens": 60})
        first = engine.submit(*long, sink=lambda e: None)
        while engine.steps < 5:  # the long request is decoding alone
            threading.Event().wait(0.001)
        short = _run(engine, [(TextRequest(prompt="dog", n=2, seed=4), {"max_new_tokens": 5})])
        assert first.wait(60)
    finally:
        engine.close()
    assert short == [_run_alone(pipe, TextRequest(prompt="dog", n=2, seed=4), {"max_new_tokens": 5})]
    assert 1 in rows_seen and 3 in rows_seen  # alone, then joined by two rows, then alone again
    assert rows_seen[-1] == 1


def _run_alone(pipe, request, options):
    return [t[len(request.prompt):] for t in pipe.generate(request, options)]


def test_queue_limit_cancel_and_close(pipe):
    engine = TextEngine(pipe, max_rows=1, max_queue=1)
    try:
        done = []
        running = engine.submit(TextRequest(prompt="the", seed=0), {"max_new_tokens": 10_000}, sink=done.append)
        while not engine.running:
            threading.Event().wait(0.001)
        waiting = engine.submit(TextRequest(prompt="the", seed=1), {"max_new_tokens": 5}, sink=lambda e: None)
        with pytest.raises(QueueFull, match="limit 1"):
            engine.submit(TextRequest(prompt="the", seed=2), {"max_new_tokens": 5}, sink=lambda e: None)
        with pytest.raises(ValueError, match="n must be <= 1"):
            engine.submit(TextRequest(prompt="the", n=2), {"max_new_tokens": 5}, sink=lambda e: None)
        running.cancel()
        assert running.wait(10) and waiting.wait(10)
        final = done[-1]
        assert isinstance(final, JobDone) and final.completion_tokens < 10_000
        assert [e.reason for e in done if isinstance(e, SampleDone)] == ["cancelled"]
    finally:
        engine.close()
    assert not engine.thread.is_alive()


def test_a_failing_sink_cancels_only_its_job(pipe):
    engine = TextEngine(pipe, max_rows=4)

    def broken(event):
        raise RuntimeError("client gone")

    try:
        bad = engine.submit(TextRequest(prompt="the", seed=0), {"max_new_tokens": 1000}, sink=broken)
        good = _run(engine, [(TextRequest(prompt="dog", seed=4), {"max_new_tokens": 8})])
        assert bad.wait(10) and bad.generated < 1000
    finally:
        engine.close()
    assert good == [_run_alone(pipe, TextRequest(prompt="dog", seed=4), {"max_new_tokens": 8})]


def test_row_generators_draw_each_part_as_it_would_alone():
    parts = [(torch.Generator().manual_seed(s), n) for s, n in ((1, 2), (2, 3))]
    joined = randn((5, 4), RowGenerators(parts))
    assert torch.equal(joined[:2], torch.randn(2, 4, generator=torch.Generator().manual_seed(1)))
    assert torch.equal(joined[2:], torch.randn(3, 4, generator=torch.Generator().manual_seed(2)))
    g = RowGenerators([(torch.Generator().manual_seed(3), 2)])
    assert torch.equal(rand((2, 3), g), torch.rand(2, 3, generator=torch.Generator().manual_seed(3)))
    g = RowGenerators([(torch.Generator().manual_seed(3), 2)])
    assert torch.equal(randint(10, (2,), g), torch.randint(10, (2,), generator=torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError, match="does not split"):
        randn((4, 4), RowGenerators(parts))


@pytest.mark.parametrize("name,options", [("tiny-gan", {}), ("tiny-diffusion", {"steps": 3, "sampler": "ddpm"})])
def test_batched_image_requests_get_the_images_their_seeds_give_alone(served_runs, name, options):
    pipe: ImagePipeline = open_run(served_runs[name])
    opts = pipe.model.parse_sample_options(options)
    sizes = []
    batcher = ImageBatcher(pipe, max_batch=16, window_s=0.5, on_batch=sizes.append)
    try:
        jobs = [batcher.submit(n, label=label, seed=seed, options=opts)
                for n, label, seed in ((2, 3, 1), (3, 5, 2), (1, 0, 3))]
        drawn = [job.result(60) for job in jobs]
        random_labels = batcher.submit(2, label=None, seed=4, options=opts).result(60)
    finally:
        batcher.close()
    assert sizes[0] == 6  # the three requests shared one forward pass
    for (n, label, seed), images in zip(((2, 3, 1), (3, 5, 2), (1, 0, 3)), drawn):
        alone = pipe.generate(n, condition=label, seed=seed, options=opts)
        assert images.shape == alone.shape
        assert (images.int() - alone.int()).abs().max() <= 1  # float rounding of a bigger batch, at most 1 level
    alone = pipe.generate(2, condition=None, seed=4, options=opts)
    assert (random_labels.int() - alone.int()).abs().max() <= 1


def test_a_job_whose_prefill_fails_gets_its_error_and_the_others_go_on(pipe, monkeypatch):
    original = pipe.model.prefill
    bad = pipe.tokenizer.encode("z")[0]

    def prefill(ids, cache, slots):
        if int(ids[0, 0]) == bad:
            raise RuntimeError("this window cannot be encoded")
        return original(ids, cache, slots)

    monkeypatch.setattr(pipe.model, "prefill", prefill)
    engine = TextEngine(pipe, max_rows=8)
    events: dict[str, list] = {"good": [], "bad": []}
    try:
        jobs = [engine.submit(TextRequest(prompt=p, n=1, seed=1), {"max_new_tokens": 8}, sink=events[k].append)
                for k, p in (("bad", "zebra"), ("good", "the"))]
        assert all(job.wait(60) for job in jobs)
    finally:
        engine.close()
    assert events["bad"][-1].error == "RuntimeError: this window cannot be encoded"
    assert events["good"][-1].error is None and events["good"][-1].completion_tokens == 8
    assert engine.rows_running == 0
