"""genforge: train, evaluate, sample and serve generative models from one CLI and one API.

    >>> import genforge
    >>> run = genforge.train("digits-dcgan", overrides=["train.max_steps=200"])
    >>> model = genforge.load(run.run_dir)
    >>> images = model.sample(16, generator=torch.Generator().manual_seed(0))  # [16, C, H, W] in [0, 1]

The names below are imported lazily so ``genforge --help`` stays fast.
"""

__version__ = "0.1.0"

_LAZY = {
    "train": ("genforge.training.run", "train"),
    "load": ("genforge.models", "load"),
    "generate_images": ("genforge.sampling.images", "generate_images"),
    "save_grid": ("genforge.sampling.images", "save_grid"),
    "generate_text": ("genforge.sampling.text", "generate_text"),
    "load_text_model": ("genforge.sampling.text", "load_text_model"),
    "inpaint": ("genforge.sampling.inpaint", "inpaint_images"),
    "builtin_mask": ("genforge.sampling.masks", "builtin_mask"),
    "interpolate": ("genforge.sampling.interpolate", "interpolate"),
    "synthesize": ("genforge.sampling.synth", "synthesize"),
    "write_dataset": ("genforge.sampling.synth", "write_dataset"),
    "evaluate": ("genforge.tasks.evaluate", "evaluate_run"),
    "compare": ("genforge.evaluation.compare", "compare_runs"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'genforge' has no attribute {name!r}")
