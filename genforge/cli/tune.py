"""``genforge tune``: its flags and the call into ``genforge.training.tune`` (imported only when it runs)."""

from __future__ import annotations

import argparse

from genforge.cli.args import positive_int


def _add_tune(sub) -> None:
    p = sub.add_parser("tune", help="hyperparameter search over --set keys with Optuna (pruning, shared studies)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Search a recipe's hyperparameters: each trial is a normal run directory "
                                   "STUDY_DIR/trials/trial-NNNN; intermediate evaluations prune bad trials. "
                                   "Workers running the same command on one --storage share the study and finish "
                                   "--trials between them. Writes results.csv, results.md, best.yaml, history.png, "
                                   "importances.png and the trials' leaderboard.md/.html into STUDY_DIR. Needs: "
                                   "pip install 'genforge[tune]'.",
                       epilog="example:\n  printf 'train.lr: {type: float, low: 1.0e-5, high: 1.0e-2, log: true}\\n'"
                              " > space.yaml\n  genforge tune tiny-gpt --space space.yaml --trials 20 "
                              "--metric val/loss\n  genforge train --config studies/tiny-gpt/best.yaml")
    p.add_argument("recipe", nargs="?", help="shipped recipe name (see `genforge recipes`)")
    p.add_argument("--config", metavar="FILE", help="your own recipe YAML instead of RECIPE")
    p.add_argument("--space", required=True, metavar="SPACE.yaml",
                   help="maps --set keys to {type: float|int|categorical, low, high, log, step, choices}")
    p.add_argument("--trials", type=positive_int, required=True, metavar="N",
                   help="trials the study should hold (finished, pruned or running), across all workers")
    p.add_argument("--metric", required=True, metavar="KEY",
                   help="evaluation metric to optimise, e.g. val/loss (an eval/ prefix is accepted)")
    p.add_argument("--direction", choices=["minimize", "maximize"], default="minimize",
                   help="minimize (default) or maximize --metric")
    p.add_argument("--no-prune", action="store_true",
                   help="run every trial to the end (default: stop trials below the median at an evaluation)")
    p.add_argument("--heartbeat", type=positive_int, metavar="SECONDS",
                   help="how often a running trial is recorded alive (default 60); a trial silent for 3 times that "
                        "(its worker was killed) is failed and its slot run again by another worker")
    p.add_argument("--storage", metavar="URL", help="Optuna storage (default: sqlite:///STUDY_DIR/study.db)")
    p.add_argument("--study", metavar="NAME", help="study name (default: the recipe's name)")
    p.add_argument("--out", metavar="DIR", help="STUDY_DIR (default: studies/<study>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value of every trial, e.g. --set train.max_steps=500 (repeatable)")
    p.add_argument("--data-dir", metavar="DIR", help="read the dataset's files from DIR (offline)")
    p.set_defaults(func=cmd_tune)


def cmd_tune(args) -> int:
    """Run this worker's share of the study, then print the best trial and where the reports are."""
    try:
        from genforge.training.tune import tune
    except ImportError as e:
        raise ValueError(f"genforge tune needs optuna: pip install 'genforge[tune]' ({e})") from None
    o = tune(args.recipe, space=args.space, n_trials=args.trials, metric=args.metric, config_file=args.config,
             overrides=args.overrides, data_dir=args.data_dir, storage=args.storage, study_name=args.study,
             out=args.out, direction=args.direction, prune=not args.no_prune,
             **({"heartbeat_s": args.heartbeat} if args.heartbeat else {}))
    states: dict[str, int] = {}
    for t in o.study.get_trials(deepcopy=False):
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    print(f"\nstudy {o.study.study_name}: {o.ran} trial(s) run by this worker; "
          + ", ".join(f"{n} {s}" for s, n in sorted(states.items())))
    for note in o.notes:
        print(f"note          : {note}")
    if (o.study_dir / "best.yaml").is_file():
        best = o.study.best_trial
        print(f"best          : trial {best.number}, {args.metric} {best.value:.6g}, {best.params}")
        print(f"next          : genforge train --config {o.study_dir / 'best.yaml'}")
    print(f"results       : {o.study_dir / 'results.md'}")
    if (o.study_dir / "leaderboard.md").is_file():
        print(f"trials        : {o.study_dir / 'leaderboard.md'} (genforge compare {o.study_dir})")
    return 0
