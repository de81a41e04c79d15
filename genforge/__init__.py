"""genforge: train, evaluate, sample and serve generative models from one CLI and one API."""

__version__ = "0.1.0"
