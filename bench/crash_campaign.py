"""Crash campaign: kill training with SIGKILL at random moments, corrupt checkpoints, resume, compare bit for bit.

For each family (tiny-gan, tiny-vae, tiny-gpt on a small corpus of its own) the
script trains an uninterrupted reference run, then the same recipe again with a
checkpoint every few steps, killed with SIGKILL at random moments (seeded) and
resumed each time with ``genforge train --out RUN --resume``. Kills land during
start-up and resume, between steps and in the middle of checkpoint writes.
Between some kills the newest checkpoint that verifies is corrupted at random:
a file truncated, bytes flipped, or a file deleted. Before each resume the
leftovers of killed writes are removed (``remove_stale_temporaries``, as the
training start-up does).

Every resume must succeed, from the newest checkpoint that verifies (the one
``newest_valid_checkpoint`` names, skipping exactly the ones it skips), and the
final weights (checkpoint weights, EMA and the run's sampling weights) must be
bit-identical to the reference. Prints one table row per family; exits 1 on
any failure.

    python bench/crash_campaign.py [--kills 51] [--seed 0] [--families tiny-gan tiny-vae tiny-gpt]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from safetensors.torch import load_file  # noqa: E402

from genforge.rundir import CHECKPOINTS_DIR, EMA_WEIGHTS, MANIFEST, WEIGHTS  # noqa: E402
from genforge.training.checkpoint import (list_checkpoints, newest_valid_checkpoint,  # noqa: E402
                                          remove_stale_temporaries, verify_checkpoint)

FAMILIES = ("tiny-gan", "tiny-vae", "tiny-gpt")
CHECKPOINT_EVERY = 10
KEEP = 3
PRE_PROGRESS = 0.15  # share of kills that land before the resumed run writes anything (start-up, resume)
CORRUPT = 0.35  # chance of corrupting the newest valid checkpoint between two kills
RESUMED = re.compile(r"^resumed from (.+) \(step (\d+)\)$", re.M)
SKIPPED = re.compile(r"^skipped (\S+): (.*)$", re.M)


@dataclass
class Row:
    family: str
    kills: int = 0
    corruptions: dict[str, int] = field(default_factory=lambda: {"truncate": 0, "flip": 0, "delete": 0})
    resumes: int = 0
    skipped: int = 0
    temporaries: int = 0
    identical: bool = False
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)


def recipe_args(family: str, work: Path, max_steps: int) -> list[str]:
    extra = ["--data-dir", str(work / "corpus"), "--no-verify"] if family == "tiny-gpt" else []
    return [*extra, "--no-progress", "--set", f"train.max_steps={max_steps}",
            "--set", f"train.checkpoint_every={CHECKPOINT_EVERY}", "--set", f"train.keep_checkpoints={KEEP}",
            "--set", "train.num_threads=1", "--set", "train.sample_every=0"]


def genforge(*args: str) -> list[str]:
    return [sys.executable, "-m", "genforge.cli", "train", *args]


def snapshot(run: Path) -> dict[str, tuple[int, int]]:
    """Identity of every checkpoint folder: a rewritten one (same step) gets a new inode."""
    root = run / CHECKPOINTS_DIR
    out = {}
    if root.is_dir():
        for e in os.scandir(root):
            if e.name.startswith("step-"):
                try:
                    st = e.stat()
                    out[e.name] = (st.st_ino, st.st_mtime_ns)
                except FileNotFoundError:
                    pass
    return out


def new_checkpoints(run: Path, before: dict[str, tuple[int, int]]) -> int:
    return sum(1 for k, v in snapshot(run).items() if before.get(k) != v)


def final_tensors(run: Path, max_steps: int) -> dict:
    step, folder = list_checkpoints(run)[-1]
    if step != max_steps:
        raise RuntimeError(f"newest checkpoint is step {step}, expected {max_steps}")
    out = {f"ckpt/{k}": v for k, v in load_file(folder / WEIGHTS).items()}
    if (folder / EMA_WEIGHTS).is_file():
        out.update({f"ema/{k}": v for k, v in load_file(folder / EMA_WEIGHTS).items()})
    out.update({f"run/{k}": v for k, v in load_file(run / WEIGHTS).items()})
    return out


def corrupt(folder: Path, rng: random.Random, row: Row) -> str:
    """Damage one file of ``folder`` at random; returns what was done."""
    files = sorted(p for p in folder.iterdir() if p.is_file())
    target = rng.choice(files)
    kind = rng.choice(["truncate", "flip", "delete"])
    size = target.stat().st_size
    if kind == "truncate" and size > 0:
        with open(target, "r+b") as f:
            f.truncate(rng.randrange(size))
    elif kind == "flip" and size > 0:
        data = bytearray(target.read_bytes())
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(size)] ^= rng.randint(1, 255)
        target.write_bytes(bytes(data))
    else:
        kind = "delete"
        target.unlink()
    row.corruptions[kind] += 1
    return f"{kind} {target.name}"


def wait_exit(proc: subprocess.Popen, seconds: float) -> int | None:
    try:
        return proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return None


def campaign(family: str, kills: int, rng: random.Random, work: Path, max_steps: int | None) -> Row:
    row = Row(family)
    t0 = time.perf_counter()
    steps = max_steps or CHECKPOINT_EVERY * (3 * kills + 8)
    env = dict(os.environ, GENFORGE_CACHE=str(work / "cache"))
    args = recipe_args(family, work, steps)
    reference, run = work / f"{family}-reference", work / f"{family}-killed"
    proc = subprocess.run(genforge(family, "--out", str(reference), *args), cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        row.failures.append(f"reference run failed: {proc.stderr.strip()[-500:]}")
        return row

    log = work / f"{family}.stderr"
    first = True
    interval = 0.1  # seconds between checkpoints, measured as the campaign goes
    finished = False
    while not finished:
        expected = None
        if not first:
            removed = remove_stale_temporaries(run)
            row.temporaries += len(removed)
            valid, skipped = newest_valid_checkpoint(run)
            if valid is None:
                row.failures.append(f"no checkpoint verifies before resume {row.resumes + 1}: {skipped}")
                break
            expected = (valid, [(p.relative_to(run).as_posix(), r) for p, r in skipped])
        cmd = genforge(family, "--out", str(run), *args) if first else genforge("--out", str(run), "--resume", *args)
        before = snapshot(run)
        with open(log, "w") as err:
            proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err,
                                    start_new_session=True)
        if not first:
            row.resumes += 1
        killed = False
        if row.kills < kills:
            if not first and rng.random() < PRE_PROGRESS:
                time.sleep(rng.uniform(0.0, 2.5))  # start-up, reading the config and data, loading the checkpoint
            else:
                # wait for 1-3 new checkpoints, then kill anywhere in the next interval (writes included)
                target, seen, last_t = rng.randint(1, 3), 0, time.perf_counter()
                deadline = time.time() + 300
                while proc.poll() is None and seen < target:
                    if time.time() > deadline:
                        row.failures.append("no checkpoint written within 300 s")
                        break
                    n = new_checkpoints(run, before)
                    if n > seen:
                        now = time.perf_counter()
                        if seen:
                            interval = 0.7 * interval + 0.3 * (now - last_t) / (n - seen)
                        seen, last_t = n, now
                    time.sleep(0.005)
                time.sleep(rng.uniform(0.0, 1.2 * interval))
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                killed = True
                row.kills += 1
        rc = proc.wait() if killed else wait_exit(proc, 600)
        text = log.read_text(errors="replace")
        row.skipped += len(SKIPPED.findall(text))
        m = RESUMED.search(text)
        if expected is not None and m:
            got_skips = SKIPPED.findall(text)
            if Path(m.group(1)) != expected[0]:
                row.failures.append(f"resume {row.resumes} started from {m.group(1)}, expected {expected[0]}")
            elif got_skips != expected[1]:
                row.failures.append(f"resume {row.resumes} skipped {got_skips}, expected {expected[1]}")
        if not killed:
            if rc != 0:
                row.failures.append(f"{'run' if first else f'resume {row.resumes}'} failed (rc {rc}): "
                                    f"{text.strip()[-800:]}")
                break
            if row.kills < kills:
                row.failures.append(f"the run finished after {row.kills} of {kills} kills; raise --max-steps")
            finished = True
            break
        if first and not list_checkpoints(run):
            row.failures.append("killed before the first checkpoint")
            break
        first = False
        # the next resume must skip a corrupted newest checkpoint; keep at least one valid one behind it
        valid = [p for _, p in reversed(list_checkpoints(run)) if verify_checkpoint(p) is None]
        if len(valid) >= 2 and rng.random() < CORRUPT:
            what = corrupt(valid[0], rng, row)
            if verify_checkpoint(valid[0]) is None and not what.endswith(MANIFEST):
                row.failures.append(f"{what} in {valid[0].name} went undetected")

    if finished:
        leftovers = remove_stale_temporaries(run)
        if leftovers:
            row.failures.append(f"a finished run left temporaries: {[p.name for p in leftovers]}")
        bad = [(p.name, r) for _, p in list_checkpoints(run) if (r := verify_checkpoint(p)) is not None]
        if bad:
            row.failures.append(f"checkpoints of the finished run do not verify: {bad}")
        try:
            a, b = final_tensors(reference, steps), final_tensors(run, steps)
            different = sorted(k for k in a.keys() | b.keys() if k not in a or k not in b or not (a[k] == b[k]).all())
            row.identical = not different
            if different:
                row.failures.append(f"final weights differ in {different[:5]}")
        except Exception as e:  # noqa: BLE001 - reported as a failure of this family
            row.failures.append(f"cannot compare final weights: {e}")
    row.seconds = time.perf_counter() - t0
    return row


def table(rows: list[Row]) -> str:
    head = ("family", "kills", "truncate", "flip", "delete", "resumes", "skipped", "temporaries", "bit-identical",
            "seconds")
    body = [(r.family, str(r.kills), *(str(r.corruptions[k]) for k in ("truncate", "flip", "delete")),
             str(r.resumes), str(r.skipped), str(r.temporaries), "yes" if r.identical else "NO", f"{r.seconds:.0f}")
            for r in rows]
    total = ("total", *(str(sum(int(b[i]) for b in body)) for i in range(1, 8)),
             "yes" if rows and all(r.identical for r in rows) else "NO", f"{sum(r.seconds for r in rows):.0f}")
    lines = [head, *body, total]
    widths = [max(len(x[i]) for x in lines) for i in range(len(head))]

    def fmt(cells: tuple[str, ...]) -> str:
        return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([fmt(head), "  ".join("-" * w for w in widths), *map(fmt, body), fmt(total)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=51, help="SIGKILLs in total, shared among the families (default 51)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill times and corruptions (default 0)")
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    ap.add_argument("--max-steps", type=int, help=f"train.max_steps of every run (default: "
                                                  f"{CHECKPOINT_EVERY} * (3 * kills per family + 8))")
    ap.add_argument("--keep", action="store_true", help="keep the run directories (their path is printed)")
    args = ap.parse_args(argv)
    if args.kills < 0:
        ap.error("--kills must be >= 0")

    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="crash-campaign-"))
    (work / "corpus").mkdir()
    (work / "corpus" / "input.txt").write_text("".join(f"Line {i}: to be or not to be.\n" for i in range(400)))
    share = [args.kills // len(args.families) + (i < args.kills % len(args.families))
             for i in range(len(args.families))]
    rows = []
    try:
        for family, kills in zip(args.families, share):
            row = campaign(family, kills, rng, work, args.max_steps)
            rows.append(row)
            status = "ok" if not row.failures else f"{len(row.failures)} failure(s)"
            print(f"{family}: {row.kills} kills, {row.resumes} resumes, {row.seconds:.0f} s: {status}",
                  file=sys.stderr, flush=True)
    finally:
        if args.keep:
            print(f"runs kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(table(rows))
    failures = [f"{r.family}: {f}" for r in rows for f in r.failures]
    for f in failures:
        print(f"FAIL {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
