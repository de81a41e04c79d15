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

Data: Tiny Shakespeare's training split from ``--data-dir`` (default
``$GENFORGE_TEST_DATA/tinyshakespeare`` or the shared folder beside the
checkout); when it is missing the script exits with code 2 before starting any
worker, unless ``--synthetic`` asks for uniform random ids (the speed does not
depend on the text). Workers write step times as JSON lines on their stdout and
everything else on stderr; a worker that fails is reported with its message
and its exit status (2 for missing data).

    python bench/gpt_train.py [--data-dir DIR | --synthetic] [--turn 20] [--rounds 25] [--precision fp32 bf16-mixed]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import EXIT_NO_DATA, add_data_dir, fail, require_data, require_idle, summary  # noqa: E402
from peak import matmul_peak  # noqa: E402

from genforge.config import TrainConfig  # noqa: E402
from genforge.data import TokenBatches  # noqa: E402
from genforge.models.gpt import GPT, GPTConfig  # noqa: E402
from genforge.training.trainer import Trainer  # noqa: E402

SHAPE = dict(n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0, bias=True)
BATCH = 12


SYNTHETIC_HINT = "--synthetic to time on random ids"


def corpus_ids(data_dir: Path | None) -> np.ndarray:
    """Character ids of Tiny Shakespeare's training split in ``data_dir``; ``None``: synthetic uniform ids."""
    if data_dir is None:
        return np.random.default_rng(0).integers(0, 65, 1_000_000, dtype=np.uint16)
    text = (data_dir / "input.txt").read_text(encoding="utf-8")
    chars = sorted(set(text))
    lut = {c: i for i, c in enumerate(chars)}
    return np.array([lut[c] for c in text[: int(0.9 * len(text))]], dtype=np.uint16)


def model(vocab: int) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=vocab, **SHAPE))


class Turns:
    """Batches handed out in turns of ``turn`` steps; times each step from batch to next request.

    Between turns it writes the turn's step times (JSON) on ``pipe`` and blocks
    until the parent writes a line on stdin, so contenders in other processes
    run in between without their time being counted.
    """

    def __init__(self, batches, turn: int, warmup: int, pipe) -> None:
        self.batches, self.turn, self.warmup, self.left, self.pipe = batches, turn, warmup, 0, pipe
        self.times: list[float] = []
        self.handed: float | None = None

    def __iter__(self):
        return self

    def __next__(self):
        now = time.perf_counter()
        if self.handed is not None:
            self.times.append(now - self.handed)
        if self.left == 0:  # end of a turn (or ready to start): report, then wait for ours
            print(json.dumps(self.times), file=self.pipe, flush=True)
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


def worker(kind: str, turn: int, warmup: int, data_dir: Path | None) -> None:
    """One contender. Step times go to the parent over the original stdout; anything else printed, by this
    script, genforge, torch or C code, goes to stderr (file descriptor 1 is pointed at 2), so that a message
    can never be taken for a turn's JSON. Missing data: one line on stderr, exit 2."""
    pipe = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    if data_dir is not None:
        require_data(data_dir, ["input.txt"], "Tiny Shakespeare", alternative=SYNTHETIC_HINT)
    ids = corpus_ids(data_dir)
    vocab, T = int(ids.max()) + 1, SHAPE["block_size"]
    if kind == "plain":
        plain_loop(ids, vocab, Turns(nanogpt_batches(ids, T), turn, warmup, pipe))
    else:
        genforge_loop(ids, vocab, Turns(TokenBatches(ids, T, BATCH, seed=0), turn, warmup, pipe), kind)


