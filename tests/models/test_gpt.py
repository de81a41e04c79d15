"""GPT: the shared contract, causality, KV cache = no cache, exact likelihood, sampling filters."""

from __future__ import annotations

import math

import pytest
import torch

from genforge import models
from genforge.config import ConfigError, from_dict
from genforge.models.capabilities import _filter_logits
from genforge.models.gpt import GPT, GPTConfig
from tests.models.contract import ModelContract


def tiny(**kw) -> GPTConfig:
    return GPTConfig(**{"vocab_size": 11, "block_size": 8, "n_layer": 2, "n_head": 2, "n_embd": 16, **kw})


def token_batch(config: GPTConfig, n: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"x": torch.randint(0, config.vocab_size, (n, config.block_size + 1), generator=g)}


class TestGPT(ModelContract):
    def tiny_config(self):
        return tiny()

    def dummy_batch(self):
        return token_batch(self.tiny_config())

    def test_sample_shape_dtype_range(self):
        model = self.make_model()
        out = model.sample(3, condition=[1, 2], max_new_tokens=5, generator=torch.Generator().manual_seed(0))
        assert out.shape == (3, 7) and out.dtype == torch.int64
        assert out[:, :2].tolist() == [[1, 2]] * 3
        assert int(out.min()) >= 0 and int(out.max()) < model.config.vocab_size


class TestGPTNoBiasDropout(TestGPT):
    def tiny_config(self):
        return tiny(bias=False, dropout=0.1, n_layer=1, n_head=4)


def trained_like(seed: int = 0, **kw) -> GPT:
    """A tiny model with non-trivial weights (random init scaled up so logits are far from uniform)."""
    torch.manual_seed(seed)
    model = GPT(tiny(**kw))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(8.0) if p.ndim >= 2 else None
    return model.eval()


def test_causality_future_tokens_do_not_change_past_logits():
    model = trained_like()
    x = torch.randint(0, 11, (2, 8))
    base = model(x)
    for t in range(7):
        y = x.clone()
        y[:, t + 1] = (y[:, t + 1] + 1) % 11
        out = model(y)
        assert torch.allclose(out[:, : t + 1], base[:, : t + 1], atol=1e-6, rtol=0), t
        assert not torch.allclose(out[:, t + 1], base[:, t + 1])


@pytest.mark.parametrize("prompt_len,new", [(1, 5), (3, 20), (8, 30), (12, 9)])
@pytest.mark.parametrize("temperature,top_k,top_p", [(0.0, None, None), (1.0, None, None), (0.8, 4, 0.9)])
def test_cached_and_uncached_decoding_are_identical(prompt_len, new, temperature, top_k, top_p):
    model = trained_like()
    prompt = torch.randint(0, 11, (3, prompt_len), generator=torch.Generator().manual_seed(prompt_len))
    outs = []
    for use_cache in (True, False):
        g = torch.Generator().manual_seed(5)
        outs.append(model.generate(prompt, new, temperature=temperature, top_k=top_k, top_p=top_p,
                                   generator=g, use_cache=use_cache))
    assert outs[0].shape == (3, prompt_len + new)
    assert torch.equal(outs[0], outs[1])


def test_cached_logits_match_full_forward():
    """Greedy decoding well past block_size: each cached step's logits equal a fresh forward of its window."""
    model = trained_like()
    prompt = torch.tensor([[1, 2, 3]])
    out = model.generate(prompt, 25, temperature=0.0)
    # recompute greedily the uncached way at every step with explicit windows
    seq = prompt.clone()
    start, bs = 0, model.config.block_size
    keep = bs - bs // 4
    for _ in range(25):
        if seq.shape[1] - start > bs:
            start = seq.shape[1] - keep
        nxt = model(seq[:, start:])[:, -1].argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], 1)
    assert torch.equal(out, seq)


def test_log_likelihood_is_exact_sum_of_token_log_probs():
    model = trained_like()
    x = torch.randint(0, 11, (2, 6))
    ll = model.log_likelihood({"x": x})
    logp = model(x[:, :-1]).log_softmax(-1)
    manual = logp.gather(-1, x[:, 1:, None]).squeeze(-1).sum(1)
    assert torch.allclose(ll, manual, atol=1e-5)
    assert (ll < 0).all()


def test_uniform_model_has_loss_log_v_and_perplexity_v():
    model = GPT(tiny())
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()  # all logits 0: a uniform next-token distribution
    loss = model.losses(token_batch(model.config))["loss"]
    assert math.isclose(loss.item(), math.log(11), rel_tol=1e-6)
    assert math.isclose(math.exp(loss.item()), 11, rel_tol=1e-6)


def test_tied_embeddings_and_gpt2_init():
    model = GPT(tiny(n_embd=64, n_layer=4))
    assert model.lm_head.weight is model.transformer.wte.weight
    names = [n for n, _ in model.named_parameters()]
    assert "lm_head.weight" not in names  # shared, counted once
    proj = model.transformer.h[0].mlp.c_proj.weight.detach()
    assert abs(float(proj.std()) - 0.02 / math.sqrt(8)) < 0.002
    assert abs(float(model.transformer.h[0].mlp.c_fc.weight.detach().std()) - 0.02) < 0.002


