"""`genforge train RECIPE --find-lr`: the learning-rate range test's report (training/lr_find.py does the work)."""

from __future__ import annotations


def find_lr_command(args, overrides: list[str]) -> int:
    """``genforge train RECIPE --find-lr``: run the range test, print its table, suggestion and next command."""
    from genforge.training.lr_find import find_lr

    if args.resume:
        raise ValueError("--find-lr sweeps a fresh model; it does not combine with --resume")
    o = find_lr(args.recipe, config_file=args.config, overrides=overrides, data_dir=args.data_dir, out=args.out,
                steps=args.find_lr_steps)
    r = o.result
    for i in range(0, len(r.lrs), max(1, len(r.lrs) // 12)):
        print(f"  lr {r.lrs[i]:9.2e}  loss {r.smoothed[i]:.4f}")
    end = "the loss diverged" if r.stopped == "diverged" else "reached the end of the sweep"
    print(f"\n{len(r.lrs)} steps ({end}); lowest smoothed loss {min(r.smoothed):.4f} at lr {r.best_lr:.2e}; "
          f"steepest fall at lr {r.steepest:.2e}")
    print(f"suggested train.lr: {r.suggestion:.2e} (the recipe has {o.current_lr:.2e})")
    recipe = [f"--config {args.config}"] if args.config else [args.recipe] if args.recipe else []
    print("next          : " + " ".join(["genforge train", *recipe, f"--set train.lr={r.suggestion:.2e}"]))
    print(f"plot          : {o.out / 'lr_find.png'}")
    return 0
