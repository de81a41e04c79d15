"""Feature extractors of the image metrics and their weights, in one room.

:class:`Extractor` is what the metrics see; :func:`evaluator_extractor` wraps the
dataset's evaluator classifier, :func:`inception_extractor` the FID Inception-v3.

Modules:
    extractor           the :class:`Extractor` the metrics call, built from either network
    classifier          the evaluator classifier network (:class:`EvaluatorClassifier`)
    evaluator_training  training an evaluator: the recipe, the presets, the loop
    evaluators          shipped and cached evaluators: build, find, verify, load
    inception           the FID Inception-v3 network (:class:`FIDInceptionV3`)
    inception_convert   other layouts' Inception state dicts → ours; our safetensors files
    inception_weights   finding, converting, downloading and caching the Inception weights
"""

from genforge.evaluation.features.classifier import ClassifierConfig, EvaluatorClassifier
from genforge.evaluation.features.evaluators import (
    EvaluatorError,
    EvaluatorInfo,
    build_evaluator,
    evaluator_for,
    list_evaluators,
    load_evaluator,
)
from genforge.evaluation.features.extractor import Extractor, evaluator_extractor, inception_extractor
from genforge.evaluation.features.inception import FIDInceptionV3
from genforge.evaluation.features.inception_weights import find_or_fetch

__all__ = [
    "ClassifierConfig",
    "EvaluatorClassifier",
    "EvaluatorError",
    "EvaluatorInfo",
    "Extractor",
    "FIDInceptionV3",
    "build_evaluator",
    "evaluator_extractor",
    "evaluator_for",
    "find_or_fetch",
    "inception_extractor",
    "list_evaluators",
    "load_evaluator",
]
