"""A GPU check in one run: every shipped recipe trained for a short fixed budget, 2-process DDP and a text
model served under load, each step a row of one table (ok / FAILED / skipped, with the reason).

    python bench/gpu_check.py                          # CUDA when present: all recipes, 50 steps, bf16 autocast
    python bench/gpu_check.py --steps 200 --max-minutes 2
    python bench/gpu_check.py --quick --device cpu     # the tiny-* recipes, 3 steps (what the tests run)
    python bench/gpu_check.py --quick --device cpu --cpu-ddp   # and DDP as 2 gloo processes on the CPU

Steps, in order:

1. ``train RECIPE`` for each recipe of ``genforge/recipes`` (``--quick``: the ``tiny-*`` ones; ``--recipes``
   names others) through ``genforge.train`` for ``--steps`` steps (and at most ``--max-minutes``) on
   ``--device`` with ``--precision`` (default: ``bf16-mixed`` autocast on CUDA, ``fp32`` on the CPU, where
   bf16 is emulated unless the CPU has bf16 instructions); a log window every ``steps / 5`` steps, samples
   (at most 4), an evaluation (``--eval-samples`` images for the proxy FID; text: the validation loss)
   and a checkpoint at the end only, then one sample drawn from the saved run. The rate is the trainer's
   median images/s or tokens/s over its log windows after the first (the first alone when it is the only
   one, so short runs include the warm-up). MNIST is read from ``--data-dir``/mnist; without it the
   recipe is skipped (nothing is downloaded). Text recipes read ``--data-dir``/tinyshakespeare/input.txt
   when present, and otherwise train on a stand-in corpus (English text that ships with scikit-learn,
   offline), which the row says: step time does not depend on the text.
2. ``ddp``: with 2 or more GPUs, ``torchrun --nproc_per_node 2`` (NCCL) on a GAN recipe, whose BatchNorm
   layers the trainer converts to SyncBatchNorm on several CUDA ranks, and on a GPT recipe
   (``digits-dcgan`` and ``shakespeare-char``; ``--quick``: ``tiny-gan`` and ``tiny-gpt``); with fewer, a
   skipped row. ``--cpu-ddp`` runs the same two as 2 gloo processes on the CPU instead.
3. ``serve``: ``genforge serve`` of the GPT run trained in step 1 on a free 127.0.0.1 port, ``--clients``
   concurrent streaming completions (64 tokens each, ``bench/serve_load.py``'s clients) for
   ``--serve-seconds``: tokens/s and latency p50. The server loads its models on the CPU.

Prints the machine (GPU name or the CPU's ``lscpu`` model, torch and CUDA versions) and, at the end, the
table. Exit status 0 when every row that ran is ok, 1 when any FAILED, 2 for a bad command line.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import default_data_dir, fail, missing_data, require_idle  # noqa: E402
from serve_load import Server, _corpus, _free_port, _pct, _phase  # noqa: E402

MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
               "t10k-labels-idx1-ubyte.gz")
DDP_RECIPES = {"quick": ("tiny-gan", "tiny-gpt"), "full": ("digits-dcgan", "shakespeare-char")}
SERVE_PREFERENCE = ("shakespeare-char", "tiny-gpt")  # char models; else any GPT run trained above
DDP_TIMEOUT_S = 900


@dataclass
class Row:
    """One line of the final table."""

    name: str
    device: str
    amount: str = "-"  # "50 steps", "120 requests"
    wall_s: float | None = None
    rate: str = "-"  # "1,234 images/s"
    result: str = "ok"  # ok[; note] | FAILED: why | skipped: why

    @property
    def failed(self) -> bool:
        return self.result.startswith("FAILED")


class Skip(Exception):
    """The step cannot run here (its data is absent); the message is the reason."""


class Check:
    """The resolved command line plus what the steps share: the temporary folder and the stand-in corpus."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args, self.tmp = args, tmp
        self.device = args.device
        self.precision = args.precision or ("bf16-mixed" if args.device.startswith("cuda") else "fp32")
        self.steps = args.steps or (3 if args.quick else 50)
        self._corpus: Path | None = None

    def overrides(self) -> list[str]:
        """``--set`` values of every training: the budget, device and precision; samples and checkpoints at
        the end only; no trackers."""
        a = self.args
        sets = [f"train.max_steps={self.steps}", f"train.device={self.device}", f"train.precision={self.precision}",
                f"train.log_every={max(1, self.steps // 5)}", "train.sample_every=0", "train.checkpoint_every=0",
                "train.eval_every=0", f"train.eval_samples={a.eval_samples}", "train.trackers=[]",
                "train.progress=false"]
        return sets + ([f"train.max_minutes={a.max_minutes}"] if a.max_minutes else [])

    def data(self, recipe: str) -> tuple[list[str], Path | None, str]:
        """(extra overrides, data_dir, note) for ``recipe``'s dataset; raises :class:`Skip` when it is absent."""
        from genforge.training.run import load_recipe

        raw, _ = load_recipe(recipe)
        name = raw["data"]["name"]
        small = [f"sample.n={min(int(raw.get('sample', {}).get('n', 4)), 4)}"]  # the end-of-run samples
        if name in ("mnist", "fashion-mnist"):
            folder = self.args.data_dir / name
            problem = missing_data(folder, MNIST_FILES)
            if problem:
                raise Skip(f"MNIST not found: {problem}; pass --data-dir DIR with {name}/ in it")
            return small, folder, ""
        if name == "tinyshakespeare":
            folder = self.args.data_dir / name
            if (folder / "input.txt").is_file():
                return small, folder, ""
            if self._corpus is None:
                self._corpus = _corpus(self.tmp / "corpus.txt")
            return [*small, f"data.name=text:{self._corpus}"], None, f"stand-in text (no {folder / 'input.txt'})"
        return small, None, ""


