"""The ``genforge`` command: parse, build, call. No math lives here."""

from __future__ import annotations

import argparse
import os
import sys

from genforge.cli.args import Parser, family_flags, finite_float, positive_int, section_overrides

EPILOG = """examples:
  genforge train                                  default recipe, offline data, a few minutes on a CPU
  genforge train mnist-dcgan --data-dir ./mnist   named recipe reading the IDX files from a folder
  genforge train mnist-vae --set train.max_steps=2000 --set model.latent_dim=32
  genforge train --out runs/x --resume            continue a run from its last checkpoint
  genforge sample runs/x --n 64 --label 3 -o threes.png
  genforge eval runs/x --n 10000                  FID/KID/PR/DC/IS/modes vs the test split, protocol recorded
  genforge eval --samples gen.npz --dataset mnist --data-dir ./mnist   score images made by another tool
  genforge compare runs/*                         leaderboard.md + leaderboard.html across runs
  genforge evaluators build mnist --data-dir ./mnist   train the classifier whose features the metrics use
  genforge recipes show mnist-dcgan
"""


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a recipe into a run directory",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Train a model. Without a recipe, trains the default recipe on an offline "
                                   "dataset. The run directory gets the resolved config, the sampling weights, "
                                   "a metric log, tb/, samples/ and checkpoints/ (see genforge/rundir.py).",
                       epilog="config sections: data, model, train, sample (see `genforge recipes show NAME`)")
    p.add_argument("recipe", nargs="?", help="shipped recipe name (`genforge recipes`); default: digits-dcgan")
    p.add_argument("--config", metavar="FILE", help="your own recipe YAML instead of a shipped one")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.max_steps=500 (repeatable)")
    p.add_argument("--data-dir", metavar="DIR", help="read the dataset's files from DIR (offline) instead of "
                                                      "downloading them into the cache")
    p.add_argument("--out", metavar="RUN_DIR", help="run directory (default: runs/<recipe>-<timestamp>); "
                                                     "an existing non-empty one is never overwritten")
    p.add_argument("--resume", action="store_true", help="continue --out RUN_DIR from its newest checkpoint "
                                                         "(model, optimizer, schedule, EMA, RNG, data order)")
    p.add_argument("--no-verify", action="store_true", help="do not check --data-dir files against the built-in "
                                                            "dataset's checksums (your own variant of it)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--find-lr", action="store_true",
                   help="instead of training: a learning-rate range test of the recipe (lr swept from 1e-6 to 1 "
                        "over --find-lr-steps updates); prints the suggested train.lr (the lowest point of the "
                        "smoothed loss) and writes lr_find.csv/.png "
                        "into --out (default runs/<recipe>-lr-find-<timestamp>)")
    p.add_argument("--find-lr-steps", type=positive_int, default=300, metavar="N",
                   help="updates of the range test (default 300)")
    p.set_defaults(func=cmd_train)


