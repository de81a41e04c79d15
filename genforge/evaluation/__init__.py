"""The evaluation layer: runs metrics on models and data; imports models, data, metrics, sampling.

Evaluator classifiers (the feature extractors of the image metrics) are found,
verified, built and cached by :mod:`genforge.evaluation.evaluators`.

``genforge eval`` is :func:`evaluate_run` / :func:`evaluate_samples` (:mod:`~genforge.evaluation.runeval`,
built on :mod:`~genforge.evaluation.images` and :mod:`~genforge.evaluation.textmetrics`);
``genforge compare`` is :func:`compare_runs`. Every number carries a :class:`Protocol`;
:func:`incompatibilities` says why two cannot be compared.
"""

from genforge.evaluation.compare import compare_runs
from genforge.evaluation.evaluators import EvaluatorError, EvaluatorInfo, build_evaluator, evaluator_for, load_evaluator
from genforge.evaluation.images import ImageEvalOptions, evaluate_images
from genforge.evaluation.protocol import EvalError, Protocol, comparable, incompatibilities
from genforge.evaluation.runeval import evaluate_run, evaluate_samples, load_samples
from genforge.evaluation.textmetrics import TextEvalOptions, evaluate_text

__all__ = [
    "EvalError",
    "EvaluatorError",
    "EvaluatorInfo",
    "ImageEvalOptions",
    "Protocol",
    "TextEvalOptions",
    "build_evaluator",
    "comparable",
    "compare_runs",
    "evaluate_images",
    "evaluate_run",
    "evaluate_samples",
    "evaluate_text",
    "evaluator_for",
    "incompatibilities",
    "load_evaluator",
    "load_samples",
]
