"""Command kills: SIGKILL every command other than ``train`` at random moments and check what it leaves.

On tiny runs (tiny-gan, an untrained super-resolution model, tiny-gpt on a small corpus) the script first runs
each command once to completion (its duration sets the kill window), then, round-robin, starts a command and
kills it after a random delay (seeded; most kills fall in the second half of the command's run, where it
writes). Commands: eval (text run, alternating metrics), compare, export --format onnx and hf, synth, inpaint
(a folder of images), upscale, sample (-o FILE --overwrite, over an earlier result), tune (2 trials of tiny-gpt
into a fresh study; the same tune run again must finish it, its reports whole) and serve (killed during its
start-up; it must have written nothing, and the next start must become ready). After each kill:

* no incomplete output under a final name: an export folder holds every file its format writes (onnx: the
  graphs verify.json lists), a synth folder its manifest and every image, image files open, eval.json parses,
  a leaderboard's .md and .html are both there or neither (after the next start);
* earlier results are not lost: the earlier sample file is still a whole PNG, eval.json still holds every
  metric evaluated before (in ``results`` or ``history``), an earlier leaderboard is still there;
* leftovers are cleaned at the next start: the start-up step each command runs (``check_output``,
  ``export.output_dir``, ``synth.check_new_output``, ``finish_interrupted``, ``repair_eval``) leaves no
  temporary behind, and eval.md is again the rendering of eval.json.

Prints the counts per command (kills, kills that left a temporary, completed before the kill, failures) and
exits 1 on any failure.

    python bench/command_kills.py [--kills 104] [--seed 0] [--commands eval compare ...]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

COMMANDS = ("eval", "compare", "export-onnx", "export-hf", "synth", "inpaint", "upscale", "sample", "tune", "serve")
# Imported once here, before any tensor work, so that each command runs in a forked child in milliseconds instead
# of a fresh interpreter importing torch for seconds (the child is the real `genforge` CLI, killed with SIGKILL).
PRELOAD = ("torch", "onnxruntime", "genforge.cli", "genforge.models", "genforge.export", "genforge.export.onnx",
           "genforge.export.hf", "genforge.sampling.images", "genforge.sampling.synth", "genforge.sampling.inpaint",
           "genforge.tasks.evaluate", "genforge.evaluation.leaderboard.write", "genforge.training.run",
           "genforge.training.tune", "optuna", "genforge.serve", "uvicorn", "fastapi")


def _kill_at_event(kill_at: int, count_file: Path | None) -> None:
    """Make this (child) process SIGKILL itself at its ``kill_at``-th file-system write event (opening a file for
    writing, making a folder, fsync, rename, unlink): kills that land exactly inside the writes. With
    ``kill_at`` 0 nothing is killed and the number of events is written to ``count_file`` at exit."""
    import builtins
    import io

    events = [0]

    def hit() -> None:
        events[0] += 1
        if events[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    def wrap(fn, writes=lambda *a, **k: True):
        def wrapped(*a, **k):
            if writes(*a, **k):
                hit()
            return fn(*a, **k)
        return wrapped

    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT
    opened = wrap(io.open, lambda f, mode="r", *a, **k: any(c in mode for c in "wax+"))
    builtins.open = io.open = opened
    os.open = wrap(os.open, lambda path, flags, *a, **k: bool(flags & writing))
    for name in ("replace", "rename", "mkdir", "fsync", "unlink", "rmdir"):
        setattr(os, name, wrap(getattr(os, name)))
    if count_file is not None:
        import atexit

        atexit.register(lambda: Path(count_file).write_text(str(events[0])))


def spawn(args: list, kill_at: int = -1, count_file: Path | None = None) -> int:
    """Fork a child that runs ``genforge ARGS`` (output discarded) and exits with its code; returns its pid.
    ``kill_at`` > 0: the child kills itself at that write event; 0: it counts them into ``count_file``."""
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            if kill_at >= 0:
                _kill_at_event(kill_at, count_file)
            from genforge.cli import main

            code = main([str(a) for a in args])
        finally:
            if count_file is not None:
                __import__("atexit")._run_exitfuncs()
            os._exit(code if isinstance(code, int) else 1)
    return pid


def genforge(*args, count_file: Path | None = None) -> int:
    """Run ``genforge ARGS`` to completion in a forked child (counting its write events into ``count_file``);
    returns its exit code."""
    _, status = os.waitpid(spawn(list(args), 0 if count_file else -1, count_file), 0)
    return os.waitstatus_to_exitcode(status)


def in_child(fn, *args) -> None:
    """Run ``fn(*args)`` in a forked child (tensor work never happens in this process, which keeps forking)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            fn(*args)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"setup failed: {fn.__name__}")


