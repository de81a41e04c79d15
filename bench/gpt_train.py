"""GPT training throughput at nanoGPT's CPU Shakespeare shape, against a plain loop and the matmul peak.

Shape: character level, 4 layers, 4 heads, width 128, context 64, batch 12
(nanoGPT's documented CPU recipe). Timed in one run:

- ``matmul peak``: the best of fp32 and bf16 ``torch.mm`` GFLOP/s on large
  square matrices with all threads (the ceiling for model FLOP utilisation);
- ``plain loop``: the same model in a bare loop shaped like nanoGPT's
  ``train.py`` on the CPU (``get_batch`` from a ``np.memmap`` with
  ``torch.randint`` + ``torch.stack``, forward, backward, gradient clipping
  at 1.0, AdamW step as nanoGPT builds it off CUDA (``fused=False``), lr set
  per iteration); our GPT module is layer-for-layer nanoGPT's ``model.py``;
- ``genforge``: the real ``Trainer.fit`` on a TokenBatches stream, same
  clipping (``--precision`` choices; bf16-mixed is added by default only where
  bf16 matmul is faster than fp32).

Each contender trains in its own process (genforge tunes the process's C
allocator while it trains, which must not leak into the plain loop), and the
processes take turns in lockstep: ``--turn`` steps each, ``--rounds`` times,
after ``--warmup`` untimed steps. A step is timed from the moment it has its
batch to the moment it asks for the next, so the pauses between turns are not
counted and slow drifts of a shared host hit every contender alike. Reported:
tokens/s from the median step time, the median over rounds of the per-round
ratio to the plain loop with its spread, and MFU by nanoGPT's FLOP formula
(6N + 12·L·C·T per token, N without position embeddings).

    python bench/gpt_train.py [--turn 20] [--rounds 25] [--precision fp32 bf16-mixed]
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


class Turns:
    """Batches handed out in turns of ``turn`` steps; times each step from batch to next request.

    Between turns it prints the turn's step times (JSON) and blocks until the
    parent writes a line on stdin, so contenders in other processes run in
    between without their time being counted.
    """

    def __init__(self, batches, turn: int, warmup: int) -> None:
        self.batches, self.turn, self.warmup, self.left = batches, turn, warmup, 0
        self.times: list[float] = []
        self.handed: float | None = None

    def __iter__(self):
        return self

    def __next__(self):
        now = time.perf_counter()
        if self.handed is not None:
            self.times.append(now - self.handed)
        if self.left == 0:  # end of a turn (or ready to start): report, then wait for ours
            print(json.dumps(self.times), flush=True)
            self.left = self.turn if self.handed is not None or not self.warmup else self.warmup
            self.times = []
            if not sys.stdin.readline():  # the parent closed the pipe: stop
                raise SystemExit(0)
        self.left -= 1
        batch = next(self.batches)
        self.handed = time.perf_counter()
        return batch

    def state_dict(self) -> dict:
        return self.batches.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.batches.load_state_dict(state)


def nanogpt_batches(ids: np.ndarray, T: int):
    """nanoGPT's ``get_batch``: random windows stacked from the memmapped ids."""
    while True:
        ix = torch.randint(len(ids) - T, (BATCH,))
        yield {"x": torch.stack([torch.from_numpy(ids[i:i + T + 1].astype(np.int64)) for i in ix])}


def plain_loop(ids: np.ndarray, vocab: int, batches: Turns) -> None:
    """nanoGPT ``train.py``-shaped loop (runs until the parent stops it)."""
    m = model(vocab).train()
    decay = [p for p in m.parameters() if p.dim() >= 2]
    no_decay = [p for p in m.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.99))
    for it, batch in enumerate(batches):
        lr = 1e-3 * min(1.0, (it + 1) / 100)
        for g in opt.param_groups:
            g["lr"] = lr
        loss = m.losses(batch)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)  # nanoGPT's default grad_clip
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()  # nanoGPT reads the loss on log iterations; a sync point either way


