"""The evaluation layer: runs the pure metrics on models, samples and data; imports models, data, metrics, sampling.

Its rooms:

- ``features/``      every feature extractor of the image metrics and its weights: the evaluator
                     classifiers (trained, verified, cached) and the FID Inception-v3.
- ``reference``      seeded reference subsamples, their digest and cached features.
- ``images``, ``image_stages``   image evaluation: options, then one stage per group of metrics.
- ``proxy``          the cheap FID the trainer logs during image runs.
- ``text``, ``textmetrics``      held-out likelihood and the text evaluation.
- ``protocol``       the record stored with every number, and when two numbers are comparable.
- ``record``         ``eval.json`` / ``eval.md``: building, history, writing, reading, tables.
- ``runeval``        ``genforge eval --samples``: images made by any tool.
- ``leaderboard/``   ``genforge compare``: the leaderboard's data model and its Markdown / HTML renderers.

Runs are evaluated by :func:`genforge.tasks.evaluate.evaluate_run`, which picks the run's task.
Names are imported lazily, so importing one room does not load the others.
"""

_LAZY = {
    "EvalError": "genforge.evaluation.protocol",
    "Protocol": "genforge.evaluation.protocol",
    "comparable": "genforge.evaluation.protocol",
    "incompatibilities": "genforge.evaluation.protocol",
    "EvaluatorError": "genforge.evaluation.features",
    "EvaluatorInfo": "genforge.evaluation.features",
    "build_evaluator": "genforge.evaluation.features",
    "evaluator_for": "genforge.evaluation.features",
    "load_evaluator": "genforge.evaluation.features",
    "ImageEvalOptions": "genforge.evaluation.images",
    "evaluate_images": "genforge.evaluation.images",
    "TextEvalOptions": "genforge.evaluation.textmetrics",
    "evaluate_text": "genforge.evaluation.textmetrics",
    "evaluate_samples": "genforge.evaluation.runeval",
    "compare_runs": "genforge.evaluation.leaderboard",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'genforge.evaluation' has no attribute {name!r}")
