"""GPT: a decoder-only transformer language model (Radford et al. 2019), nanoGPT-compatible.

Pre-LayerNorm blocks: x + Attn(LN(x)), x + MLP(LN(x)); causal self-attention via
``scaled_dot_product_attention``; GELU MLP of width 4·C; learned absolute
position embeddings; the output head shares the token-embedding matrix (tied).
Initialisation follows GPT-2: N(0, 0.02) for linear and embedding weights,
N(0, 0.02/√(2·L)) for each block's residual output projections, zero biases.

Batches are ``{"x": int64 [B, T+1]}`` token windows; the model predicts
``x[:, 1:]`` from ``x[:, :-1]`` (the shift happens here, not in the data).

Generation runs through the one decode loop of :mod:`genforge.models.decoding`;
this file supplies the model's part of it: :meth:`GPT.prefill` encodes a window
into slots of a key/value cache, :meth:`GPT.decode` adds one position per slot,
and :meth:`GPT.window_start` is the context rule. Learned positions cannot
slide, so when a sequence outgrows ``block_size`` the context is cut to its last
``block_size - max(1, block_size // 4)`` tokens and re-encoded: every step then
sees between 3/4 of a window and a full window of context (a long prompt starts
as its last ``block_size`` tokens). Decoding with ``use_cache=False`` follows the
very same windows, re-encoding them at every step, so cached and uncached
decoding give identical tokens (tested).

Shape legend: B batch, T time (positions), C ``n_embd``, H ``n_head``,
D = C / H head size, V ``vocab_size``, L ``n_layer``, P prompt length.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genforge.config import FieldError
from genforge.models import decoding
from genforge.models.base import Batch, OnnxGraphs, GenerativeModel, Likelihood, ModelConfig, eval_mode
from genforge.models.capabilities import LanguageModel, LanguageModelOptions
from genforge.models.kv_cache import ConcatCacheDecoder, KVCache, SlotCache


@dataclass(kw_only=True)
class GPTConfig(ModelConfig):
    """GPT hyper-parameters (nanoGPT names). ``vocab_size`` 0 is filled from the tokenizer."""

    task: ClassVar[str] = "text"
    family: str = "gpt"
    vocab_size: int = 0  # V; 0 = take from the data's tokenizer
    block_size: int = 256  # context length in tokens
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    dropout: float = 0.0
    bias: bool = True  # biases in linear layers and LayerNorms (GPT-2 has them)

    def __post_init__(self) -> None:
        if self.family != "gpt":
            raise FieldError("family", f"must be 'gpt' for a GPTConfig, got {self.family!r}")
        if self.vocab_size < 0 or self.vocab_size > 1_000_000:
            raise FieldError("vocab_size", f"must be in [1, 1000000] (0 = from the data), got {self.vocab_size}")
        for name, hi in (("block_size", 65536), ("n_layer", 512), ("n_head", 512), ("n_embd", 65536)):
            value = getattr(self, name)
            if not 1 <= value <= hi:
                raise ValueError(f"{name} must be in [1, {hi}], got {value}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise FieldError("dropout", f"must be in [0, 1), got {self.dropout}")

    def check_complete(self) -> None:
        if self.vocab_size < 1:
            raise ValueError("model.vocab_size must be set (the trainer fills it from the tokenizer)")


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, cache: KVCache | None = None, layer: int = 0) -> Tensor:
        """x [B, T, C] → [B, T, C]. With ``cache``, x holds the positions after ``cache.length``."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        if cache is None:
            dropout = self.dropout if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        else:
            start, end = cache.length, cache.length + T
            cache.k[layer, :, :, start:end] = k
            cache.v[layer, :, :, start:end] = v
            k, v = cache.k[layer, :, :, :end], cache.v[layer, :, :, :end]  # (B, H, end, D)
            if T == 1:  # one new query attends to every cached position
                y = F.scaled_dot_product_attention(q, k, v)
            elif start == 0:
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:  # a chunk after a prefix: query i sees keys ≤ start + i
                mask = torch.ones(T, end, dtype=torch.bool, device=x.device).tril(diagonal=start)
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: Tensor, cache: KVCache | None = None, layer: int = 0) -> Tensor:
        x = x + self.attn(self.ln_1(x), cache, layer)
        return x + self.mlp(self.ln_2(x))