def genforge_loop(ids: np.ndarray, vocab: int, batches: Turns, precision: str) -> None:
    """genforge's Trainer.fit (runs until the parent stops it)."""
    cfg = TrainConfig(max_steps=10**9, batch_size=BATCH, optimizer="adamw", lr=1e-3, betas=(0.9, 0.99),
                      weight_decay=0.1, warmup_steps=100, schedule="cosine", ema_decay=0.0, precision=precision,
                      grad_clip=1.0, log_every=50, sample_every=0, checkpoint_every=0, progress=False)
    with tempfile.TemporaryDirectory() as d:
        Trainer(model(vocab), cfg, batches, Path(d), examples_per_batch=BATCH * SHAPE["block_size"],
                unit="tokens").fit()


def worker(kind: str, turn: int, warmup: int) -> None:
    ids = corpus_ids()
    vocab, T = int(ids.max()) + 1, SHAPE["block_size"]
    if kind == "plain":
        plain_loop(ids, vocab, Turns(nanogpt_batches(ids, T), turn, warmup))
    else:
        genforge_loop(ids, vocab, Turns(TokenBatches(ids, T, BATCH, seed=0), turn, warmup), kind)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", help=argparse.SUPPRESS)  # internal: one contender, driven over stdin/stdout
    ap.add_argument("--turn", type=int, default=20, help="steps per turn (default 20)")
    ap.add_argument("--rounds", type=int, default=25, help="turns per contender (default 25)")
    ap.add_argument("--warmup", type=int, default=30, help="untimed steps first (default 30)")
    ap.add_argument("--precision", nargs="+", choices=["fp32", "bf16-mixed"],
                    help="genforge precisions to time (default: fp32, plus bf16-mixed where bf16 matmul is faster)")
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.turn, args.warmup)
        return
    require_idle()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(f"matmul peak: fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s")
    vocab = int(corpus_ids().max()) + 1
    gpt = model(vocab)
    flops = gpt.flops_per_token(SHAPE["block_size"])
    print(f"model: {gpt.num_params() / 1e6:.2f} M params, {flops / 1e6:.2f} MFLOP per token (train)")
    precisions = args.precision or (["fp32", "bf16-mixed"] if peaks["bf16"] > peaks["fp32"] else ["fp32"])
    names = {"plain": "plain loop fp32", **{p: f"genforge {p}" for p in precisions}}
    procs = {k: subprocess.Popen([sys.executable, __file__, "--worker", k, "--turn", str(args.turn),
                                  "--warmup", str(args.warmup)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True) for k in names}

    def turn(kind: str) -> list[float]:
        line = procs[kind].stdout.readline()
        if not line:
            raise SystemExit(f"the {names[kind]} worker died (exit {procs[kind].wait()})")
        return json.loads(line)

    for k in names:  # ready (imports done), then the untimed warm-up, one contender at a time
        turn(k)
        procs[k].stdin.write("go\n")
        procs[k].stdin.flush()
        turn(k)
    steps: dict[str, list[float]] = {k: [] for k in names}
    ratios: dict[str, list[float]] = {k: [] for k in names if k != "plain"}
    try:
        for r in range(args.rounds):
            medians = {}
            for k in names:
                procs[k].stdin.write("go\n")
                procs[k].stdin.flush()
                times = turn(k)
                steps[k] += times
                medians[k] = statistics.median(times)
            for k in ratios:
                ratios[k].append(medians["plain"] / medians[k])
            if (r + 1) % 5 == 0:
                shown = ", ".join(f"{names[k]} {statistics.median(v):.2f}x" for k, v in ratios.items())
                print(f"round {r + 1}/{args.rounds}: plain loop {BATCH * SHAPE['block_size'] / medians['plain']:,.0f} "
                      f"tokens/s; so far {shown}", flush=True)
    finally:
        for p in procs.values():
            p.stdin.close()
            p.wait()
    for k, name in names.items():
        tokens = [BATCH * SHAPE["block_size"] / t for t in steps[k]]
        med = statistics.median(tokens)
        peak = peaks["bf16" if "bf16" in k else "fp32"]
        vs = ratios.get(k)
        rel = (f"  {statistics.median(vs):.2f}x plain loop (per-round {min(vs):.2f}-{max(vs):.2f}, "
               f"faster in {sum(v > 1 for v in vs)}/{len(vs)} rounds)" if vs else "")
        print(f"{name:<18} tokens/s {summary(tokens)}  {1e3 * BATCH * SHAPE['block_size'] / med:5.1f} ms/iter  "
              f"MFU {med * flops / 1e9 / peak:.0%} of {peak:.0f} GFLOP/s{rel}")


if __name__ == "__main__":
    main()