def test_save_load_keeps_the_tie(tmp_path):
    model = GPT(tiny())
    model.save_pretrained(tmp_path)
    loaded = models.load(tmp_path)
    assert loaded.lm_head.weight is loaded.transformer.wte.weight
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)


def test_filter_logits_top_k_and_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(_filter_logits(logits, 2, None)).tolist() == [[False, False, True, True]]
    assert torch.isinf(_filter_logits(logits, None, 0.8)).tolist() == [[False, False, True, True]]
    assert torch.isinf(_filter_logits(logits, None, 0.81)).tolist() == [[False, False, False, True]]
    assert torch.isinf(_filter_logits(logits, None, 0.1)).tolist() == [[False, True, True, True]]


def test_top_k_1_is_greedy():
    model = trained_like()
    prompt = torch.tensor([[4, 2]])
    greedy = model.generate(prompt, 10, temperature=0.0)
    topk1 = model.generate(prompt, 10, temperature=1.0, top_k=1, generator=torch.Generator().manual_seed(3))
    assert torch.equal(greedy, topk1)


@pytest.mark.parametrize("kw,match", [({"temperature": -1}, "temperature"), ({"top_k": 0}, "top_k"),
                                       ({"top_p": 0.0}, "top_p"), ({"top_p": 1.5}, "top_p")])
def test_bad_sampling_options(kw, match):
    with pytest.raises(ValueError, match=match):
        trained_like().generate(torch.tensor([[1]]), 2, **kw)


def test_bad_inputs():
    model = trained_like()
    with pytest.raises(ValueError, match=r"\[0, 10\]"):
        model.generate(torch.tensor([[11]]), 2)
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[B, T\+1\]"):
        model.losses({"x": torch.zeros(4, dtype=torch.long)})
    with pytest.raises(TypeError, match="integer"):
        model.losses({"x": torch.zeros(2, 4)})


@pytest.mark.parametrize("raw,match", [({"n_embd": 30, "n_head": 4}, "divisible"), ({"dropout": 1.0}, "dropout"),
                                        ({"block_size": 0}, "block_size")])
def test_config_validation(raw, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(GPTConfig, {"vocab_size": 5, **raw})


def test_vocab_size_is_required_to_build():
    with pytest.raises(ValueError, match="vocab_size"):
        GPT(GPTConfig())


def test_draw_matches_the_distribution_and_skips_zero_probability_tokens():
    from genforge.models.capabilities import _draw

    probs = torch.tensor([[0.5, 0.0, 0.3, 0.2]]).expand(20000, -1)
    tokens = _draw(probs, torch.Generator().manual_seed(0))
    counts = torch.bincount(tokens, minlength=4).float() / 20000
    assert counts[1] == 0
    assert torch.allclose(counts, probs[0], atol=0.015)


def test_window_rule():
    model = trained_like()  # block_size 8: a slide keeps the last 8 - max(1, 8 // 4) = 6 tokens
    assert [model.window_start(n, None) for n in (1, 8, 9, 20)] == [0, 0, 1, 12]
    assert model.window_start(8, 0) == 0 and model.window_start(9, 0) == 3 and model.window_start(14, 5) == 8


def test_decode_of_rows_at_their_own_lengths_equals_each_row_alone():
    """Rows never see each other (equal up to the batch size's rounding), and rows of one length in consecutive slots
    (a view of the cache) give the very numbers of the masked gather used otherwise."""
    model = trained_like()
    ids = torch.randint(0, 11, (3, 8), generator=torch.Generator().manual_seed(1))
    together = model.new_slots(5)
    alone = [model.new_slots(1) for _ in range(3)]
    slots = torch.tensor([4, 0, 2])
    for r, length in enumerate((2, 5, 5)):  # two rows at one length, but not in consecutive slots
        model.prefill(ids[r:r + 1, :length], together, slots[r:r + 1])
        model.prefill(ids[r:r + 1, :length], alone[r], torch.tensor([0]))
    for t in range(2):
        tokens = torch.stack([ids[0, 2 + t], ids[1, 5 + t], ids[2, 5 + t]])
        got = model.decode(tokens, together, slots)  # (3, V), masked
        for r in range(3):
            want = model.decode(tokens[r:r + 1], alone[r], torch.tensor([0]))[0]
            assert torch.allclose(got[r], want, atol=1e-5, rtol=0)
    lined_up, reversed_ = model.new_slots(2), model.new_slots(2)  # rows 1-2 in slots [0, 1], and in [1, 0]
    model.prefill(ids[1:, :5], lined_up, torch.tensor([0, 1]))
    model.prefill(ids[1:, :5], reversed_, torch.tensor([1, 0]))
    assert torch.equal(model.decode(ids[1:, 5], lined_up, torch.tensor([0, 1])),
                       model.decode(ids[1:, 5], reversed_, torch.tensor([1, 0])))
