"""Record or check golden outputs of the tiny recipes: sample bytes, text samples, eval.json numbers.

    python scripts/golden.py record scripts/golden.json   # on the reference code
    python scripts/golden.py check  scripts/golden.json   # after a change: exits 1 on any difference

Trains ``tiny-gan``, ``tiny-vae`` (8x8 digits, shipped offline) and ``tiny-gpt``
(on a deterministic synthetic corpus written by this script) with fixed seeds
through the public CLI, samples them with ``genforge sample`` and evaluates them
with ``genforge eval``. Recorded: sha256 of every PNG and text sample the
training run and ``sample`` wrote, the weights' sha256, and every ``eval.json``
metric value, std and protocol id. Floating-point results depend on the CPU's
kernels, so a golden file is only comparable on the machine kind that wrote it
(recorded as ``machine``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import platform
import random
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from genforge.cli import main as cli

COMMON = ["--no-progress", "--set", "train.num_threads=1"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _weights_sha(path: Path) -> str:
    """sha256 over the tensors (sorted names, bytes): safetensors' header order of metadata varies per write."""
    from safetensors.torch import load_file

    h = hashlib.sha256()
    for name, t in sorted(load_file(str(path)).items()):
        h.update(name.encode())
        h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _corpus(path: Path) -> None:
    """A small deterministic corpus of pseudo-words (seeded), ~40k characters."""
    rng = random.Random(0)
    syll = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "el", "an", "or", "is"]
    lines = []
    for _ in range(1600):
        words = ["".join(rng.choice(syll) for _ in range(rng.randint(1, 3))) for _ in range(rng.randint(2, 7))]
        lines.append(" ".join(words).capitalize() + rng.choice([".", ",", "!", "?"]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _run(argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli(argv)
    if code != 0:
        raise SystemExit(f"genforge {' '.join(argv)} exited {code}")
    return out.getvalue()


def _eval_values(run: Path) -> dict[str, list]:
    record = json.loads((run / "eval.json").read_text(encoding="utf-8"))
    return {r["metric"]: [r["value"], r.get("std"), r["protocol_id"]] for r in record["results"]}


ENGINE_REQUESTS = [  # (prompt, n, seed, stop, options): sliding windows, stop strings, several samples, greedy
    ("Ka", 2, 3, ("!",), {"max_new_tokens": 70, "temperature": 1.0}),
    ("Lo mi", 1, 5, (), {"max_new_tokens": 40, "temperature": 0.7, "top_k": 5}),
    ("Ru", 3, 9, (), {"max_new_tokens": 50, "temperature": 1.2, "top_p": 0.9}),
    ("Sa to vi el an", 1, 1, (), {"max_new_tokens": 30, "temperature": 0}),
]


def _engine_texts(run: Path) -> dict[str, str]:
    """The serving engine's texts for seeded requests, each alone and all submitted together."""
    from genforge.sampling.engine import TextEngine, TextPiece
    from genforge.sampling.text import TextPipeline, TextRequest

    pipe = TextPipeline.from_run(run)
    engine = TextEngine(pipe, max_rows=8)

    def submit_all(batch):
        outs = [[""] * n for _, n, _, _, _ in batch]
        jobs = []
        for k, (prompt, n, seed, stop, options) in enumerate(batch):
            def sink(event, k=k):
                if isinstance(event, TextPiece):
                    outs[k][event.index] += event.text
            jobs.append(engine.submit(TextRequest(prompt=prompt, n=n, seed=seed, stop=stop), options, sink=sink))
        for job in jobs:
            job.wait(120)
        return outs

    try:
        alone = [submit_all([r])[0] for r in ENGINE_REQUESTS]
        together = submit_all(ENGINE_REQUESTS)
    finally:
        engine.close()
    out = {}
    for (prompt, n, seed, _, _), a, t in zip(ENGINE_REQUESTS, alone, together):
        out[f"engine alone {prompt!r} seed {seed}"] = " | ".join(a)
        out[f"engine batched {prompt!r} seed {seed}"] = " | ".join(t)
    return out


def collect(work: Path) -> dict:
    torch.set_num_threads(1)
    out: dict = {}
    for name in ("tiny-gan", "tiny-vae"):
        run = work / f"golden-{name}"
        _run(["train", name, "--out", str(run), *COMMON])
        files = {p.relative_to(run).as_posix(): _sha(p) for p in sorted(run.glob("samples*.png"))}
        files.update({p.relative_to(run).as_posix(): _sha(p) for p in sorted((run / "samples").glob("*.png"))})
        _run(["sample", str(run), "--n", "24", "--seed", "3", "-o", str(work / f"{name}-s3.png")])
        files["sample --seed 3"] = _sha(work / f"{name}-s3.png")
        if name == "tiny-gan":  # the conditional one
            _run(["sample", str(run), "--n", "10", "--seed", "1", "--label", "4", "-o", str(work / f"{name}-l4.png")])
            files["sample --label 4"] = _sha(work / f"{name}-l4.png")
        files["model.safetensors"] = _weights_sha(run / "model.safetensors")
        _run(["eval", str(run), "--n", "200", "--allow-small", "--kid-subset-size", "50", "--no-progress"])
        out[name] = {"files": files, "eval": _eval_values(run)}
    corpus = work / "corpus.txt"
    _corpus(corpus)
    run = work / "golden-tiny-gpt"
    _run(["train", "tiny-gpt", "--out", str(run), "--set", f"data.name=text:{corpus}", *COMMON])
    texts = {p.relative_to(run).as_posix(): p.read_text(encoding="utf-8")
             for p in [run / "samples.txt", *sorted((run / "samples").glob("*.txt"))]}
    texts["sample stream"] = _run(["sample", str(run), "--prompt", "Ka", "--max-new-tokens", "80", "--seed", "2"])
    _run(["sample", str(run), "--prompt", "Lo", "--n", "3", "--max-new-tokens", "40", "--top-k", "5",
          "--stop", ".", "--seed", "4", "-o", str(work / "tiny-gpt-three.txt")])
    texts["sample -n 3 --stop"] = (work / "tiny-gpt-three.txt").read_text(encoding="utf-8")
    texts["sample --best"] = _run(["sample", str(run), "--best", "--prompt", "Mi", "--max-new-tokens", "30",
                                   "--temperature", "0.5", "--top-p", "0.9"])
    _run(["eval", str(run), "--n", "8", "--max-new-tokens", "32", "--prompts", "8", "--prompt-tokens", "16",
          "--continuation-tokens", "16", "--no-progress"])
    texts.update(_engine_texts(run))
    out["tiny-gpt"] = {"texts": texts, "files": {"model.safetensors": _weights_sha(run / "model.safetensors")},
                       "eval": _eval_values(run)}
    out["machine"] = {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
                      "python": platform.python_version()}
    return out


def _diff(want: dict, got: dict, path: str = "") -> list[str]:
    lines = []
    for k in sorted(set(want) | set(got)):
        where = f"{path}/{k}"
        if k == "machine":
            continue
        a, b = want.get(k), got.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            lines += _diff(a, b, where)
        elif a != b:
            lines.append(f"{where}: want {str(a)[:120]!r}, got {str(b)[:120]!r}")
    return lines


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("record", "check"):
        print(__doc__)
        return 2
    mode, target = argv[0], Path(argv[1])
    work = Path(tempfile.gettempdir()) / "genforge-golden"  # a fixed path: dataset paths enter protocol ids
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        got = collect(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if mode == "record":
        target.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        print(f"recorded {target}")
        return 0
    want = json.loads(target.read_text(encoding="utf-8"))
    diffs = _diff(want, got)
    n = sum(len(v.get("files", {})) + len(v.get("texts", {})) + len(v.get("eval", {}))
            for k, v in want.items() if k != "machine")
    if want.get("machine") != got["machine"]:
        print(f"note: recorded on {want.get('machine')}, checked on {got['machine']}")
    for line in diffs:
        print("DIFF", line)
    print(f"golden: {n - len(diffs)} of {n} recorded outputs identical")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