class WorkerFailed(Exception):
    """A worker died or wrote something that is not its step times; ``code`` is the exit status to pass on."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class Worker:
    """A contender's process: ``--worker KIND`` with stdin/stdout pipes and its stderr kept in a temporary file."""

    def __init__(self, kind: str, name: str, argv: list[str]) -> None:
        self.kind, self.name, self.reported = kind, name, False
        self.stderr = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", kind, *argv], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.stderr, text=True)

    def messages(self) -> str:
        """What the worker wrote on stderr so far."""
        self.stderr.flush()
        self.stderr.seek(0)
        return self.stderr.read().strip()

    def failed(self, what: str) -> WorkerFailed:
        """The failure, with the worker's last message line and exit status (2, missing data, is passed on)."""
        code = self.proc.wait()
        text = self.messages()
        self.reported = True
        if code != EXIT_NO_DATA and text:
            print(text[-4000:], file=sys.stderr)  # a traceback: show its tail before the summary line
        last = text.splitlines()[-1] if text else "no message on stderr"
        return WorkerFailed(f"the {self.name} worker {what} (exit {code}): {last}",
                            EXIT_NO_DATA if code == EXIT_NO_DATA else 1)

    def go(self) -> None:
        """Let the worker run its next turn."""
        try:
            self.proc.stdin.write("go\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise self.failed("stopped") from None

    def turn(self) -> list[float]:
        """The step times of the worker's turn."""
        line = self.proc.stdout.readline()
        if not line:
            raise self.failed("died")
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            self.proc.kill()
            raise self.failed(f"wrote {line.strip()[:200]!r} instead of its step times") from None

    def close(self) -> None:
        """Stop the worker (it exits when its stdin closes) and echo what it wrote on stderr, if anything."""
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        self.proc.wait()
        text = self.messages()
        if text and not self.reported:
            print(f"--- {self.name} worker, stderr ---\n{text[-4000:]}", file=sys.stderr)
        self.stderr.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", help=argparse.SUPPRESS)  # internal: one contender, driven over stdin/stdout
    add_data_dir(ap, "tinyshakespeare", "Tiny Shakespeare's input.txt")
    ap.add_argument("--synthetic", action="store_true",
                    help="time on uniform random ids instead of Tiny Shakespeare (speed does not depend on the text)")
    ap.add_argument("--turn", type=int, default=20, help="steps per turn (default 20)")
    ap.add_argument("--rounds", type=int, default=25, help="turns per contender (default 25)")
    ap.add_argument("--warmup", type=int, default=30, help="untimed steps first (default 30)")
    ap.add_argument("--precision", nargs="+", choices=["fp32", "bf16-mixed"],
                    help="genforge precisions to time (default: fp32, plus bf16-mixed where bf16 matmul is faster)")
    args = ap.parse_args()
    data_dir = None if args.synthetic else args.data_dir
    if args.worker:
        worker(args.worker, args.turn, args.warmup, data_dir)
        return
    if data_dir is not None:  # before any worker starts: one line and exit 2, not a worker dying mid-protocol
        require_data(data_dir, ["input.txt"], "Tiny Shakespeare", alternative=SYNTHETIC_HINT)
    require_idle()
    print(f"data: {'synthetic uniform ids (--synthetic)' if data_dir is None else data_dir / 'input.txt'}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(f"matmul peak: fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s")
    vocab = int(corpus_ids(data_dir).max()) + 1
    gpt = model(vocab)
    flops = gpt.flops_per_token(SHAPE["block_size"])
    print(f"model: {gpt.num_params() / 1e6:.2f} M params, {flops / 1e6:.2f} MFLOP per token (train)")
    precisions = args.precision or (["fp32", "bf16-mixed"] if peaks["bf16"] > peaks["fp32"] else ["fp32"])
    names = {"plain": "plain loop fp32", **{p: f"genforge {p}" for p in precisions}}
    argv = ["--turn", str(args.turn), "--warmup", str(args.warmup),
            *(["--synthetic"] if data_dir is None else ["--data-dir", str(data_dir)])]
    workers = {k: Worker(k, name, argv) for k, name in names.items()}
    steps: dict[str, list[float]] = {k: [] for k in names}
    ratios: dict[str, list[float]] = {k: [] for k in names if k != "plain"}
    try:
        for w in workers.values():  # ready (imports done), then the untimed warm-up, one contender at a time
            w.turn()
            w.go()
            w.turn()
        for r in range(args.rounds):
            medians = {}
            for k, w in workers.items():
                w.go()
                times = w.turn()
                steps[k] += times
                medians[k] = statistics.median(times)
            for k in ratios:
                ratios[k].append(medians["plain"] / medians[k])
            if (r + 1) % 5 == 0:
                shown = ", ".join(f"{names[k]} {statistics.median(v):.2f}x" for k, v in ratios.items())
                print(f"round {r + 1}/{args.rounds}: plain loop {BATCH * SHAPE['block_size'] / medians['plain']:,.0f} "
                      f"tokens/s; so far {shown}", flush=True)
    except WorkerFailed as e:
        failure = e
    else:
        failure = None
    finally:
        for w in workers.values():
            w.close()
    if failure is not None:
        fail(str(failure), code=failure.code)
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
