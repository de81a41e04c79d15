"""Time to quality of the shakespeare-char recipe: wall seconds from process start to val loss ≤ target.

Each repeat launches ``genforge train RECIPE`` as a fresh process (a fresh
token cache too, so tokenizing is counted) and reads its ``metrics.jsonl``:
the validation loss is computed over the whole validation split at every
``train.eval_every`` and at the end. Reported per run: seconds from launch to
the first evaluation at or below ``--target`` (nats/char), the total wall time
of the process, and the final validation loss. ``--baseline`` also runs
nanoGPT's CPU Shakespeare configuration (4×4×128, context 64, batch 12,
2000 iterations, lr 1e-3 with 100 warm-up steps and a cosine to 1e-4,
AdamW betas (0.9, 0.99), weight decay 0.1, gradient clipping at 1.0, dropout
0) through genforge once, for a ratio measured in the same session. It runs
with genforge's fused AdamW, so it is a little faster than nanoGPT's own loop
(``bench/gpt_train.py``) and the ratio errs against the recipe.

``--target nanogpt`` (the default with ``--baseline``) takes nanoGPT's own final validation loss as the
target, so the ratio printed is the issue's yardstick: the recipe's time to nanoGPT's final quality over
nanoGPT's whole run. ``--text FILE`` trains both on your own text (``data.name=text:FILE``) instead of Tiny
Shakespeare, to check the recipe's defaults on a corpus they were not tuned on.

Tiny Shakespeare comes from ``--data-dir`` (default
``$GENFORGE_TEST_DATA/tinyshakespeare`` or the shared folder beside the
checkout); when it is missing the script exits with code 2.

    python bench/gpt_time_to_quality.py [--data-dir DIR | --text FILE] [--repeats 3] [--target 1.88] [--baseline]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_data_dir, fail, print_machine, require_data, require_idle  # noqa: E402

NANOGPT_CPU = ["model.n_layer=4", "model.n_head=4", "model.n_embd=128", "model.block_size=64", "model.dropout=0.0",
               "train.batch_size=12", "train.max_steps=2000", "train.lr=1e-3", "train.warmup_steps=100",
               "train.schedule=cosine", "train.min_lr_ratio=0.1", "train.betas=[0.9,0.99]",
               "train.weight_decay=0.1", "train.grad_clip=1.0", "train.grad_accum=1", "train.precision=fp32",
               "train.optimizer=adamw",
               "train.eval_every=0"]  # scored once at the end, as the recipe is: full-split evaluations cost seconds


def run_once(recipe: str, data_dir: Path, overrides: list[str], target: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        env = dict(os.environ, GENFORGE_CACHE=str(Path(tmp) / "cache"))
        cmd = [sys.executable, "-m", "genforge.cli", "train", recipe, "--data-dir", str(data_dir), "--out", str(out),
               "--no-progress", *[a for o in overrides for a in ("--set", o)]]
        t0 = time.time()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.time() - t0
        if proc.returncode != 0:
            raise SystemExit(f"training failed:\n{proc.stderr[-2000:]}")
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "val/loss" in r]
    hit = next((r for r in evals if r["val/loss"] <= target), None)
    return {"wall_s": wall, "to_target_s": hit["time"] - t0 if hit else None,
            "to_target_step": hit["step"] if hit else None, "final_val": evals[-1]["val/loss"],
            "final_bpc": evals[-1]["val/bpc"], "steps": evals[-1]["step"],
            "curve": [(r["step"], round(r["time"] - t0, 1), round(r["val/loss"], 4)) for r in evals]}


def report(name: str, runs: list[dict], target: float) -> None:
    for i, r in enumerate(runs):
        hit = f"{r['to_target_s']:.1f} s (step {r['to_target_step']})" if r["to_target_s"] else "never"
        print(f"{name} run {i + 1}: val ≤ {target} after {hit}; process {r['wall_s']:.1f} s; final val loss "
              f"{r['final_val']:.4f} nats/char ({r['final_bpc']:.3f} bpc) at step {r['steps']}")
        print(f"    (step, s, val loss): {r['curve']}")
    hits = [r["to_target_s"] for r in runs if r["to_target_s"]]
    walls = [r["wall_s"] for r in runs]
    if hits:
        print(f"{name}: median time to val ≤ {target}: {statistics.median(hits):.1f} s "
              f"(min {min(hits):.1f}, max {max(hits):.1f}, {len(hits)}/{len(runs)} runs reached it); "
              f"median process wall {statistics.median(walls):.1f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="shakespeare-char")
    add_data_dir(ap, "tinyshakespeare", "Tiny Shakespeare's input.txt")
    ap.add_argument("--text", type=Path, help="train on this text file instead (data.name=text:FILE)")
    ap.add_argument("--target", default=None,
                    help="val loss to reach, nats/char, or 'nanogpt' (its final loss; default with --baseline, "
                         "else 1.88)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline", action="store_true", help="also run nanoGPT's CPU configuration once")
    args = ap.parse_args()
    target = args.target or ("nanogpt" if args.baseline else "1.88")
    if target == "nanogpt" and not args.baseline:
        ap.error("--target nanogpt needs --baseline")
    if args.text is not None:
        if not args.text.is_file():
            fail(f"--text {args.text}: no such file")
        extra = [f"data.name=text:{args.text.resolve()}"]
    else:
        require_data(args.data_dir, ["input.txt"], "Tiny Shakespeare")
        extra = []
    require_idle()
    print_machine()
    print(f"corpus: {args.text or args.data_dir / 'input.txt'}", flush=True)
    goal = float("inf") if target == "nanogpt" else float(target)
    first = run_once(args.recipe, args.data_dir, extra, goal)
    if args.baseline:  # between the recipe's runs, so host drift hits both
        base = run_once(args.recipe, args.data_dir, NANOGPT_CPU + extra, goal)
        if target == "nanogpt":
            goal = base["final_val"]
            print(f"target: nanoGPT's final validation loss, {goal:.4f} nats/char", flush=True)
    runs = [first] + [run_once(args.recipe, args.data_dir, extra, goal) for _ in range(args.repeats - 1)]
    for r in runs:  # (the first ran before the target was known)
        hit = next((c for c in r["curve"] if c[2] <= goal), None)
        r["to_target_s"], r["to_target_step"] = (hit[1], hit[0]) if hit else (None, None)
    report(args.recipe, runs, goal)
    if args.baseline:
        report("nanoGPT CPU config via genforge", [base], goal)
        hits = [r["to_target_s"] for r in runs if r["to_target_s"]]
        if hits:  # the yardstick: the recipe's time to target against nanoGPT's whole run
            ours, theirs = statistics.median(hits), base["wall_s"]
            print(f"{args.recipe} median time to val ≤ {goal:.4f} vs the nanoGPT configuration's process wall: "
                  f"{ours:.1f} s vs {theirs:.1f} s = {ours / theirs:.2f} of it ({theirs / ours:.2f}x faster)")
        else:
            print(f"{args.recipe} never reached {goal:.4f}: the target is missed")


if __name__ == "__main__":
    main()