class GPT(GenerativeModel, LanguageModel):
    """Decoder-only transformer over token ids; see the module docstring."""

    config_class: ClassVar[type[GPTConfig]] = GPTConfig
    family: ClassVar[str] = "gpt"
    sample_options: ClassVar[type[LanguageModelOptions]] = LanguageModelOptions

    @property
    def context_length(self) -> int:
        return self.config.block_size

    def __init__(self, config: GPTConfig) -> None:
        super().__init__(config)
        config.check_complete()
        self.config: GPTConfig = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied input/output embeddings
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # residual projections, scaled by depth (GPT-2)
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; by default without the position embeddings (nanoGPT's convention)."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    def flops_per_token(self, context: int | None = None) -> float:
        """Training FLOPs per token (forward + backward), nanoGPT/PaLM: 6N + 12·L·H·D·T."""
        cfg = self.config
        t = context or cfg.block_size
        return 6 * self.num_params() + 12 * cfg.n_layer * cfg.n_embd * t

    # ------------------------------------------------------------------ forward
    def _forward(self, idx: Tensor, cache: KVCache | None = None) -> Tensor:
        """Hidden states after the final LayerNorm: idx int64 [B, T] → float [B, T, C].

        With ``cache``, ``idx`` continues the cached positions (which it extends).
        """
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} tokens exceeds block_size={self.config.block_size}")
        pos = torch.arange(start, start + T, dtype=torch.long, device=idx.device)  # (T,)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        for i, block in enumerate(self.transformer.h):
            x = block(x, cache, i)
        if cache is not None:
            cache.length += T
        return self.transformer.ln_f(x)

    def _decode_plan(self) -> tuple[Tensor, Tensor, list[tuple[Tensor | None, ...]], tuple[Tensor | None, ...]]:
        """Weights laid out for :meth:`decode`: (wte, wpe, per-layer tuples, final LayerNorm).

        Detached tensors skip autograd bookkeeping and ``nn.Module`` attribute
        lookups, and linear weights are stored transposed ([in, out],
        contiguous), the layout the CPU GEMM handles fastest for one row.
        """
        def d(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.detach()

        def t(w: Tensor) -> Tensor:
            return w.detach().t().contiguous()

        tr = self.transformer
        layers = [(d(b.ln_1.weight), d(b.ln_1.bias), t(b.attn.c_attn.weight), d(b.attn.c_attn.bias),
                   t(b.attn.c_proj.weight), d(b.attn.c_proj.bias), d(b.ln_2.weight), d(b.ln_2.bias),
                   t(b.mlp.c_fc.weight), d(b.mlp.c_fc.bias), t(b.mlp.c_proj.weight), d(b.mlp.c_proj.bias))
                  for b in tr.h]
        return d(tr.wte.weight), d(tr.wpe.weight), layers, (d(tr.ln_f.weight), d(tr.ln_f.bias))

    def forward(self, idx: Tensor) -> Tensor:
        """Logits of the next token at every position: int64 [B, T] → float [B, T, V]."""
        return self.lm_head(self._forward(idx))

    export_formats: ClassVar[tuple[str, ...]] = ("onnx", "hf")

    def onnx_graphs(self) -> OnnxGraphs:
        """``decoder``: one step with a concatenating key/value cache.

        Inputs: tokens int64 [B, T], past_keys and past_values float32 [L, B, H, P, D] (P = 0 for a prompt).
        Outputs: logits float32 [B, T, V], present_keys and present_values [L, B, H, P + T, D].
        Positions P + T must stay within ``block_size`` (the caller slides the window).
        """
        cfg = self.config
        d = cfg.n_embd // cfg.n_head
        tokens = torch.zeros(1, 3, dtype=torch.long, device=self.device)
        past = torch.randn(cfg.n_layer, 1, cfg.n_head, 2, d, device=self.device)
        axes = {"tokens": {0: "batch", 1: "new"}, "past_keys": {1: "batch", 3: "past"},
                "past_values": {1: "batch", 3: "past"}, "logits": {0: "batch", 1: "new"},
                "present_keys": {1: "batch", 3: "total"}, "present_values": {1: "batch", 3: "total"}}
        inputs, outputs = ["tokens", "past_keys", "past_values"], ["logits", "present_keys", "present_values"]
        return {"decoder": (ConcatCacheDecoder(self), (tokens, past, past.clone()), inputs, outputs, axes)}

    def _split(self, batch: Batch) -> tuple[Tensor, Tensor]:
        x = batch["x"]
        if x.ndim != 2 or x.shape[1] < 2:
            raise ValueError(f"a gpt batch 'x' must be token ids [B, T+1] with T >= 1, got {list(x.shape)}")
        if x.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise TypeError(f"a gpt batch 'x' must hold integer token ids, got {x.dtype}")
        x = x.to(self.device, torch.long)
        return x[:, :-1], x[:, 1:]  # inputs (B, T), targets (B, T)

    def losses(self, batch: Batch, *, groups: tuple[str, ...] | None = None) -> dict[str, Tensor]:
        """``{"loss": mean next-token cross-entropy in nats}`` over every position of the batch."""
        if groups is not None and set(groups) - {"loss"}:
            raise ValueError(f"unknown loss groups {sorted(set(groups) - {'loss'})}; the gpt has ['loss']")
        idx, targets = self._split(batch)
        logits = self(idx)
        loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1))
        return {"loss": loss}

    def token_nll(self, batch: Batch) -> Tensor:
        """Per-token negative log-likelihood in nats: ``{"x": [B, T+1]}`` → float32 [B, T]."""
        idx, targets = self._split(batch)
        logits = self(idx).float()
        return F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")

    def describe_likelihood(self, **options: Any) -> Likelihood:
        return Likelihood(kind="exact", estimate="exact autoregressive log p(x_1..x_T | x_0) in nats per sequence")

    def log_likelihood(self, batch: Batch, *, generator: torch.Generator | None = None, **options: Any) -> Tensor:
        """Exact log p(x_1..x_T | x_0) in nats per sequence, float [B] (x_0 is given, not scored)."""
        if options:
            raise TypeError(f"the gpt log_likelihood takes no options, got {sorted(options)}")
        return -self.token_nll(batch).sum(dim=1)

    # ------------------------------------------------------------------ decoding (genforge.models.decoding)
    def window_start(self, length: int, start: int | None) -> int:
        """The context rule: a prompt longer than ``block_size`` starts as its last ``block_size`` tokens; a
        window that outgrows ``block_size`` slides to its last ``block_size - max(1, block_size // 4)``."""
        bs = self.config.block_size
        if start is None:
            return max(0, length - bs)
        return start if length - start <= bs else length - (bs - max(1, bs // 4))

    def new_slots(self, slots: int) -> SlotCache:
        """A cache of ``slots`` sequences. Where the fused C step is built it is timed once per shape against
        the PyTorch path (``GPTStep.calibrate``), and ``prefill``/``decode`` take whichever was faster."""
        dtype, plan = next(self.parameters()).dtype, self._decode_plan()
        cache = SlotCache(self.config, slots, self.device, dtype, plan)
        if cache.native is not None:
            cache.native.calibrate(self._prefill_torch, self._decode_torch,
                                   lambda: SlotCache(self.config, 1, self.device, dtype, plan, native=False))
        return cache

    @torch.inference_mode()
    def prefill(self, ids: Tensor, cache: SlotCache, slots: Tensor) -> Tensor:
        """Encode ``ids`` int64 [n, P] into slots ``slots`` int64 [n] (replacing what they held) → logits [n, V].

        One causal pass over the window: the fused C forward where it is faster (:meth:`new_slots`), else
        :meth:`_forward` with a fresh :class:`KVCache`, copied into the slots.
        """
        n, P = ids.shape
        if P > self.config.block_size:
            raise ValueError(f"a window of {P} tokens exceeds block_size={self.config.block_size}")
        if cache.native is not None and cache.native.use_prefill:
            return cache.native.prefill(ids, slots.tolist(), cache.lengths)  # (n, V)
        return self._prefill_torch(ids, cache, slots)

    def _prefill_torch(self, ids: Tensor, cache: SlotCache, slots: Tensor) -> Tensor:
        n, P = ids.shape
        device = cache.k.device
        with eval_mode(self) if self.training else contextlib.nullcontext():  # no dropout (entered only if needed)
            local = KVCache(self.config, n, device, cache.k.dtype)
            h = self._forward(ids.to(device, torch.long), local)[:, -1]  # (n, C)
        rows = slots.tolist()
        for s in rows:
            cache.lengths[s] = P
        if rows == list(range(rows[0], rows[0] + n)):  # consecutive slots: copy into a view
            cache.k[:, rows[0]:rows[0] + n, :, :P] = local.k[:, :, :, :P]  # (L, n, H, P, D)
            cache.v[:, rows[0]:rows[0] + n, :, :P] = local.v[:, :, :, :P]
        else:
            cache.k[:, slots.to(device), :, :P] = local.k[:, :, :, :P]
            cache.v[:, slots.to(device), :, :P] = local.v[:, :, :, :P]
        return F.linear(h, self.transformer.wte.weight).float()  # (n, V), the tied head

    def decode(self, tokens: Tensor, cache: SlotCache, slots: Tensor) -> Tensor:
        """One new position for each of ``slots`` int64 [B], each at its own length → logits float32 [B, V].

        ``tokens`` int64 [B] is the newest token of each slot's sequence. Rows at one length in consecutive
        slots (one request) attend to a view of their part of the cache; otherwise each row's keys past its
        own length are masked, so rows never see each other (both give the same numbers). Written with
        functional ops on 2-D activations and the weights of :meth:`_decode_plan`: at batch 1 a token costs
        per-op overhead, not arithmetic, and this has about half that of :meth:`_forward`.
        """
        if cache.native is not None and cache.native.use_step:  # the fused C step where it is faster
            return cache.native.step(tokens, slots.tolist(), cache.lengths)  # (B, V)
        return self._decode_torch(tokens, cache, slots)

    def runs_ahead(self, cache: SlotCache) -> bool:
        """True where the fused C step decodes (:meth:`decode_run` then runs many steps in one call)."""
        return cache.native is not None and cache.native.runs

    def decode_run(self, token: Tensor, cache: SlotCache, slot: Tensor, n: int, temperature: float,
                   u: Tensor) -> Tensor:
        """``n`` steps of one slot in one C call (see :meth:`LanguageModel.decode_run`): the tokens a loop of
        :meth:`decode` and ``next_tokens`` would draw from the same uniforms, without Python between them."""
        return cache.native.run(int(token[0]), int(slot[0]), cache.lengths, n, float(temperature), u)

    def _decode_torch(self, tokens: Tensor, cache: SlotCache, slots: Tensor) -> Tensor:
        if not torch.is_inference_mode_enabled():  # (checked, not a decorator: entering costs µs at every token)
            with torch.inference_mode():
                return self._decode_torch(tokens, cache, slots)
        cfg = self.config
        wte, wpe, layers, (lnf_w, lnf_b) = cache.plan
        rows = slots.tolist()
        pos = [cache.lengths[s] for s in rows]  # each row's new position
        T = max(pos) + 1  # keys attended: the longest row's
        if T > cfg.block_size:
            raise ValueError(f"a sequence of {T} tokens exceeds block_size={cfg.block_size}")
        B, C, H, device = len(rows), cfg.n_embd, cfg.n_head, wte.device
        first = rows[0]
        lined_up = min(pos) == T - 1 and rows == list(range(first, first + B))
        if lined_up:
            x = F.embedding(tokens.to(device), wte) + wpe[T - 1]  # (B, C)
        else:
            index, at = slots.to(device), torch.tensor(pos, device=device)  # (B,), (B,)
            mask = (torch.arange(T, device=device) <= at[:, None]).view(B, 1, 1, T)  # (B, 1, 1, T)
            x = F.embedding(tokens.to(device), wte) + wpe[at]  # (B, C)

        def linear(a: Tensor, w_t: Tensor, b: Tensor | None) -> Tensor:  # a [B, in] @ w_t [in, out] (+ b)
            return a @ w_t if b is None else torch.addmm(b, a, w_t)

        eps = 1e-5  # nn.LayerNorm's default, used by every norm of the model
        for i, (l1w, l1b, aw, ab, pw, pb, l2w, l2b, fw, fb, p2w, p2b) in enumerate(layers):
            q, k, v = linear(F.layer_norm(x, (C,), l1w, l1b, eps), aw, ab).view(B, 3, H, C // H).unbind(1)
            if lined_up:  # the rows' part of the cache, a view: (B, H, block_size, D)
                keys, values = cache.layers[i]
                if B < len(cache.lengths):
                    keys, values = keys[first:first + B], values[first:first + B]
                keys.select(2, T - 1).copy_(k)  # (B, H, D) at position T - 1
                values.select(2, T - 1).copy_(v)
                y = F.scaled_dot_product_attention(q.unsqueeze(2), keys.narrow(2, 0, T), values.narrow(2, 0, T))
            else:
                cache.k[i, index, :, at] = k  # (B, H, D) at each row's position
                cache.v[i, index, :, at] = v
                keys, values = cache.k[i, index, :, :T], cache.v[i, index, :, :T]  # (B, H, T, D)
                y = F.scaled_dot_product_attention(q.unsqueeze(2), keys, values, attn_mask=mask)  # (B, H, 1, D)
            x = x + linear(y.view(B, C), pw, pb)
            x = x + linear(F.gelu(linear(F.layer_norm(x, (C,), l2w, l2b, eps), fw, fb)), p2w, p2b)
        for s in rows:
            cache.lengths[s] += 1
        return F.linear(F.layer_norm(x, (C,), lnf_w, lnf_b, eps), wte).float()  # (B, V), the tied head

    @torch.no_grad()
    def generate(self, prompt: Tensor, max_new_tokens: int, **options: Any) -> Tensor:
        """Prompt int64 [B, P] → prompt and continuation int64 [B, P + max_new_tokens].

        ``options``: ``generator``, ``use_cache``, ``token_mask``, ``temperature``, ``top_k``, ``top_p``
        (:func:`genforge.models.decoding.stream`).
        """
        with eval_mode(self):  # once here, not at every window prefill encodes
            steps = list(decoding.stream(self, prompt, max_new_tokens, **options))
        new = torch.stack(steps, dim=1) if steps else prompt.new_empty(prompt.shape[0], 0)  # (B, N)
        return torch.cat([prompt.to(new.device, torch.long), new], dim=1)

    @torch.no_grad()
    def sample(self, n: int, *, condition: Any = None, generator: torch.Generator | None = None,
               **options: Any) -> Tensor:
        """``n`` continuations of the prompt ``condition`` (token ids [P] or [n, P]; None = token 0).

        Args:
            options: :class:`~genforge.models.capabilities.LanguageModelOptions`
                (``max_new_tokens``, ``temperature``, ``top_k``, ``top_p``).

        Returns:
            int64 [n, P + max_new_tokens] (the prompt included).
        """
        opts = self.parse_sample_options(options)
        if condition is None:
            prompt = torch.zeros(n, 1, dtype=torch.long)
        else:
            prompt = torch.as_tensor(condition, dtype=torch.long)
            if prompt.ndim == 1:
                prompt = prompt.unsqueeze(0).expand(n, -1)
            if prompt.ndim != 2 or prompt.shape[0] != n:
                raise FieldError("condition", f"must be token ids [P] or [{n}, P], got {list(prompt.shape)}")
        return self.generate(prompt, opts.max_new_tokens, generator=generator, **opts.decoding())
