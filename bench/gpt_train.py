"""GPT training throughput at nanoGPT's CPU Shakespeare shape, against a plain loop and the matmul peak.

Shape: character level, 4 layers, 4 heads, width 128, context 64, batch 12
(nanoGPT's documented CPU recipe). Three things are timed in one process,
interleaved over ``--repeats`` rounds so machine noise hits them alike:

- ``matmul peak``: the best of fp32 and bf16 ``torch.mm`` GFLOP/s on large
  square matrices with all threads (the ceiling for model FLOP utilisation);
- ``plain loop``: the same model in a bare loop shaped like nanoGPT's
  ``train.py`` on the CPU (``get_batch`` from a ``np.memmap`` with
  ``torch.randint`` + ``torch.stack``, forward, backward, gradient clipping
  at 1.0, AdamW step as nanoGPT builds it off CUDA (``fused=False``), lr set
  per iteration); our GPT module is layer-for-layer nanoGPT's ``model.py``;
- ``genforge``: the real Trainer on a TokenBatches stream, same clipping
  (``--precision`` choices compared in the same run; bf16-mixed is added by
  default only where bf16 matmul is faster than fp32).

Each round runs every contender for ``--steps`` steps, one after the other and
each in a fresh process (genforge tunes the process's C allocator while it
trains, which must not leak into the plain loop), so slow drifts of a shared
host hit them alike. Tokens/s is the steady-state
median over windows after the first of each round; the ratio to the plain
loop is the median of the per-round ratios. MFU uses nanoGPT's FLOP formula
(6N + 12·L·C·T per token, N without position embeddings).

    python bench/gpt_train.py [--steps 200] [--repeats 5] [--precision fp32 bf16-mixed]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import require_idle, summary  # noqa: E402

from genforge.config import TrainConfig  # noqa: E402
from genforge.data import TokenBatches  # noqa: E402
from genforge.models.gpt import GPT, GPTConfig  # noqa: E402
from genforge.training.logger import read_metrics  # noqa: E402
from genforge.training.trainer import Trainer  # noqa: E402

SHAKESPEARE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
SHAPE = dict(n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0, bias=True)
BATCH = 12


def corpus_ids() -> np.ndarray:
    """Character ids of Tiny Shakespeare's training split (synthetic uniform ids when absent)."""
    if SHAKESPEARE.is_file():
        text = SHAKESPEARE.read_text(encoding="utf-8")
        chars = sorted(set(text))
        lut = {c: i for i, c in enumerate(chars)}
        ids = np.array([lut[c] for c in text[: int(0.9 * len(text))]], dtype=np.uint16)
        return ids
    print("Tiny Shakespeare not found: timing on synthetic ids (speed does not depend on the text)")
    return np.random.default_rng(0).integers(0, 65, 1_000_000, dtype=np.uint16)


def matmul_peak(dtype: torch.dtype, n: int = 2048, budget_s: float = 3.0) -> float:
    """Best GFLOP/s of an n×n×n matmul in ``dtype`` over about ``budget_s`` seconds.

    A dtype without a fast path (bf16 on CPUs lacking AVX-512 BF16/AMX) is
    measured on smaller matrices so the probe stays short.
    """
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    t = time.perf_counter()
    torch.mm(a, b)
    if time.perf_counter() - t > 1.0 and n > 512:
        return matmul_peak(dtype, 512, budget_s)
    best, start = math.inf, time.perf_counter()
    while time.perf_counter() - start < budget_s:
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def model(vocab: int) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=vocab, **SHAPE))


