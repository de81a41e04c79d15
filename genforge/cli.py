"""The ``genforge`` command: parse, build, call. No math lives here."""

from __future__ import annotations

import argparse
import sys

EPILOG = """examples:
  genforge train                                  default recipe, offline data, a few minutes on a CPU
  genforge train mnist-dcgan --data-dir ./mnist   named recipe reading the IDX files from a folder
  genforge train mnist-vae --set train.max_steps=2000 --set model.latent_dim=32
  genforge train --out runs/x --resume            continue a run from its last checkpoint
  genforge sample runs/x --n 64 --label 3 -o threes.png
  genforge recipes show mnist-dcgan
"""


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a recipe into a run directory",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Train a model. Without a recipe, trains the default recipe on an offline "
                                   "dataset. The run directory gets config.yaml, model.safetensors, "
                                   "metrics.jsonl, tb/, samples/ and checkpoints/.",
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
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)


def _add_sample(sub) -> None:
    p = sub.add_parser("sample", help="generate images (a PNG grid) or text from a trained run",
                       description="Generate from RUN_DIR's sampling weights (the EMA weights when training used "
                                   "them). Image runs write a PNG grid that carries model, seed and label as text "
                                   "metadata; text runs stream the continuation of --prompt to the terminal.")
    p.add_argument("run_dir", help="a run directory written by `genforge train`")
    p.add_argument("--n", type=int, help="number of images (default 64) or text samples (default 1)")
    p.add_argument("--label", type=int, help="class label for a conditional model (default: one class per column)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0): same seed, same images")
    p.add_argument("-o", "--out", metavar="PNG", help="output file (default RUN_DIR/samples/sample-seed<S>.png)")
    p.add_argument("--nrow", type=int, default=0, help="images per row (default: square-ish)")
    p.add_argument("--batch-size", type=int, default=256, help="images generated per forward pass")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default cpu)")
    t = p.add_argument_group("text runs")
    t.add_argument("--prompt", help="text to continue (default: a newline)")
    t.add_argument("--max-new-tokens", type=int, default=500, help="tokens to generate per sample (default 500)")
    t.add_argument("--temperature", type=float, default=0.8, help="0 = greedy; higher = more random (default 0.8)")
    t.add_argument("--top-k", type=int, help="sample only among the k most likely tokens")
    t.add_argument("--top-p", type=float, help="sample only within the smallest set of tokens of probability p")
    t.add_argument("--stop", action="append", default=[], metavar="TEXT",
                   help="end a sample before this text (repeatable), e.g. --stop $'\\n\\n'")
    t.add_argument("--best", action="store_true", help="use the weights with the best validation loss (best/)")
    p.set_defaults(func=cmd_sample)


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


def build_parser() -> argparse.ArgumentParser:
    from genforge import __version__

    parser = argparse.ArgumentParser(prog="genforge", formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description="Train, sample and inspect generative models.", epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"genforge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS.values():
        add(sub)
    return parser


def cmd_train(args) -> int:
    from genforge.training.run import train

    outcome = train(args.recipe, config_file=args.config, overrides=args.overrides, data_dir=args.data_dir,
                    out=args.out, resume=args.resume, progress=False if args.no_progress else None)
    d, r = outcome.run_dir, outcome.result
    losses = ", ".join(f"{k} {v:.4f}" for k, v in r.last_losses.items() if "/" not in k)
    print(f"\ntrained {r.step} steps in {r.elapsed_s:.0f} s ({r.stopped}); last losses: {losses}")
    print(f"run directory : {d}")
    samples = d / "samples.txt" if (d / "samples.txt").is_file() else d / "samples.png"
    print(f"samples       : {samples}")
    best = d / "best" / "best.json"
    if best.is_file():
        import json

        b = json.loads(best.read_text(encoding="utf-8"))
        shown = ", ".join(f"{k} {v:.4f}" for k, v in b.items() if isinstance(v, float))
        print(f"best          : {best.parent} (step {b['step']}: {shown})")
    print(f"metrics       : {d / 'metrics.jsonl'}  (TensorBoard: tensorboard --logdir {d / 'tb'})")
    print(f"checkpoint    : {r.checkpoint}")
    hint = "--prompt 'ROMEO:' --max-new-tokens 300" if samples.suffix == ".txt" else "--n 64 --seed 1"
    print(f"next          : genforge sample {d} {hint}")
    return 0


def cmd_sample(args) -> int:
    from pathlib import Path

    if (Path(args.run_dir) / "tokenizer.json").is_file():
        return _sample_text(args)
    from genforge.sampling.images import sample_grid_from_run

    path = sample_grid_from_run(args.run_dir, n=args.n or 64, label=args.label, seed=args.seed, out=args.out,
                                nrow=args.nrow, batch_size=args.batch_size, device=args.device)
    print(path)
    return 0


def _sample_text(args) -> int:
    from pathlib import Path

    from genforge.sampling.text import generate_text, load_text_model

    run_dir = Path(args.run_dir) / ("best" if args.best else "")
    model, tokenizer = load_text_model(run_dir, device=args.device)
    n = args.n or 1
    stream = n == 1 and args.out is None

    def show(i: int, piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    if args.prompt is not None:
        tokenizer.encode(args.prompt)  # a prompt the tokenizer cannot encode fails before anything is printed
        if stream:
            sys.stdout.write(args.prompt)
    texts = generate_text(model, tokenizer, args.prompt, n=n, max_new_tokens=args.max_new_tokens,
                          temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, stop=args.stop,
                          seed=args.seed, on_text=show if stream else None)
    if stream:
        sys.stdout.write("\n")
        return 0
    body = "\n".join(f"--- sample {i} (seed {args.seed}) ---\n{t}" for i, t in enumerate(texts)) + "\n"
    if args.out:
        from genforge.io import atomic_write_text

        atomic_write_text(Path(args.out), body)
        print(args.out)
    else:
        sys.stdout.write(body)
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


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input: reported as one line, no traceback."""
    from genforge.config import ConfigError
    from genforge.data import DataError
    from genforge.training.run import RunDirError
    from genforge.training.trainer import TrainingError

    return (ConfigError, DataError, RunDirError, TrainingError, FileNotFoundError, ValueError)


COMMANDS = {"train": _add_train, "sample": _add_sample, "recipes": _add_recipes, "datasets": _add_datasets}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except _user_errors() as e:
        print(f"genforge {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
