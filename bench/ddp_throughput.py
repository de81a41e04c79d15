"""Data-parallel throughput: 1 process vs 2 torchrun processes (gloo) on the same recipe and global batch.

Three configurations, each ``--repeats`` times, interleaved, on a synthetic corpus (step speed does not
depend on the text):

* ``1 proc``: one process, ``--threads`` intra-op threads, the global batch;
* ``2 procs``: ``torchrun --nproc_per_node 2``, 1 thread each, half the batch each plus the gradient
  all-reduce;
* ``1 proc, half batch``: one process, 1 thread, half the batch — a rank's compute alone.

The communication overhead per step is ``2 procs`` minus ``1 proc, half batch`` (both run a rank's
compute on one core; the difference is DDP's all-reduce and the waiting for the slower rank). Reports the
median tokens/s over the trainer's log windows after the first.

    python bench/ddp_throughput.py [--recipe shakespeare-char] [--steps 60] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import require_idle, summary  # noqa: E402

from genforge.training.logger import read_metrics  # noqa: E402


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(kind: str, recipe: str, corpus: Path, steps: int, batch: int, threads: int, out: Path) -> float:
    """Median tokens/s of one run of configuration ``kind``."""
    sets = [f"data.name=text:{corpus}", f"train.max_steps={steps}", "train.log_every=10", "train.eval_every=0",
            "train.sample_every=0", "train.checkpoint_every=0", "train.progress=false", "train.ema_decay=0"]
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo")
    if kind == "2 procs":
        sets += [f"train.batch_size={batch}", "train.num_threads=1"]
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--rdzv_backend=c10d",
               f"--rdzv_endpoint=127.0.0.1:{_port()}", "-m", "genforge"]
        env["OMP_NUM_THREADS"] = "1"
    else:
        half = kind.endswith("half batch")
        sets += [f"train.batch_size={batch // 2 if half else batch}", f"train.num_threads={1 if half else threads}"]
        cmd = [sys.executable, "-m", "genforge"]
    cmd += ["train", recipe, "--out", str(out), *[a for s in sets for a in ("--set", s)]]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{kind} failed:\n{proc.stderr[-2000:]}")
    rates = [r["tokens_per_s"] for r in read_metrics(out) if "tokens_per_s" in r][1:]
    return statistics.median(rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="shakespeare-char")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=32, help="the global batch (even)")
    ap.add_argument("--threads", type=int, default=2, help="threads of the 1-process run")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    busy = require_idle()
    rnd = random.Random(0)
    words = "the quick brown fox jumps over a lazy dog while ROMEO: JULIET: ABCDEFGHIJKLMNOPQRSTUVWXYZ,.!?\n".split(" ")
    kinds = ("1 proc", "2 procs", "1 proc, half batch")
    rates: dict[str, list[float]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory() as d:
        corpus = Path(d) / "corpus.txt"
        corpus.write_text(" ".join(rnd.choice(words) for _ in range(200_000)), encoding="utf-8")
        for i in range(args.repeats):
            for kind in kinds:
                out = Path(d) / f"{kind.replace(' ', '_').replace(',', '')}-{i}"
                rates[kind].append(_run(kind, args.recipe, corpus, args.steps, args.batch_size, args.threads, out))
    print(f"machine busy before start: {busy:.0%}; {args.recipe}, global batch {args.batch_size}, "
          f"{args.steps} steps, {args.repeats} repeats (tokens/s, median over log windows after the first)")
    for kind in kinds:
        print(f"  {kind:20s} {summary(rates[kind])}")
    one, two, half = (statistics.median(rates[k]) for k in kinds)
    tokens_per_step = args.batch_size * _block(args.recipe)
    t_two, t_half = tokens_per_step / two, tokens_per_step / 2 / half
    print(f"2 procs / 1 proc throughput: {two / one:.2f}x")
    print(f"step time: 2 procs {t_two * 1e3:.1f} ms, a rank's compute alone {t_half * 1e3:.1f} ms → "
          f"communication + waiting {max(0.0, t_two - t_half) * 1e3:.1f} ms per step "
          f"({max(0.0, t_two - t_half) / t_two:.0%} of the step)")


def _block(recipe: str) -> int:
    from genforge.training.run import load_recipe

    raw, _ = load_recipe(recipe)
    return int(raw["model"]["block_size"])


if __name__ == "__main__":
    main()