def plain_loop(ids: np.ndarray, vocab: int, steps: int, window: int) -> list[float]:
    """nanoGPT ``train.py``-shaped loop; tokens/s per window after the first."""
    m = model(vocab).train()
    decay = [p for p in m.parameters() if p.dim() >= 2]
    no_decay = [p for p in m.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.99))
    T = SHAPE["block_size"]
    rates, t0 = [], time.perf_counter()
    for it in range(steps):
        lr = 1e-3 * min(1.0, (it + 1) / 100)
        for g in opt.param_groups:
            g["lr"] = lr
        ix = torch.randint(len(ids) - T, (BATCH,))
        x = torch.stack([torch.from_numpy(ids[i:i + T + 1].astype(np.int64)) for i in ix])
        loss = m.losses({"x": x})["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)  # nanoGPT's default grad_clip
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()  # nanoGPT reads the loss on log iterations; a sync point either way
        if (it + 1) % window == 0:
            now = time.perf_counter()
            rates.append(window * BATCH * T / (now - t0))
            t0 = now
    return rates[1:]


def genforge_loop(ids: np.ndarray, vocab: int, steps: int, window: int, precision: str) -> list[float]:
    m = model(vocab)
    cfg = TrainConfig(max_steps=steps, batch_size=BATCH, optimizer="adamw", lr=1e-3, betas=(0.9, 0.99),
                      weight_decay=0.1, warmup_steps=100, schedule="cosine", ema_decay=0.0, precision=precision,
                      grad_clip=1.0,
                      log_every=window, sample_every=0, checkpoint_every=0, progress=False)
    T = SHAPE["block_size"]
    with tempfile.TemporaryDirectory() as d:
        trainer = Trainer(m, cfg, TokenBatches(ids, T, BATCH, seed=0), Path(d),
                          examples_per_batch=BATCH * T, unit="tokens")
        trainer.fit()
        records = read_metrics(d)
    return [r["tokens_per_s"] for r in records if "tokens_per_s" in r][1:]


def worker(kind: str, steps: int, window: int) -> list[float]:
    """Steady-state tokens/s windows of one contender, timed in a fresh process."""
    out = subprocess.run([sys.executable, __file__, "--worker", kind, "--steps", str(steps), "--window", str(window)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{kind} worker failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", help=argparse.SUPPRESS)  # internal: time one contender and print JSON
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--window", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--precision", nargs="+", choices=["fp32", "bf16-mixed"],
                    help="genforge precisions to time (default: fp32, plus bf16-mixed where bf16 matmul is faster)")
    args = ap.parse_args()
    if args.worker:
        ids = corpus_ids()
        vocab = int(ids.max()) + 1
        if args.worker == "plain":
            print(json.dumps(plain_loop(ids, vocab, args.steps, args.window)))
        else:
            print(json.dumps(genforge_loop(ids, vocab, args.steps, args.window, args.worker)))
        return
    require_idle()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(f"matmul peak: fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s")
    ids = corpus_ids()
    vocab = int(ids.max()) + 1
    flops = model(vocab).flops_per_token(SHAPE["block_size"])
    print(f"model: {model(vocab).num_params() / 1e6:.2f} M params, {flops / 1e6:.2f} MFLOP per token (train)")
    precisions = args.precision or (["fp32", "bf16-mixed"] if peaks["bf16"] > peaks["fp32"] else ["fp32"])
    rates: dict[str, list[float]] = {}
    ratios: dict[str, list[float]] = {}
    for r in range(args.repeats):
        plain = worker("plain", args.steps, args.window)
        rates.setdefault("plain loop fp32", []).extend(plain)
        for p in precisions:
            ours = worker(p, args.steps, args.window)
            rates.setdefault(f"genforge {p}", []).extend(ours)
            ratios.setdefault(f"genforge {p}", []).append(statistics.median(ours) / statistics.median(plain))
        shown = ", ".join(f"{k} {v[-1]:.2f}x" for k, v in ratios.items())
        print(f"round {r + 1}/{args.repeats}: plain loop {statistics.median(plain):,.0f} tokens/s; {shown}", flush=True)
    for name, values in rates.items():
        med = statistics.median(values)
        peak = peaks["bf16" if "bf16" in name else "fp32"]
        mfu = med * flops / 1e9 / peak
        vs = ratios.get(name)
        rel = (f"  {statistics.median(vs):.2f}x plain loop (per-round {min(vs):.2f}-{max(vs):.2f})" if vs else "")
        print(f"{name:<22} tokens/s {summary(values)}  {1e3 * BATCH * SHAPE['block_size'] / med:5.1f} ms/iter  "
              f"MFU {mfu:.0%} of {peak:.0f} GFLOP/s{rel}")


if __name__ == "__main__":
    main()
