"""The fused C decode step and token draw (genforge/models/native): the same numbers and the same tokens as
the PyTorch paths they replace, every cache layout the decode loop makes, and a clean fallback."""

from __future__ import annotations

import threading

import pytest
import torch

from genforge.models import decoding, native
from genforge.models.capabilities import _draw, next_tokens
from genforge.models.gpt import GPT, GPTConfig
from genforge.models.native import gpt as native_gpt
from genforge.models.native import sampling

pytestmark = pytest.mark.skipif(not native.status("gpt_step").startswith("native"),
                                reason=f"the C kernel is not built here: {native.status('gpt_step')}")

SHAPES = [  # (n_layer, n_embd, n_head, vocab, block, bias): 16-aligned widths, odd widths (the scalar tails)
    (2, 32, 4, 50, 16, True),
    (1, 36, 3, 7, 10, False),
    (3, 64, 2, 300, 24, True),
]


def gpt(shape, seed: int = 0) -> GPT:
    L, C, H, V, block, bias = shape
    torch.manual_seed(seed)
    model = GPT(GPTConfig(n_layer=L, n_embd=C, n_head=H, vocab_size=V, block_size=block, bias=bias)).eval()
    with torch.no_grad():  # larger than GPT-2's init, so the attention and GELU see a real range of values
        for p in model.parameters():
            p.mul_(4.0)
    return model


def caches(model: GPT, slots: int):
    with native.disabled():
        eager = model.new_slots(slots)
    fused = model.new_slots(slots)
    assert eager.native is None and fused.native is not None
    fused.native.prefill_threads = fused.native.step_threads = 1  # whatever the timing race chose
    return eager, fused


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", SHAPES + [(2, 128, 4, 40, 40, True)])  # the last one large enough for threads
def test_prefill_and_steps_match_pytorch(shape, threads):
    model = gpt(shape)
    V, block = shape[3], shape[4]
    eager, fused = caches(model, 3)
    fused.native.prefill_threads = fused.native.step_threads = threads
    ids = torch.randint(0, V, (2, 5))
    slots = torch.tensor([2, 0])  # not consecutive, not in order
    a, b = model.prefill(ids, eager, slots), model.prefill(ids, fused, slots)
    torch.testing.assert_close(b, a, atol=2e-4, rtol=1e-4)
    assert eager.lengths == fused.lengths == [5, 0, 5]
    for step in range(block - 5):  # up to a full context
        tokens = torch.randint(0, V, (2,))
        a, b = model.decode(tokens, eager, slots), model.decode(tokens, fused, slots)
        assert b.shape == (2, V) and b.dtype == torch.float32
        torch.testing.assert_close(b, a, atol=2e-4, rtol=1e-4, msg=f"step {step}")
    torch.testing.assert_close(fused.k[:, [0, 2]], eager.k[:, [0, 2]], atol=1e-4, rtol=1e-4)  # (sums in another order)
    torch.testing.assert_close(fused.v[:, [0, 2]], eager.v[:, [0, 2]], atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="exceeds block_size"):
        model.decode(torch.zeros(2, dtype=torch.long), fused, slots)


def test_rows_at_different_lengths_do_not_see_each_other():
    """One decode call over slots at lengths 3 and 7: each row's logits equal those of its slot decoded alone."""
    model = gpt(SHAPES[0])
    _, fused = caches(model, 2)
    _, alone = caches(model, 1)
    x, y = torch.randint(0, 50, (1, 3)), torch.randint(0, 50, (1, 7))
    model.prefill(x, fused, torch.tensor([0]))
    model.prefill(y, fused, torch.tensor([1]))
    both = model.decode(torch.tensor([4, 9]), fused, torch.tensor([0, 1]))
    model.prefill(y, alone, torch.tensor([0]))
    torch.testing.assert_close(both[1:], model.decode(torch.tensor([9]), alone, torch.tensor([0])))
    assert fused.lengths == [4, 8]


@pytest.mark.parametrize("options", [dict(temperature=0), dict(temperature=0.8), dict(temperature=1.3, top_k=5)])
def test_generation_gives_the_same_tokens(options):
    """300 tokens through windows that slide 20 times: the tokens of the PyTorch path, for the same seed."""
    model = gpt(SHAPES[0], seed=1)
    prompt = torch.tensor([[1, 2, 3]])
    with native.disabled():
        want = model.generate(prompt, 300, generator=torch.Generator().manual_seed(7), **options)
    got = model.generate(prompt, 300, generator=torch.Generator().manual_seed(7), **options)
    assert torch.equal(got, want)