def setup(root: Path) -> dict[str, Path]:
    """The tiny runs and inputs every command works on (call in a child)."""
    import torch
    from PIL import Image

    from genforge.models import build, config_class
    from genforge.training.run import train

    corpus = root / "corpus.txt"
    corpus.write_text("".join(f"line {i % 17} of a small corpus, with words.\n" for i in range(300)), encoding="utf-8")
    fast = ["train.max_steps=2", "train.checkpoint_every=2", "train.sample_every=2", "train.log_every=1"]
    train("tiny-gan", overrides=fast, out=root / "gan", progress=False)
    train("tiny-gpt", overrides=[*fast, f"data.name=text:{corpus}"], out=root / "gpt", progress=False)
    sr = build(config_class("superres")(family="superres", channels=1, image_size=8, factors=[2], width=8))
    sr.save_pretrained(root / "sr", run_config={"task": "image"})
    (root / "images").mkdir()
    for i in range(3):
        Image.fromarray((torch.rand(8, 8) * 255).byte().numpy(), mode="L").save(root / "images" / f"im{i}.png")
    Image.fromarray((torch.rand(4, 4) * 255).byte().numpy(), mode="L").save(root / "low.png")
    (root / "space.yaml").write_text("train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n")


def inputs(root: Path) -> dict[str, Path]:
    return {"gan": root / "gan", "gpt": root / "gpt", "sr": root / "sr", "images": root / "images",
            "low": root / "low.png", "work": root / "work", "corpus": root / "corpus.txt",
            "space": root / "space.yaml"}