def _error(e: BaseException) -> str:
    lines = str(e).strip().splitlines() or [""]
    return f"FAILED: {type(e).__name__}: {lines[0][:200]}"


def _rate(run_dir: Path) -> str:
    """The trainer's median images/s or tokens/s over its log windows after the first (the only one if one)."""
    from genforge.training.logger import read_metrics

    windows = [(k, v) for r in read_metrics(run_dir) for k, v in r.items()
               if k.endswith("_per_s") and k != "steps_per_s"]
    if not windows:
        return "-"
    values = [v for _, v in windows[1:]] or [windows[0][1]]
    return f"{statistics.median(values):,.0f} {windows[0][0].removesuffix('_per_s')}/s"


def sample_once(run_dir: Path, recipe_sample: dict, device: str, tmp: Path) -> float:
    """Draw one sample (4 images, or 32 tokens) from the saved run through ``genforge sample``'s path, with the
    recipe's ``sample`` options otherwise (e.g. its sampler steps); seconds."""
    import numpy as np
    from PIL import Image

    from genforge.models.capabilities import ImageConditioned
    from genforge.sampling.text import TextPipeline
    from genforge.tasks import open_run

    t0 = time.perf_counter()
    pipe = open_run(run_dir, device=device)
    if isinstance(pipe, TextPipeline):
        options = {**recipe_sample, "n": 1, "max_new_tokens": 32}
    else:
        options = {**recipe_sample, "n": 4}
        model = pipe.model
        if isinstance(model, ImageConditioned):  # super-resolution draws from a source image
            size, channels = model.config.image_size, model.config.channels
            real = torch.randint(0, 256, (1, channels, size, size), dtype=torch.uint8)
            source = model.make_source(real, model.source_variants()[0])[0].permute(1, 2, 0).numpy()
            options["image"] = str(tmp / f"{run_dir.name}-source.png")
            Image.fromarray(np.ascontiguousarray(source.squeeze(-1) if channels == 1 else source)).save(
                options["image"])
    request, opts = pipe.parse(options)
    pipe.sample_to(None, request, opts, run_dir=run_dir, stream=io.StringIO(), overwrite=True)
    return time.perf_counter() - t0


def train_row(check: Check, recipe: str) -> tuple[Row, Path | None]:
    """Train ``recipe`` for the budget and sample it once: its row, and the run (None unless it is ok)."""
    import genforge

    row = Row(f"train {recipe}", check.device)
    try:
        extra, data_dir, note = check.data(recipe)
        t0 = time.perf_counter()
        outcome = genforge.train(recipe, overrides=[*check.overrides(), *extra], data_dir=data_dir,
                                 out=check.tmp / recipe, progress=False)
        row.wall_s = time.perf_counter() - t0
        row.amount = f"{outcome.result.step} steps"
        row.rate = _rate(outcome.run_dir)
        from genforge.models.capabilities import EmbedsTextAndImages

        if isinstance(outcome.model, EmbedsTextAndImages):  # an encoder (clip): nothing to sample or serve
            row.result = f"ok; {check.precision}, an encoder: not sampled" + (f"; {note}" if note else "")
            return row, None
        sampled = sample_once(outcome.run_dir, dict(outcome.config.sample), check.device, check.tmp)
        row.result = f"ok; {check.precision}, sample {sampled:.1f} s" + (f"; {note}" if note else "")
        return row, outcome.run_dir
    except Skip as e:
        row.result = f"skipped: {e}"
    except Exception as e:  # noqa: BLE001 - every failure is a row of the table
        row.result = _error(e)
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return row, None


