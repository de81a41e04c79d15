"""Feature extractors of the image metrics and their weights, in one room.

:class:`Extractor` is what the metrics see; :func:`evaluator_extractor` wraps the
dataset's evaluator classifier, :func:`inception_extractor` the FID Inception-v3.
"""

from genforge.evaluation.features.extractor import Extractor, evaluator_extractor, inception_extractor

__all__ = ["Extractor", "evaluator_extractor", "inception_extractor"]