def argv(command: str, paths: dict[str, Path], i: int) -> tuple[list[str], Path]:
    """The command line of attempt ``i`` and its output (a fresh one, except sample/eval/compare, which
    write over an earlier result on purpose)."""
    w = paths["work"]
    if command == "eval":
        metric = ("ppl", "distinct")[(i // len(COMMANDS)) % 2]  # alternating: both must stay in eval.json
        return ["eval", paths["gpt"], "--metrics", metric, "--n", "8", "--no-progress"], paths["gpt"]
    if command == "compare":
        return ["compare", paths["gpt"], paths["gan"], "--out", w / "board", "--overwrite"], w / "board"
    if command.startswith("export-"):
        out = w / f"{command}-{i}"
        return ["export", paths["gpt" if i % 2 else "gan"], "--format", command[7:], "--out", out], out
    if command == "synth":
        out = w / f"synth-{i}"
        return ["synth", paths["gan"], "--n", "40", "--out", out], out
    if command == "inpaint":
        out = w / f"inpaint-{i}"
        return ["inpaint", paths["gan"], "--image", paths["images"], "--mask", "center", "--steps", "2", "-o",
                out], out
    if command == "upscale":
        out = w / f"upscale-{i}.png"
        return ["upscale", paths["sr"], "--image", paths["low"], "--steps", "2", "-o", out], out
    if command == "tune":  # a fresh study each round: the kill lands in a trial or in the reports
        out = w / f"study-{i}"
        return ["tune", "tiny-gpt", "--space", paths["space"], "--trials", "2", "--metric", "eval/val/loss",
                "--out", out, "--heartbeat", "1", "--no-prune", *[a for kv in (
                    f"data.name=text:{paths['corpus']}", "train.max_steps=4", "train.eval_every=2",
                    "train.sample_every=100", "train.checkpoint_every=100", "train.log_every=2")
                    for a in ("--set", kv)]], out
    if command == "serve":
        return ["serve", paths["gan"], paths["gpt"], "--port", str(free_port()), "--log-level", "critical"], \
            paths["gan"]
    out = w / "sample.png"
    return ["sample", paths["gan"], "--n", "16", "-o", out, "--overwrite"], out


def free_port() -> int:
    with __import__("socket").socket() as s:
        return s.bind(("127.0.0.1", 0)) or s.getsockname()[1]


def serve_until_ready(args: list, timeout: float = 60.0) -> float:
    """Start ``genforge serve ARGS`` in a child until /readyz answers 200, then SIGINT; seconds start-up took."""
    import urllib.request
    port = args[args.index("--port") + 1]
    t, pid = time.perf_counter(), spawn(args)
    try:
        while time.perf_counter() - t < timeout:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                    if r.status == 200:
                        return time.perf_counter() - t
            except OSError:
                if os.waitpid(pid, os.WNOHANG)[0]:
                    pid = 0
                    raise RuntimeError("serve exited during start-up") from None
                time.sleep(0.05)
        raise RuntimeError(f"serve not ready after {timeout:.0f} s")
    finally:
        if pid:
            os.kill(pid, signal.SIGINT), os.waitpid(pid, 0)


def png_ok(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
        return True
    except Exception:  # noqa: BLE001 - any failure to read is an incomplete file
        return False


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")] \
        if folder.is_dir() else []


def next_start(command: str, out: Path, args: list) -> None:
    """What the command does first when started again on ``out`` (its clean-up of a killed predecessor); tune
    and serve are started again in full (the same tune must finish its study; serve must start)."""
    if command == "tune":
        time.sleep(3.2)  # GRACE heartbeats of 1 s: the killed worker's running trial is then failed as stale
        return None if genforge(*args) == 0 else print("tune exited non-zero after a kill", file=sys.stderr)
    if command == "serve":
        serve_until_ready([*args[:args.index("--port") + 1], str(free_port()), *args[args.index("--port") + 2:]])
        return
    from genforge.evaluation.leaderboard.write import finish_interrupted
    from genforge.evaluation.record import eval_lock, repair_eval
    from genforge.io import remove_stale
    from genforge.rundir import check_location

    if command == "eval":
        with eval_lock(out):
            repair_eval(out)
    elif command == "compare":
        finish_interrupted(out)
        remove_stale(out, report=False)
    else:
        check_location(out, command=command.split("-")[0], folder=out.suffix != ".png")


def check(command: str, out: Path, state: dict) -> list[str]:
    """Problems after a kill and the next start (empty when none); updates ``state`` (what must survive)."""
    from genforge.evaluation.leaderboard.write import HTML_NAME, MD_NAME
    from genforge.evaluation.record import format_markdown, read_eval

    bad = []
    folder = written_in(command, out)
    if temporaries(folder):
        bad.append(f"temporaries left after the next start: {[p.name for p in temporaries(folder)]}")
    if command == "eval":
        record = read_eval(out)
        metrics = set() if record is None else {r["metric"] for r in record["results"] + record["history"]}
        if not state.get("metrics", set()) <= metrics:
            bad.append(f"eval.json lost {state['metrics'] - metrics}")
        if record is not None and (out / "eval.md").read_text(encoding="utf-8") != format_markdown(record):
            bad.append("eval.md is not eval.json's")
        state["metrics"] = metrics
    elif command == "compare":
        have = [(out / n).is_file() for n in (MD_NAME, HTML_NAME)]
        if have[0] != have[1] or (state.get("board") and not all(have)):
            bad.append(f"leaderboard files {dict(zip((MD_NAME, HTML_NAME), have))}")
        state["board"] = all(have)
    elif command.startswith("export-") and out.exists():
        if command == "export-onnx":
            verify = out / "verify.json"
            graphs = json.loads(verify.read_text())["graphs"] if verify.is_file() else {}
            if not graphs or not all((out / g["file"]).is_file() for g in graphs.values()):
                bad.append(f"incomplete export folder {out}: {sorted(p.name for p in out.iterdir())}")
        elif not all((out / n).is_file() for n in ("config.json", "model.safetensors", "README.md")):
            bad.append(f"incomplete export folder {out}: {sorted(p.name for p in out.iterdir())}")
    elif command == "synth" and out.exists():
        pngs = list(out.rglob("*.png"))
        if not (out / "manifest.json").is_file() or len(pngs) != 40:
            bad.append(f"incomplete synth folder {out} ({len(pngs)} images)")
    elif command == "inpaint" and out.exists():
        files = sorted(out.iterdir())
        if len(files) != 3 or not all(png_ok(p) for p in files):
            bad.append(f"incomplete inpaint folder {out}: {[p.name for p in files]}")
    elif command in ("upscale", "sample") and out.exists() and not png_ok(out):
        bad.append(f"{out} is not a whole PNG")
    bad += check_tune(out) if command == "tune" else check_serve(out, state) if command == "serve" else []
    if command == "sample":
        if state.get("sample") and not out.is_file():
            bad.append("the earlier sample was lost")
        state["sample"] = state.get("sample") or out.is_file()
    return bad


def check_tune(out: Path) -> list[str]:
    """A finished study's reports are whole: results.csv (2 complete), .md, best.yaml, plot, leaderboard."""
    import csv, yaml  # noqa: E401
    bad = []
    try:
        rows = list(csv.DictReader((out / "results.csv").open(encoding="utf-8")))
        if sum(r["state"] == "COMPLETE" for r in rows) < 2:
            bad.append(f"study not finished: {[r['state'] for r in rows]}")
        md = (out / "results.md").read_text(encoding="utf-8")
        if not md.startswith("# Study") or not md.endswith("|\n") or md.count("\n| ") < len(rows) + 1:
            bad.append("results.md is not whole")
        if not isinstance(yaml.safe_load((out / "best.yaml").read_text(encoding="utf-8")).get("model"), dict):
            bad.append("best.yaml is not a whole recipe")
    except (OSError, KeyError, AttributeError, yaml.YAMLError) as e:
        bad.append(f"study reports missing or partial: {e}")
    if not png_ok(out / "history.png"):
        bad.append("history.png is not a whole PNG")
    if not all((out / n).is_file() for n in ("leaderboard.md", "leaderboard.html")):
        bad.append("the trials' leaderboard is missing")
    return bad


def check_serve(out: Path, state: dict) -> list[str]:
    """Serving wrote nothing: the runs it served are unchanged (but for eval's files) and its folder empty."""
    now = {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for f in (out, out.parent / "gpt", Path.cwd())
           for p in sorted(f.rglob("*")) if not p.name.startswith((".eval.", "eval."))}
    before = state.setdefault("tree", now)
    changed = sorted(set(before.items()) ^ set(now.items()))
    return [f"serve changed or left files: {[k for k, _ in changed][:5]}"] if changed else []


def reference_run(c: str, paths: dict[str, Path], root: Path, state: dict) -> tuple[float, int]:
    """Run ``c`` once to completion (serve: until ready); its duration and its number of write events."""
    args, out = argv(c, paths, -1 if c not in ("eval",) else 1)
    if c == "serve":
        check(c, out, state)  # what the runs hold before any serve
        return serve_until_ready(args), 1
    t = time.perf_counter()
    code = genforge(*args, count_file=root / f"events-{c}")
    duration = time.perf_counter() - t
    if code != 0:
        raise SystemExit(f"{c} failed (exit {code}) before any kill: genforge {' '.join(map(str, args))}")
    check(c, out, state)
    return duration, int((root / f"events-{c}").read_text())


def written_in(c: str, out: Path) -> Path:
    """The folder where ``c``'s temporaries would lie."""
    return out if c in ("eval", "compare", "tune") else out.parent


def after_kill(c: str, out: Path, args: list, state: dict, counts: dict[str, int], what: str) -> None:
    """The next start of ``c`` on ``out``, then the checks; a problem counts as a failure, named on stderr."""
    try:
        next_start(c, out, args)
        problems = check(c, out, state)
    except RuntimeError as e:  # serve never became ready
        problems = [str(e)]
    counts["failures"] += bool(problems)
    if problems:
        print(f"{what}: {'; '.join(problems)}", file=sys.stderr)


def campaign(kills: int, seed: int, commands: list[str], root: Path) -> dict[str, dict[str, int]]:
    in_child(setup, root)
    paths = inputs(root)
    paths["work"].mkdir()
    (root / "cwd").mkdir()
    rng = random.Random(seed)
    counts = {c: {"kills": 0, "left_temporaries": 0, "finished_first": 0, "failures": 0} for c in commands}
    durations, events, states = {}, {}, {c: {} for c in commands}
    os.chdir(root / "cwd")  # serve must leave its working folder empty
    for c in commands:  # an uninterrupted run of each: its duration sets the kill window
        durations[c], events[c] = reference_run(c, paths, root, states[c])
    attempt = 0
    while sum(n["kills"] for n in counts.values()) < kills and attempt < 3 * kills:
        c = commands[attempt % len(commands)]
        i = attempt // len(commands) * len(COMMANDS) + COMMANDS.index(c) + 1  # unique; i // 8 counts c's rounds
        attempt += 1
        args, out = argv(c, paths, i)
        at_event = rng.random() < 0.5 and c != "serve"  # half the kills at a random write event, half at a random
        # moment (serve writes nothing: its kills all fall at random moments of its start-up)
        delay = durations[c] * rng.uniform(0.0, 1.0)
        kill_at = rng.randint(1, max(1, events[c]))
        t = time.perf_counter()
        pid = spawn(args, kill_at if at_event else -1)
        if at_event:
            for _ in range(int(durations[c] * 3 / 0.01)):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    pid = 0
                    break
                time.sleep(0.01)
        else:
            time.sleep(delay)
        if pid == 0 and not os.WIFSIGNALED(status):
            counts[c]["finished_first"] += 1  # fewer write events than the reference run (caches filled)
            events[c] = max(1, kill_at - 1)
        if pid == 0:
            counts[c]["kills"] += int(os.WIFSIGNALED(status))  # it killed itself at the write event
            counts[c]["left_temporaries"] += int(bool(temporaries(written_in(c, out))))
            after_kill(c, out, args, states[c], counts[c], f"[{i}] {c} killed at a write event")
            continue
        finished = os.waitpid(pid, os.WNOHANG)[0] != 0
        if finished:  # later runs are faster than the first (caches filled): aim within the time they take
            durations[c] = min(durations[c], time.perf_counter() - t)
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        counts[c]["kills"] += 0 if finished else 1
        counts[c]["finished_first"] += int(finished)
        folder = written_in(c, out)
        counts[c]["left_temporaries"] += int(bool(temporaries(folder)) or bool(list(folder.glob(".leaderboard.*"))))
        after_kill(c, out, args, states[c], counts[c], f"[{i}] {c} killed after {delay:.2f}s")
    return counts


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=104, help="kills in all (default 104; at most 3x as many commands "
                                                          "are started, some finish before their kill)")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill moments (default 0)")
    p.add_argument("--commands", nargs="+", default=list(COMMANDS), choices=COMMANDS, help="commands to kill")
    args = p.parse_args()
    import importlib
    for name in PRELOAD:
        importlib.import_module(name)
    root = Path(tempfile.mkdtemp(prefix="genforge-kills-"))
    try:
        t = time.perf_counter()
        counts = campaign(args.kills, args.seed, args.commands, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    counts["all"] = {k: sum(n[k] for n in counts.values()) for k in next(iter(counts.values()))}
    print(f"{'command':12s} {'kills':>6s} {'left tmp':>9s} {'finished':>9s} {'failures':>9s}")
    for c, n in counts.items():
        print(f"{c:12s} {n['kills']:6d} {n['left_temporaries']:9d} {n['finished_first']:9d} {n['failures']:9d}")
    print(f"({time.perf_counter() - t:.0f} s)")
    return 1 if counts["all"]["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