def test_bad_token_is_refused_without_writing():
    model = gpt(SHAPES[0])
    _, fused = caches(model, 1)
    model.prefill(torch.tensor([[1, 2]]), fused, torch.tensor([0]))
    before = fused.k.clone()
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 49\]"):
        model.decode(torch.tensor([50]), fused, torch.tensor([0]))
    assert torch.equal(fused.k, before) and fused.lengths == [2]


def test_only_float32_cpu_models_take_the_kernel():
    model = gpt(SHAPES[0]).double()
    assert model.new_slots(1).native is None
    tokens = model.generate(torch.tensor([[1]]), 5, temperature=0)
    assert tokens.shape == (1, 6)


def test_without_a_compiler_the_pytorch_path_runs(monkeypatch, tmp_path):
    monkeypatch.setattr(native, "_loaded", {})
    monkeypatch.setattr(native, "_why", {})
    monkeypatch.setattr(native, "compiler", lambda: None)
    assert native.load("gpt_step") is None and native.status("gpt_step").startswith("no C compiler")
    model = gpt(SHAPES[1])
    assert model.new_slots(1).native is None
    assert model.generate(torch.tensor([[1]]), 12, temperature=0).shape == (1, 13)


def test_a_failed_build_is_reported_not_raised(monkeypatch, tmp_path):
    bad = tmp_path / "broken.c"
    bad.write_text("this is not C\n")
    monkeypatch.setattr(native, "HERE", tmp_path)
    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(native, "_loaded", {})
    assert native.load("broken") is None
    assert native.status("broken").startswith("build failed:")
    assert not list((tmp_path / "cache" / "kernels").glob("*.so"))  # nothing half-written is left


def test_the_timing_race_is_made_once_per_shape_and_thread(monkeypatch):
    """Raced at the first use, once per model shape on each thread that decodes (a server's engine thread races
    for itself: an OpenMP team can be slower there than under the main thread)."""
    calls = []
    real = native_gpt._race
    monkeypatch.setattr(native_gpt, "_CHOICES", {})
    monkeypatch.setattr(native_gpt, "_race", lambda *a: calls.append(threading.get_ident()) or real(*a))
    model = gpt(SHAPES[2])
    first = model.new_slots(2).native
    assert calls == []  # nothing timed before a thread decodes
    tokens = model.generate(torch.tensor([[1, 2]]), 8, temperature=0)
    model.new_slots(4).native.use_step
    assert calls == [threading.get_ident()]
    assert 0 <= first.step_threads <= first.max_threads and 0 <= first.prefill_threads <= first.max_threads
    other = []
    worker = threading.Thread(target=lambda: other.append(model.generate(torch.tensor([[1, 2]]), 8, temperature=0)))
    worker.start()
    worker.join()
    assert len(calls) == 2 and calls[1] != calls[0] and torch.equal(other[0], tokens)


def test_the_fused_draw_matches_pytorch():
    """Inverse-CDF draws at a temperature: the token PyTorch's softmax/cumsum picks for the same uniform."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(400, 97, generator=g) * 3  # (B, V)
    u = torch.rand(400, 1, generator=g)
    got = sampling.draw(logits, 0.7, u)
    want = _draw((logits / 0.7).softmax(dim=-1), None, u)
    assert got.dtype == torch.int64 and (got == want).float().mean() == 1.0
    edge = torch.tensor([[0.0, float("-inf"), 0.0]])  # a token of probability 0 is never drawn
    assert sampling.draw(edge, 1.0, torch.tensor([[0.5]])).item() == 0
    assert sampling.draw(edge, 1.0, torch.tensor([[0.9999]])).item() == 2
    seeded = [next_tokens(logits[:1], torch.Generator().manual_seed(3), temperature=0.7) for _ in range(2)]
    with native.disabled():
        eager = next_tokens(logits[:1], torch.Generator().manual_seed(3), temperature=0.7)
    assert torch.equal(seeded[0], seeded[1]) and torch.equal(seeded[0], eager)


@pytest.fixture
def kernel_steps(monkeypatch):
    """Make every model shape take the fused step on one thread (not whatever the timing race would pick)."""
    monkeypatch.setattr(native_gpt, "_CHOICES", {})

    def force(model: GPT) -> GPT:
        c = model.config
        native_gpt._CHOICES[((c.n_layer, c.n_embd, c.n_head, c.vocab_size, c.block_size), threading.get_ident())] = (1, 1)
        return model
    return force


def _alone(model: GPT, prompt, n, seed, **options):
    with native.disabled():
        return model.generate(prompt, n, generator=torch.Generator().manual_seed(seed), **options)[0, prompt.shape[1]:]


@pytest.mark.parametrize("options", [dict(temperature=0), dict(temperature=0.8), dict(temperature=1.0, top_p=1.0)])
def test_a_lone_job_runs_ahead_with_the_same_tokens(kernel_steps, monkeypatch, options):
    """A one-row job alone decodes up to RUN_AHEAD tokens per C call through windows that slide: PyTorch's tokens."""
    model = kernel_steps(gpt(SHAPES[0], seed=2))
    runs = []
    real = GPT.decode_run
    monkeypatch.setattr(GPT, "decode_run", lambda *a: runs.append(a[4]) or real(*a))
    prompt = torch.tensor([[4, 5]])
    got = model.generate(prompt, 200, generator=torch.Generator().manual_seed(3), **options)[0, 2:]
    assert torch.equal(got, _alone(model, prompt, 200, 3, **options))
    assert runs and max(runs) <= decoding.RUN_AHEAD and sum(runs) > 150  # most tokens came from runs