def _add_sample(sub) -> None:
    p = sub.add_parser("sample", help="generate images (a PNG grid) or text from a trained run",
                       description="Generate from RUN_DIR's sampling weights (the EMA weights when training used "
                                   "them), through the same sampling pipeline training and eval use. Image runs "
                                   "write a PNG grid that carries model, seed and label as text metadata; text runs "
                                   "stream the continuation of --prompt to the terminal. Any sample option of the "
                                   "run's family can be given as a flag or as --set sample.KEY=VALUE (e.g. --noise "
                                   "for a VAE; --steps 20 --sampler ddim --guidance 2 for a diffusion model); an "
                                   "unknown one is refused with the list of valid ones.")
    p.add_argument("run_dir", help="a run directory written by `genforge train`")
    p.add_argument("--n", type=positive_int, help="number of images (default 64) or text samples (default 1)")
    p.add_argument("--label", help="class of a conditional model, by id or name, e.g. 3 or ankle_boot "
                                   "(default: one class per column)")
    p.add_argument("--seed", type=int, help="random seed (default 0): same seed, same samples")
    p.add_argument("-o", "--out", metavar="FILE", help="output file (images: default "
                                                       "RUN_DIR/samples/sample-seed<S>.png; text: the terminal)")
    p.add_argument("--nrow", type=positive_int, help="images per row (default: square-ish)")
    p.add_argument("--batch-size", type=positive_int, help="images generated per forward pass (default 256)")
    p.add_argument("--overwrite", action="store_true", help="replace the output file when it exists")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default cpu)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="sample.KEY=VALUE",
                   help="a sample option of the run's family or pipeline (repeatable)")
    p.add_argument("--prompt", help="text runs: the text to continue (default: a newline); image runs whose model "
                                    "takes text: what to draw")
    p.add_argument("--image", metavar="FILE", help="a source image, for models that generate from one "
                                                   "(super-resolution; image-to-image)")
    p.add_argument("--strength", type=finite_float, help="how far from the source image to go, in [0, 1]")
    t = p.add_argument_group("text runs")
    t.add_argument("--max-new-tokens", type=int, help="tokens to generate per sample (default 500)")
    t.add_argument("--temperature", type=finite_float, help="0 = greedy; higher = more random (default 0.8)")
    t.add_argument("--top-k", type=positive_int, help="sample only among the k most likely tokens")
    t.add_argument("--top-p", type=finite_float, help="sample only within the smallest set of tokens of "
                                                       "probability p")
    t.add_argument("--stop", action="append", metavar="TEXT",
                   help="end a sample before this text (repeatable), e.g. --stop $'\\n\\n'")
    t.add_argument("--best", action="store_true", help="use the weights with the best validation loss (best/)")
    p.set_defaults(func=cmd_sample)


SAMPLE_FLAGS = ("n", "label", "seed", "nrow", "batch_size", "prompt", "image", "strength", "max_new_tokens",
                "temperature", "top_k", "top_p", "stop")  # flags that are sample options; only those given are passed on


def _add_recipes(sub) -> None:
    p = sub.add_parser("recipes", help="list shipped recipes or show one",
                       description="`genforge recipes` lists recipes; `genforge recipes show NAME` prints one.")
    p.add_argument("action", nargs="?", choices=["list", "show"], default="list")
    p.add_argument("name", nargs="?", help="recipe to show")
    p.set_defaults(func=cmd_recipes)


def _add_datasets(sub) -> None:
    p = sub.add_parser("datasets", help="list datasets and whether they are cached",
                       description="Built-in datasets plus imagefolder:PATH for your own images. Downloads go "
                                   "to $GENFORGE_CACHE (or the platform cache folder) and are checksummed.")
    p.set_defaults(func=cmd_datasets)


