"""Pure metric functions: tensors or arrays in, numbers out (float64 where it matters).

Modules:
    fid      FID from feature sets or cached Gaussian statistics (.npz, no pickle)
    kid      Kernel Inception Distance (unbiased MMD^2, cubic kernel, seeded subsets)
    prdc     improved precision/recall and density/coverage (``prdc`` package definitions)
    scores   classifier Inception Score from logits; mode coverage of class histograms
    recon    MSE, PSNR, SSIM on [N, C, H, W] images in [0, data_range]
    nll      nats → bits, bits/dim, perplexity, bits/char
    text     corpus BLEU (sacrebleu + signature), self-BLEU, distinct-n
    guards   input checks and the sample-size policy (SampleSizeError)

Nothing here holds a network: the feature extractors (evaluator classifiers, the
FID Inception-v3) and their weights live in ``genforge.evaluation.features``.

The functions ``fid``, ``kid`` and ``prdc`` are *not* re-exported: they share
their modules' names, and re-exporting them would hide the modules
(``import genforge.metrics.fid as m`` would yield the function). Call them as
``metrics.fid.fid(...)``, ``metrics.kid.kid(...)``, ``metrics.prdc.prdc(...)``.
"""

from genforge.metrics import fid, kid, prdc  # the modules
from genforge.metrics.fid import GaussianStats, frechet_distance, gaussian_stats, load_stats, save_stats
from genforge.metrics.guards import SampleSizeError, check_sample_sizes
from genforge.metrics.nll import bits_per_char, bits_per_dim, nats_to_bits, perplexity
from genforge.metrics.prdc import density_coverage, precision_recall, precision_recall_density_coverage
from genforge.metrics.recon import mse, psnr, ssim
from genforge.metrics.scores import inception_score, mode_coverage
from genforge.metrics.text import bleu, distinct_n, self_bleu

__all__ = [
    "GaussianStats",
    "SampleSizeError",
    "bits_per_char",
    "bits_per_dim",
    "bleu",
    "check_sample_sizes",
    "density_coverage",
    "distinct_n",
    "fid",
    "frechet_distance",
    "gaussian_stats",
    "inception_score",
    "kid",
    "load_stats",
    "mode_coverage",
    "mse",
    "nats_to_bits",
    "perplexity",
    "prdc",
    "precision_recall",
    "precision_recall_density_coverage",
    "psnr",
    "save_stats",
    "self_bleu",
    "ssim",
]