@pytest.mark.parametrize("options", [dict(temperature=0.8, top_k=5), dict(temperature=0.8, top_p=0.9)])
def test_filtered_draws_do_not_run_ahead(kernel_steps, monkeypatch, options):
    model = kernel_steps(gpt(SHAPES[0], seed=2))
    monkeypatch.setattr(GPT, "decode_run", lambda *a: pytest.fail("a filtered draw ran ahead"))
    prompt = torch.tensor([[4, 5]])
    got = model.generate(prompt, 40, generator=torch.Generator().manual_seed(3), **options)[0, 2:]
    assert torch.equal(got, _alone(model, prompt, 40, 3, **options))


def test_a_job_that_joins_a_run_ahead_gets_its_own_tokens(kernel_steps):
    """Job A runs ahead alone; B joins while A holds tokens decoded ahead, and later a third: each gets the tokens
    it gets alone for its seed, one per step, and the loop's slots come back."""
    model = kernel_steps(gpt(SHAPES[0], seed=4))
    loop = decoding.DecodeLoop(model, 3)
    a = loop.add(torch.tensor([[1, 2, 3]]), 60, generator=torch.Generator().manual_seed(1), temperature=0.9)
    got = {a: []}
    for _ in range(5):
        for job, tokens in loop.step():
            assert tokens.shape == (1,)
            got[job].append(int(tokens[0]))
    assert a.ahead, "A should hold tokens decoded ahead"
    b = loop.add(torch.tensor([[7]]), 30, generator=torch.Generator().manual_seed(2), temperature=0.9)
    c = loop.add(torch.tensor([[9, 9]]), 12, generator=torch.Generator().manual_seed(5), temperature=0)
    got.update({b: [], c: []})
    while loop.jobs:
        for job, tokens in loop.step():
            got[job].append(int(tokens[0]))
    assert got[a] == _alone(model, torch.tensor([[1, 2, 3]]), 60, 1, temperature=0.9).tolist()
    assert got[b] == _alone(model, torch.tensor([[7]]), 30, 2, temperature=0.9).tolist()
    assert got[c] == _alone(model, torch.tensor([[9, 9]]), 12, 5, temperature=0).tolist()
    assert sorted(loop.free) == [0, 1, 2]


def test_removing_a_job_with_tokens_ahead_frees_its_slot(kernel_steps):
    model = kernel_steps(gpt(SHAPES[0]))
    loop = decoding.DecodeLoop(model, 1)
    a = loop.add(torch.tensor([[1]]), 50, generator=torch.Generator().manual_seed(0), temperature=1.0)
    loop.step()
    loop.step()
    assert a.ahead
    loop.remove(a)  # cancelled mid-run
    assert loop.free == [0] and not loop.jobs
    b = loop.add(torch.tensor([[3, 4]]), 20, generator=torch.Generator().manual_seed(8), temperature=1.0)
    out = [int(t[0]) for _ in range(20) for _, t in loop.step()]
    assert out == _alone(model, torch.tensor([[3, 4]]), 20, 8, temperature=1.0).tolist() and b.done


def test_a_run_is_refused_past_the_context(kernel_steps):
    model = kernel_steps(gpt(SHAPES[0]))
    cache = model.new_slots(1)
    model.prefill(torch.tensor([[1] * 14]), cache, torch.tensor([0]))
    with pytest.raises(ValueError, match="exceeds block_size=16"):
        model.decode_run(torch.tensor([1]), cache, torch.tensor([0]), 3, 0.0, torch.empty(0))
    assert cache.lengths == [14]