def _csv(text: str) -> tuple[str, ...]:
    return tuple(m.strip() for m in text.split(",") if m.strip())


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a run (or a file of samples) and write eval.json / eval.md",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Evaluate RUN_DIR against its dataset and write eval.json (every number with "
                                   "its protocol: extractor and weights sha256, N, reference split and subsample "
                                   "seed, seed, version) and eval.md into it, printing a table. Image runs: FID, "
                                   "KID, precision/recall, density/coverage, classifier IS, mode coverage, and "
                                   "reconstruction / likelihood for VAEs. Text runs: loss, perplexity and bits per "
                                   "character on the whole validation split, distinct-n and self-BLEU of samples, "
                                   "BLEU of continuations of held-out prompts.",
                       epilog="image runs also take their family's sample options as flags (e.g. --steps 50 "
                              "--guidance 2 for diffusion); they are recorded in each metric's protocol\n"
                              "image metrics: fid,kid,pr,dc,is,modes,recon,nll (default) and inpaint,upscale,cas,"
                              "augment (when asked)   text metrics: ppl,distinct,"
                              "self_bleu,bleu\n--samples accepts .npy/.npz of uint8 (or float in [0, 1]) images "
                              "[N,H,W], [N,H,W,C] or [N,C,H,W], or a folder of image files")
    p.add_argument("run_dir", nargs="?", help="run directory written by `genforge train`")
    p.add_argument("--samples", metavar="FILE", help="evaluate these images instead of a run (.npy, .npz or a "
                                                     "folder of images); needs --dataset")
    p.add_argument("--dataset", metavar="NAME", help="reference dataset for --samples (mnist, digits, "
                                                     "imagefolder:PATH …)")
    p.add_argument("--data-dir", metavar="DIR", help="read the dataset's files from DIR")
    p.add_argument("--no-verify", action="store_true", help="do not check --data-dir files against checksums")
    p.add_argument("--out", metavar="DIR", help="--samples only: output folder (default <stem>-eval beside FILE)")
    p.add_argument("--metrics", type=_csv, metavar="LIST", help="comma-separated metrics (default: all that apply)")
    p.add_argument("--n", type=int, help="generated and reference samples (default: images 10000, or all of "
                                         "--samples; text 100 samples)")
    p.add_argument("--reference", choices=["test", "train"], default="test", help="reference split (default test)")
    p.add_argument("--features", choices=["evaluator", "inception"], default="evaluator",
                   help="feature space: the dataset's evaluator classifier (default) or FID Inception-v3")
    p.add_argument("--seed", type=int, default=0, help="generation seed (default 0)")
    p.add_argument("--reference-seed", type=int, default=0, help="seed of the reference subsample (default 0)")
    p.add_argument("--batch-size", type=int, help="images (default 500) or text windows (default 64) per pass")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default cpu)")
    p.add_argument("--kid-subset-size", type=int, default=1000, help="KID subset size (default 1000)")
    p.add_argument("--allow-small", action="store_true", help="compute FID with N below the feature dimension, and "
                   "precision/recall/density/coverage below 1000 images (warned; not comparable) instead of "
                   "refusing or skipping them")
    p.add_argument("--inception-weights", metavar="FILE", help="Inception weights file for --features inception")
    t = p.add_argument_group("text runs")
    t.add_argument("--max-new-tokens", type=int, default=256, help="tokens per sample (default 256)")
    t.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1.0)")
    t.add_argument("--prompts", type=int, default=100, help="held-out prompts for BLEU (default 100)")
    t.add_argument("--prompt-tokens", type=int, default=64, help="tokens per prompt (default 64)")
    t.add_argument("--continuation-tokens", type=int, default=64, help="continuation length (default 64)")
    a = p.add_argument_group("application metrics (--metrics inpaint,upscale,cas,augment)")
    a.add_argument("--app-n", type=positive_int, help="test images inpainted / upscaled (default 1000)")
    a.add_argument("--masks", type=_csv, help="built-in masks to inpaint with (default center,left)")
    a.add_argument("--inpaint-labels", choices=["auto", "given", "none"],
                   help="given: the true label (class-conditional inpainting); none: the model decides; auto "
                        "(default): given for a conditional model")
    a.add_argument("--cas-n", type=positive_int, help="generated (and real) images CAS trains on (default 10000)")
    a.add_argument("--augment-fraction", type=finite_float, help="real training subset of the augmentation "
                                                                  "test (default 0.01)")
    a.add_argument("--augment-n", type=positive_int, help="generated images added to it (default 10000)")
    a.add_argument("--classifier-epochs", type=finite_float, help="epochs of the CAS/augment classifier (default 5)")
    a.add_argument("--set", dest="overrides", action="append", default=[], metavar="inpaint.KEY=VALUE",
                   help="an inpainting option of the family (repeatable), e.g. inpaint.resamples=4")
    p.add_argument("--no-progress", action="store_true", help="no stage lines on stderr")
    p.set_defaults(func=cmd_eval)


def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help="leaderboard (markdown + self-contained HTML) across runs",
                       description="Read each run's eval.json, metrics.jsonl and samples, and write "
                                   "leaderboard.md and leaderboard.html (plots and sample grids embedded). A metric "
                                   "ranks only runs measured under the same protocol; the others are flagged with "
                                   "the reason. A study folder of `genforge tune` stands for all its trials.")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help="run directories, study folders (their trials) or --samples eval folders")
    p.add_argument("--out", metavar="DIR", help="output folder (default: the runs' common parent; a study itself)")
    p.add_argument("--overwrite", action="store_true", help="replace leaderboard files that exist in --out")
    p.set_defaults(func=cmd_compare)