def _batch_norms(run_dir: Path) -> int:
    import genforge

    return sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in genforge.load(run_dir).modules())


def _torchrun(check: Check, recipe: str, cuda: bool, extra: list[str], data_dir: Path | None,
              out: Path) -> str | None:
    """Run ``torchrun --nproc_per_node 2 -m genforge train RECIPE`` into ``out``; None, or why it failed."""
    sets = [s for s in check.overrides() if not s.startswith("train.device=")] + extra
    sets.append(f"train.device={'cuda' if cuda else 'cpu'}")  # each rank takes cuda:LOCAL_RANK
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
           "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{_free_port()}", "--max_restarts=0",
           "-m", "genforge", "train", recipe, "--out", str(out), *[a for s in sets for a in ("--set", s)],
           *(["--data-dir", str(data_dir)] if data_dir else [])]
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1", GENFORGE_DIST_TIMEOUT_S="300")
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=DDP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"no end in {DDP_TIMEOUT_S} s"
    if proc.returncode == 0:
        return None
    lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()] or ["(no output)"]
    why = next((ln for ln in reversed(lines) if "Error" in ln or "error:" in ln), lines[-1])
    return f"exit {proc.returncode}: {why[:200]}"


def ddp_row(check: Check, recipe: str, backend: str) -> Row:
    """2-process data-parallel training of ``recipe`` with the same budget as step 1."""
    cuda = backend == "nccl"
    row = Row(f"ddp 2x {recipe}", f"2x {'cuda' if cuda else 'cpu'} ({backend})")
    out = check.tmp / f"ddp-{recipe}"
    try:
        extra, data_dir, note = check.data(recipe)
        t0 = time.perf_counter()
        failure = _torchrun(check, recipe, cuda, extra, data_dir, out)
        row.wall_s = time.perf_counter() - t0
        if failure:
            row.result = f"FAILED: {failure}"
            return row
        row.amount, row.rate = f"{check.steps} steps", _rate(out)
        notes = [check.precision]
        norms = _batch_norms(out)  # the layers the trainer makes SyncBatchNorm on several CUDA ranks
        if norms:
            notes.append(f"{norms} BatchNorm → SyncBatchNorm" if cuda else f"{norms} BatchNorm per rank (CPU)")
        row.result = "ok; " + ", ".join(notes + ([note] if note else []))
    except Skip as e:
        row.result = f"skipped: {e}"
    except Exception as e:  # noqa: BLE001
        row.result = _error(e)
    return row


def ddp_rows(check: Check) -> list[Row]:
    """Two DDP rows on 2 or more GPUs (or with ``--cpu-ddp``), else one skipped row saying why."""
    gpus = torch.cuda.device_count() if check.device.startswith("cuda") else 0
    recipes = DDP_RECIPES["quick" if check.args.quick else "full"]
    if gpus >= 2:
        return [ddp_row(check, r, "nccl") for r in recipes]
    if check.args.cpu_ddp:
        return [ddp_row(check, r, "gloo") for r in recipes]
    hint = "; --cpu-ddp runs 2 gloo processes on the CPU" if not check.device.startswith("cuda") else ""
    return [Row("ddp 2 procs", check.device, result=f"skipped: needs 2 GPUs (this machine has {gpus}){hint}")]


def serve_row(check: Check, runs: dict[str, Path]) -> Row:
    """``genforge serve`` of a GPT run under ``--clients`` concurrent streaming completions."""
    from genforge.rundir import RunDir

    row = Row("serve text", "cpu")
    gpt = [n for n, d in runs.items() if RunDir(d).task() == "text"]
    if not gpt:
        row.result = "skipped: no text run was trained above"
        return row
    name = next((n for n in SERVE_PREFERENCE if n in gpt), gpt[0])
    row.name = f"serve {name}"
    a = check.args
    server = Server(runs[name], "--max-batch", str(a.clients), "--max-n", "1", "--max-queue", str(4 * a.clients))
    try:
        with server:
            s = asyncio.run(_phase(server.url, a.clients, a.serve_seconds, "text", None))
    except Exception as e:  # noqa: BLE001
        row.result = _error(e)
        return row
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()
    row.amount, row.wall_s = f"{s['ok']} requests", s["seconds"]
    row.rate = f"{s['tokens'] / s['seconds']:,.0f} tokens/s"
    counts = f"{a.clients} clients, {s['errors']} errors, {s['429']} x 429, {s['late']} late"
    if s["errors"] or not s["ok"] + s["late"]:  # late: answered after the window, so not in the rate
        row.result = f"FAILED: {counts}"
    else:
        latency = (f"latency p50 {_pct(s['latency'], 0.5):.2f} s, TTFT p50 {_pct(s['ttft'], 0.5):.2f} s"
                   if s["latency"] else "no request both started and ended in the window")
        row.result = f"ok; {latency}; {counts}"
    return row


