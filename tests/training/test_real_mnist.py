"""Slow: the MNIST recipes actually learn on the real data (run with -m slow; skips without MNIST)."""

from __future__ import annotations

import pytest

from genforge.training.logger import read_metrics
from genforge.training.run import train


@pytest.mark.slow
def test_mnist_vae_recipe_learns(mnist_dir, tmp_path):
    outcome = train("mnist-vae", data_dir=mnist_dir, out=tmp_path / "run", progress=False,
                    overrides=["train.max_steps=300", "train.log_every=50", "train.sample_every=0",
                               "train.checkpoint_every=0"])
    records = read_metrics(outcome.run_dir)
    first, last = records[0]["loss"], records[-1]["loss"]
    # measured: the first 50-step window averages ~260 nats per image, steps 250-300 ~120
    print(f"negative ELBO: first window {first:.1f}, last window {last:.1f} nats")
    assert last < 0.5 * first and last < 180, (first, last)
    assert (outcome.run_dir / "samples.png").is_file()