def _add_evaluators(sub) -> None:
    p = sub.add_parser("evaluators", help="list or build the classifiers whose features the image metrics use",
                       description="`genforge evaluators` lists shipped and cached evaluator classifiers; "
                                   "`genforge evaluators build NAME [--data-dir DIR]` trains one for a built-in "
                                   "labelled dataset into the cache.")
    p.add_argument("action", nargs="?", choices=["list", "build"], default="list")
    p.add_argument("name", nargs="?", help="dataset to build an evaluator for (digits, mnist, fashion-mnist)")
    p.add_argument("--data-dir", metavar="DIR", help="read the dataset's files from DIR")
    p.add_argument("--no-verify", action="store_true", help="do not check --data-dir files against the built-in "
                                                            "dataset's checksums (your own variant of it)")
    p.set_defaults(func=cmd_evaluators)


def build_parser() -> argparse.ArgumentParser:
    from genforge import __version__

    parser = Parser(prog="genforge", formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description="Train, sample, evaluate and compare generative models.",
                                     epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"genforge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS.values():
        add(sub)
    return parser


def cmd_train(args) -> int:
    from genforge.models.capabilities import EmbedsTextAndImages
    from genforge.rundir import RunDir
    from genforge.tasks import get_task
    from genforge.training.run import train

    overrides = [*args.overrides, *(["data.verify=false"] if args.no_verify else [])]
    if args.find_lr:
        from genforge.cli.find_lr import find_lr_command

        return find_lr_command(args, overrides)
    outcome = train(args.recipe, config_file=args.config, overrides=overrides, data_dir=args.data_dir,
                    out=args.out, resume=args.resume, progress=False if args.no_progress else None)
    if os.environ.get("RANK", "0") != "0":  # a data-parallel job: rank 0 reports for all
        return 0
    d, r, run = outcome.run_dir, outcome.result, RunDir(outcome.run_dir)
    task = get_task(outcome.config.task)
    losses = ", ".join(f"{k} {v:.4f}" for k, v in r.last_losses.items() if "/" not in k)
    print(f"\ntrained {r.step} steps in {r.elapsed_s:.0f} s ({r.stopped}); last losses: {losses}")
    print(f"run directory : {d}")
    print(f"samples       : {run.samples(task.name)}")
    if run.best_json.is_file():
        import json

        b = json.loads(run.best_json.read_text(encoding="utf-8"))
        shown = ", ".join(f"{k} {v:.4f}" for k, v in b.items() if isinstance(v, float))
        print(f"best          : {run.best.path} (step {b['step']}: {shown})")
    print(f"metrics       : {run.metrics_log}  (TensorBoard: tensorboard --logdir {run.tb})")
    print(f"checkpoint    : {r.checkpoint}")
    if isinstance(outcome.model, EmbedsTextAndImages):  # an encoder: what text-to-image runs stand on
        print(f"next          : genforge train TEXT_TO_IMAGE_RECIPE --set parents.text_encoder={d}")
    else:
        print(f"next          : genforge sample {d} {task.hint(outcome.model)}")
    return 0


def sample_options(args) -> dict:
    """The sample options given on the command line: flags that were set, then ``--set sample.KEY=VALUE``."""
    raw = {k: getattr(args, k) for k in SAMPLE_FLAGS if getattr(args, k) is not None}
    return {**raw, **family_flags(getattr(args, "extra", [])), **section_overrides(args.overrides, "sample", "sample")}


def cmd_sample(args) -> int:
    from genforge.tasks import open_run

    options = sample_options(args)
    pipeline = open_run(args.run_dir, device=args.device, best=args.best)
    request, opts = pipeline.parse(options)
    written = pipeline.sample_to(args.out, request, opts, run_dir=args.run_dir, stream=sys.stdout,
                                 overwrite=args.overwrite)
    if written is not None:
        print(written)
    return 0


def cmd_recipes(args) -> int:
    from genforge.config import DEFAULT_RECIPE, list_recipes, recipe_path

    if args.action == "show":
        if not args.name:
            raise ValueError("usage: genforge recipes show NAME")
        print(recipe_path(args.name).read_text(encoding="utf-8"), end="")
        return 0
    recipes = list_recipes()
    width = max(map(len, recipes))
    for name, desc in recipes.items():
        mark = " (default)" if name == DEFAULT_RECIPE else ""
        print(f"{name:<{width}}  {desc}{mark}")
    return 0


def cmd_datasets(args) -> int:
    from genforge.data import list_datasets

    rows = [(r["name"], "x".join(map(str, r["shape"])), "cached" if r["cached"] else "", r["description"])
            for r in list_datasets()]
    rows.append(("imagefolder:PATH", "any", "", "your own PNG/JPEG/BMP/WebP images (sub-folders = classes)"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print("  ".join(f"{v:<{w}}" for v, w in zip(r, widths)) + "  " + r[3])
    return 0


def cmd_eval(args) -> int:
    from genforge.evaluation.runeval import evaluate_samples, format_table
    from genforge.tasks.evaluate import evaluate_run

    common = dict(metrics=args.metrics, n=args.n, device=args.device, progress=not args.no_progress,
                  reference=args.reference, features=args.features, seed=args.seed,
                  reference_seed=args.reference_seed, batch_size=args.batch_size,
                  kid_subset_size=args.kid_subset_size, allow_small=args.allow_small,
                  inception_weights=args.inception_weights, verify=not args.no_verify,
                  sample=family_flags(args.extra), **_app_eval_options(args))
    if args.samples:
        if args.run_dir:
            raise ValueError("give either RUN_DIR or --samples FILE, not both")
        if not args.dataset:
            raise ValueError("--samples needs --dataset NAME: the data the samples are compared with")
        out = evaluate_samples(args.samples, dataset=args.dataset, data_dir=args.data_dir, out=args.out, **common)
    else:
        if not args.run_dir:
            raise ValueError("give a RUN_DIR, or --samples FILE --dataset NAME")
        for flag in ("dataset", "out"):
            if getattr(args, flag):
                raise ValueError(f"--{flag} applies to --samples only (a run's results go into RUN_DIR)")
        text = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, prompts=args.prompts,
                    prompt_tokens=args.prompt_tokens, continuation_tokens=args.continuation_tokens)
        out = evaluate_run(args.run_dir, data_dir=args.data_dir, **common, **text)
    print(format_table(out.record))
    print(f"\nwrote {out.json_path} and {out.md_path} ({out.record['timings']['total']:.1f} s)")
    return 0


def _app_eval_options(args) -> dict:
    """The application-metric flags that were given (others keep ImageEvalOptions' defaults)."""
    inpaint = section_overrides(args.overrides, "inpaint", "eval")
    names = ("app_n", "masks", "inpaint_labels", "cas_n", "augment_fraction", "augment_n", "classifier_epochs")
    out = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    return {**out, "inpaint": inpaint} if inpaint else out


def cmd_compare(args) -> int:
    from genforge.evaluation.compare import compare_runs, format_summary

    out = compare_runs(args.run_dirs, out=args.out, overwrite=args.overwrite)
    print(format_summary(out.leaderboard))
    print(f"\nwrote {out.md_path} and {out.html_path}")
    return 0


def cmd_evaluators(args) -> int:
    from genforge.evaluation.features import build_evaluator, list_evaluators

    if args.action == "build":
        if not args.name:
            raise ValueError("usage: genforge evaluators build NAME [--data-dir DIR]")
        info = build_evaluator(args.name, data_dir=args.data_dir, verify=not args.no_verify)
        print(f"{info.id}  test accuracy {info.test_accuracy:.4%}  sha256 {info.sha256}  {info.path}")
        return 0
    rows = [(e.get("id", ""), e.get("dataset", ""), e.get("source", ""),
             f"{e.get('test_accuracy', float('nan')):.2%}", f"{e.get('feature_dim', '')}-d",
             str(e.get("sha256", ""))[:16]) for e in list_evaluators()]
    if not rows:
        print("no evaluators shipped or cached; build one with `genforge evaluators build NAME --data-dir DIR`")
        return 0
    rows.insert(0, ("id", "dataset", "source", "test acc", "features", "sha256"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    return 0


from genforge.cli.apps import APP_COMMANDS  # noqa: E402  (after the helpers it shares)
from genforge.cli.export import _add_export  # noqa: E402
from genforge.cli.serving import _add_serve  # noqa: E402
from genforge.cli.tune import _add_tune  # noqa: E402


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input or configuration: one line, exit code 2."""
    from genforge.config import ConfigError
    from genforge.data import DataError
    from genforge.evaluation.features import EvaluatorError
    from genforge.rundir import RunDirError

    # RecursionError: input nested deeper than the code walking it can go (a bounded loader refuses most first)
    return (ConfigError, DataError, EvaluatorError, RunDirError, FileNotFoundError, ValueError, TypeError,
            RecursionError)


def _native_panic(e: BaseException) -> bool:
    """A panic inside a Rust extension (``pyo3_runtime.PanicException``, a ``BaseException``, so neither
    ``except Exception`` nor the user errors catch it); matched by name, as pyo3 exports no class to import."""
    return type(e).__name__ == "PanicException" and type(e).__module__.startswith("pyo3")


COMMANDS = {"train": _add_train, "sample": _add_sample, "eval": _add_eval, "compare": _add_compare,
            "evaluators": _add_evaluators, "recipes": _add_recipes, "datasets": _add_datasets, "serve": _add_serve,
            "tune": _add_tune, "export": _add_export, **APP_COMMANDS}
FAMILY_FLAG_COMMANDS = ("sample", "eval", *APP_COMMANDS)  # take the family's options as extra flags


def main(argv: list[str] | None = None) -> int:
    """Run one command. Exit codes: 0 done, 2 bad input or configuration, 1 a failure while running
    (including Ctrl-C). Every error is one line on stderr; ``GENFORGE_DEBUG=1`` shows the traceback."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command not in FAMILY_FLAG_COMMANDS:
        parser.parse_args(argv)  # reports the unknown arguments the usual way
    args.extra = extra
    if args.command is None:
        parser.print_help()
        return 0
    debug = os.environ.get("GENFORGE_DEBUG", "") not in ("", "0")
    try:
        return args.func(args)
    except _user_errors() as e:
        if debug:
            raise
        what = "input nested too deeply: " if isinstance(e, RecursionError) else ""
        print(f"genforge {args.command}: error: {what}{_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"genforge {args.command}: interrupted (nothing half-written was kept)", file=sys.stderr)
        return 1
    except Exception as e:  # a failure while running: still one line, never a traceback
        if debug:
            raise
        from genforge.training.trainer import TrainingError

        kind = "" if isinstance(e, TrainingError) else f"{type(e).__name__}: "
        hint = "" if isinstance(e, TrainingError) else " (GENFORGE_DEBUG=1 shows the traceback)"
        print(f"genforge {args.command}: error: {kind}{_one_line(e)}{hint}", file=sys.stderr)
        return 1
    except BaseException as e:  # a native library's panic; SystemExit and the like pass through
        if debug or not _native_panic(e):
            raise
        print(f"genforge {args.command}: error: a native library failed: {_one_line(e)}", file=sys.stderr)
        return 1


def _one_line(e: BaseException) -> str:
    """The exception's message on one line (OS errors: strerror and the file name)."""
    if isinstance(e, OSError) and e.strerror:
        text = f"{e.strerror}: {e.filename}" if e.filename else e.strerror
    else:
        text = str(e) or type(e).__name__
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
