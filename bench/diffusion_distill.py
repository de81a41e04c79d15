"""Few-step distillation of a diffusion run: FID against steps for the teacher and its distilled student.

    python bench/diffusion_distill.py --teacher runs/mnist-diffusion --n 10000
    python bench/diffusion_distill.py --teacher runs/mnist-diffusion --student runs/mnist-distill --n 2000
    python bench/diffusion_distill.py --out runs/distill-bench        # trains the teacher too (mnist-diffusion)

Without ``--student`` the script distills the teacher with the ``mnist-diffusion-distill`` recipe
(``genforge train ... --set parents.teacher=RUN``, timed: the target is 10 minutes on 2 CPU cores, teacher
rollouts included); without ``--teacher`` it first trains one with ``mnist-diffusion``. Then, for 1, 2, 4, 8
and 20 steps (``--steps``), each model draws ``--n`` class-balanced images (seed 0, the same labels and initial
noise for both), and ``genforge eval --samples`` scores them against the MNIST test split in the evaluator's
feature space, as ``bench/diffusion_steps.py`` does. The teacher samples with its run's guidance (two U-Net
calls per step), the student with its distilled guidance (one call per step); the student has no row past the
most steps it was trained for. Printed: one table of FID per step count with each FID's ratio to the
teacher's 20-step FID (targets: student 4 steps ≤ 1.5×, 1 step ≤ 3×), and the median wall time of 64 images
in 1 step (target ≤ 0.3 s). FID depends on N: compare only tables of one N.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_data_dir, fail, require_data, require_idle  # noqa: E402
from diffusion_steps import MNIST  # noqa: E402

TARGETS = {4: 1.5, 1: 3.0}  # student FID at k steps ≤ ratio × the teacher's 20-step FID
TIME_TARGET_S = 0.3  # 64 images at 1 step


def _train(argv: list[str], log: Path) -> float:
    """Run ``genforge train`` with ``argv`` (output to ``log``); the wall seconds it took."""
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with log.open("w") as f:
        code = subprocess.run([sys.executable, "-m", "genforge.cli", "train", *argv, "--no-progress"],
                              stdout=f, stderr=subprocess.STDOUT).returncode
    if code:
        fail(f"genforge train {' '.join(argv)} failed (exit {code}); see {log}", code=1)
    return time.perf_counter() - t0


def fid_of(images: np.ndarray, n: int, data_dir: Path, tmp: Path, name: str) -> float:
    """FID of uint8 images [n, C, S, S] against the MNIST test split (``genforge eval --samples``)."""
    path = tmp / f"{name}.npz"
    np.savez(path, x=images)
    out = tmp / f"eval-{name}"
    subprocess.run([sys.executable, "-m", "genforge.cli", "eval", "--samples", str(path), "--dataset", "mnist",
                    "--data-dir", str(data_dir), "--n", str(n), "--metrics", "fid", "--out", str(out),
                    "--no-progress", *(["--allow-small"] if n < 2048 else [])], check=True, capture_output=True)
    return {x["metric"]: x["value"] for x in json.loads((out / "eval.json").read_text())["results"]}["fid"]


def one_step_seconds(pipe, options: dict, repeats: int) -> float:
    """Median wall seconds of 64 images in one step (after one warm-up call)."""
    pipe.generate(64, seed=0, options={**options, "steps": 1})
    times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        pipe.generate(64, seed=r, options={**options, "steps": 1})
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _cpu_line() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "cpu: unknown (no lscpu)"
    return next((line.strip() for line in out.splitlines() if line.startswith("Model name")), "cpu: unknown")


def _runs(args: argparse.Namespace) -> tuple[Path, Path, dict[str, float]]:
    """The teacher and student run directories, training what was not given; wall seconds of each training."""
    trained: dict[str, float] = {}
    teacher, student = args.teacher, args.student
    extra = [x for s in args.set for x in ("--set", s)]
    data = ["--data-dir", str(args.data_dir)]
    if teacher is None:
        teacher = args.out / "teacher"
        print(f"training the teacher (mnist-diffusion) into {teacher} ...", flush=True)
        trained["teacher"] = _train(["mnist-diffusion", "--out", str(teacher), *data], args.out / "teacher.log")
    if student is None:
        student = args.out / "student"
        print(f"distilling {teacher} (mnist-diffusion-distill) into {student} ...", flush=True)
        trained["student"] = _train(["mnist-diffusion-distill", "--out", str(student), *data, "--set",
                                     f"parents.teacher={teacher}", *extra], args.out / "student.log")
    for run in (teacher, student):
        if not (run / "config.yaml").is_file():
            fail(f"{run} is not a run directory (no config.yaml)")
    return teacher, student, trained


def _arguments() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", type=Path, help="a flow-matching diffusion run on MNIST (default: train one)")
    ap.add_argument("--student", type=Path, help="a diffusion-distill run of that teacher (default: distill now)")
    ap.add_argument("--out", type=Path, default=Path("runs/distill-bench"),
                    help="where runs trained here go (default: runs/distill-bench)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override for the distillation recipe, e.g. --set model.fresh=4 (repeatable)")
    ap.add_argument("--steps", default="1,2,4,8,20", help="comma-separated step counts (default: 1,2,4,8,20)")
    ap.add_argument("--n", type=int, default=10000, help="images per model and step count (default: 10000)")
    ap.add_argument("--repeats", type=int, default=10, help="timed repeats of 64 images at 1 step (default: 10)")
    add_data_dir(ap, "mnist", "MNIST's four IDX files (the reference: its test split)")
    args = ap.parse_args()
    try:
        args.step_list = [int(s) for s in args.steps.split(",") if s.strip()]
    except ValueError:
        fail(f"--steps must be comma-separated integers, got {args.steps!r}")
    if not args.step_list or min(args.step_list) < 1 or 20 not in args.step_list or args.n < 10:
        fail("--steps must be >= 1 and include 20 (the teacher's reference), and --n >= 10")
    return args


def main() -> None:
    args = _arguments()
    require_data(args.data_dir, MNIST, "MNIST")
    import torch

    from genforge.rundir import RunDir
    from genforge.tasks import open_run
    from peak import matmul_peak

    require_idle()
    print(_cpu_line(), flush=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32 matmul peak "
          f"{matmul_peak(torch.float32):.0f} GFLOP/s", flush=True)
    teacher_dir, student_dir, trained = _runs(args)
    for role, seconds in trained.items():
        print(f"{role} trained in {seconds / 60:.1f} min", flush=True)
    teacher, student = open_run(teacher_dir), open_run(student_dir)
    if teacher.model.family != "diffusion" or student.model.family != "diffusion-distill":
        fail(f"--teacher must be a diffusion run and --student a diffusion-distill run, got "
             f"{teacher.model.family} and {student.model.family}")
    guidance = RunDir(teacher_dir).read_config().get("sample", {}).get("guidance")
    t_opts = {} if guidance is None else {"guidance": guidance}
    top = max(student.model.config.steps)
    k = teacher.num_classes
    labels = (np.arange(args.n) % k).tolist() if k else None
    print(f"teacher {teacher_dir.name} (guidance {guidance}), student {student_dir.name} (trained for "
          f"{student.model.config.steps} steps, {student.model.config.method}); N={args.n}", flush=True)
    rows: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for s in sorted(args.step_list, reverse=True):  # 20 first: the reference of every ratio
            rows[s] = {}
            for name, pipe, opts in (("teacher", teacher, t_opts), ("student", student, {})):
                if name == "student" and s > top:
                    continue
                images = pipe.generate(args.n, condition=labels, seed=0, options={**opts, "steps": s}).numpy()
                rows[s][name] = fid_of(images, args.n, args.data_dir, Path(tmp), f"{name}-{s}")
    ref = rows[20]["teacher"]
    print(f"\n{'steps':>5} {'teacher FID':>11} {'ratio':>6} {'student FID':>11} {'ratio':>6} {'target':>7}")
    for s in sorted(rows):
        t, st = rows[s]["teacher"], rows[s].get("student")
        target = f"≤{TARGETS[s]}×" if s in TARGETS else ""
        stud = f"{st:>11.3f} {st / ref:>5.2f}×" if st is not None else f"{'—':>11} {'':>6}"
        print(f"{s:>5} {t:>11.3f} {t / ref:>5.2f}× {stud} {target:>7}")
    t_time = one_step_seconds(teacher, t_opts, args.repeats)
    s_time = one_step_seconds(student, {}, args.repeats)
    print(f"\n64 images at 1 step, median of {args.repeats}: student {s_time:.3f} s (target ≤ {TIME_TARGET_S} s), "
          f"teacher {t_time:.3f} s")
    for s, ratio in TARGETS.items():
        if s in rows and "student" in rows[s]:
            ok = rows[s]["student"] <= ratio * ref
            print(f"student {s}-step FID {'meets' if ok else 'MISSES'} ≤ {ratio}× the teacher's 20-step FID")
    if "student" in trained:
        print(f"distillation {'meets' if trained['student'] <= 600 else 'MISSES'} the 10-minute budget "
              f"({trained['student'] / 60:.1f} min)")


if __name__ == "__main__":
    main()