def machine(device: str) -> str:
    """The GPU (name, memory, count) or the CPU's ``lscpu`` model line, with the torch and CUDA versions."""
    if device.startswith("cuda"):
        p = torch.cuda.get_device_properties(torch.device(device))
        hw = (f"{p.name}, {p.total_memory / 2**30:.0f} GiB, {torch.cuda.device_count()} GPU(s), "
              f"CUDA {torch.version.cuda}")
    else:
        try:
            out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name:")),
                     platform.processor() or "unknown CPU")
        hw = f"{model}, {os.cpu_count()} cores"
    return f"device: {device}, {hw}; torch {torch.__version__}"


def table(rows: list[Row]) -> str:
    head = ("step", "device", "steps/requests", "wall s", "rate", "result")
    cells = [head] + [(r.name, r.device, r.amount, "-" if r.wall_s is None else f"{r.wall_s:.1f}", r.rate, r.result)
                      for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(5)]
    right = (False, False, True, True, True)
    return "\n".join("  ".join(c[i].rjust(w) if right[i] else c[i].ljust(w) for i, w in enumerate(widths))
                     + "  " + c[5] for c in cells)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                    help="cpu, cuda or cuda:N (default: cuda when available, else cpu)")
    ap.add_argument("--precision", choices=["fp32", "bf16-mixed", "fp16-mixed", "auto"],
                    help="training precision (default: bf16-mixed on CUDA, fp32 on the CPU)")
    ap.add_argument("--steps", type=int, help="training steps per recipe (default: 50; --quick: 3)")
    ap.add_argument("--max-minutes", type=float, default=0.0, help="also stop each training after this wall "
                                                                   "time (default: 0, no limit)")
    ap.add_argument("--eval-samples", type=int, help="images of the end-of-run proxy FID (default: 256; "
                                                     "--quick: 16)")
    ap.add_argument("--recipes", nargs="+", metavar="NAME", help="recipes to train (default: every shipped "
                                                                 "recipe; --quick: the tiny-* ones)")
    ap.add_argument("--quick", action="store_true", help="tiny-* recipes, 3 steps, 2 clients for 3 s; no DDP "
                                                         "unless --cpu-ddp or 2 GPUs")
    ap.add_argument("--cpu-ddp", action="store_true", help="without 2 GPUs, run the DDP step as 2 gloo processes")
    ap.add_argument("--no-ddp", action="store_true", help="leave out the DDP step")
    ap.add_argument("--no-serve", action="store_true", help="leave out the serving step")
    ap.add_argument("--clients", type=int, help="concurrent serving clients (default: 8; --quick: 2)")
    ap.add_argument("--serve-seconds", type=float, help="length of the serving load (default: 20; --quick: 3)")
    ap.add_argument("--data-dir", type=Path, default=default_data_dir(""), metavar="DIR",
                    help=f"folder holding mnist/ (the four IDX files) and tinyshakespeare/input.txt (default: "
                         f"$GENFORGE_TEST_DATA when set, else the data folder beside the checkout; here "
                         f"{default_data_dir('')})")
    args = ap.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        fail(f"--device {args.device} but CUDA is not available here; pass --device cpu")
    if any(v is not None and v < low for v, low in ((args.steps, 1), (args.clients, 1), (args.eval_samples, 2),
                                                    (args.serve_seconds, 0.1))):
        fail("--steps and --clients must be >= 1, --eval-samples >= 2 and --serve-seconds >= 0.1")
    args.clients = args.clients or (2 if args.quick else 8)
    args.eval_samples = args.eval_samples or (16 if args.quick else 256)
    args.serve_seconds = args.serve_seconds or (3.0 if args.quick else 20.0)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from genforge.config import list_recipes

    recipes = args.recipes or [r for r in list_recipes() if r.startswith("tiny-") or not args.quick]
    require_idle()
    print(machine(args.device), flush=True)
    rows: list[Row] = []
    runs: dict[str, Path] = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        check = Check(args, Path(tmp))
        print(f"{len(recipes)} recipes, {check.steps} steps each, {check.precision}", flush=True)
        try:
            for recipe in recipes:
                row, run = train_row(check, recipe)
                rows.append(row)
                print(f"  {row.name}: {row.result}", flush=True)
                if run is not None:
                    runs[recipe] = run
            if not args.no_ddp:
                rows += ddp_rows(check)
            if not args.no_serve:
                rows.append(serve_row(check, runs))
        finally:
            print(f"\ngpu_check: {time.perf_counter() - t0:.0f} s\n{table(rows)}", flush=True)
    return 1 if any(r.failed for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
