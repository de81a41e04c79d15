"""Application metrics through ``evaluate_run``: names, baselines, protocols, refusals, and the leaderboard."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from genforge.evaluation import applications
from genforge.evaluation.compare import compare_runs
from genforge.evaluation.features.evaluator_training import EvaluatorTrainConfig
from genforge.evaluation.protocol import EvalError, metric_info
from genforge.tasks.evaluate import evaluate_run
from genforge.training.run import train
from tests.evaluation.test_images import eval_cache  # noqa: F401  (session fixture: a digits evaluator)

FAST = ["train.max_steps=3", "train.sample_every=0"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("app-eval")
    return {r: train(r, overrides=FAST, out=root / r, progress=False).run_dir
            for r in ("tiny-gan", "tiny-sr", "tiny-vae")}


def values(record):
    return {r["metric"]: r for r in record["results"]}


def test_inpaint_metrics_beside_the_mean_image(runs, eval_cache):  # noqa: F811
    out = evaluate_run(runs["tiny-gan"], metrics=("inpaint",), app_n=30, masks=["center", "random:0.5"],
                       inpaint={"steps": 2}, cache_dir=eval_cache, progress=False)
    got = values(out.record)
    for mask in ("center", "random:0.5"):
        for m in ("psnr", "ssim", "accuracy", "seconds_per_image"):
            assert f"inpaint/{mask}/{m}" in got
        for m in ("psnr", "ssim", "accuracy"):
            assert f"inpaint/{mask}/meanfill/{m}" in got
    p = got["inpaint/center/psnr"]["protocol"]
    assert p["n_reference"] == 30 and p["params"]["mask"] == "center" and p["params"]["labels"] == "given"
    assert p["params"]["options"]["steps"] == 2 and "latent optimisation" in p["params"]["method"]
    assert got["inpaint/center/meanfill/psnr"]["protocol"]["params"]["method"] == "training-set mean image"
    assert any("fid: skipped" in n for n in out.record.get("notes", []))  # 30 images < the 128-d features
    assert metric_info("inpaint/center/psnr").better == "higher"
    assert metric_info("inpaint/center/meanfill/psnr").better == ""  # a baseline is shown, not ranked
    md = compare_runs([runs["tiny-gan"]], out=runs["tiny-gan"].parent / "board-inpaint").md_path.read_text()
    assert "## Inpainting" in md


def test_upscale_is_the_default_metric_of_a_superres_run(runs, eval_cache):  # noqa: F811
    out = evaluate_run(runs["tiny-sr"], app_n=20, sample={"steps": 2}, cache_dir=eval_cache, progress=False)
    got = values(out.record)
    assert {"upscale/x2/psnr", "upscale/x2/ssim", "upscale/x2/accuracy", "upscale/x2/bicubic/psnr",
            "upscale/x2/bicubic/ssim", "upscale/x2/bicubic/accuracy", "upscale/x2/seconds_per_image"} <= set(got)
    assert "fid" not in got
    with pytest.raises(EvalError, match="draws no samples without a source image"):
        evaluate_run(runs["tiny-sr"], metrics=("fid",), cache_dir=eval_cache, progress=False)


@dataclass(kw_only=True)
class ShortTraining(EvaluatorTrainConfig):
    """The evaluator recipe with a 30-step floor instead of 300: the pipeline, not the classifiers, is tested."""

    min_steps: int = 30


def test_cas_and_augmentation_gain(runs, eval_cache, monkeypatch):  # noqa: F811
    from genforge.sampling.images import ImagePipeline

    monkeypatch.setattr(applications, "EvaluatorTrainConfig", ShortTraining)
    drawn = []
    original = ImagePipeline.generate
    monkeypatch.setattr(ImagePipeline, "generate", lambda self, n, **kw: drawn.append(n) or original(self, n, **kw))
    out = evaluate_run(runs["tiny-gan"], metrics=("cas", "augment"), cas_n=60, augment_n=60, augment_fraction=0.05,
                       classifier_epochs=1.0, cache_dir=eval_cache, progress=False)
    assert drawn.count(60) == 1  # CAS and the augmentation test share one set of 60 labelled images
    got = values(out.record)
    for m in ("cas", "cas_real", "augment/baseline", "augment/accuracy", "augment/gain"):
        assert 0 <= got[m]["value"] <= 1 or m == "augment/gain"
    assert got["augment/gain"]["value"] == pytest.approx(got["augment/accuracy"]["value"]
                                                         - got["augment/baseline"]["value"])
    p = got["augment/accuracy"]["protocol"]["params"]
    assert p["synthetic"] == 60 and "0.05" in p["real_subset"]
    assert p["steps"] == got["augment/baseline"]["protocol"]["params"]["steps"]  # same training length
    assert got["cas"]["protocol"]["n_generated"] == 60 and got["cas_real"]["protocol"]["n_generated"] == 0
    md = compare_runs([runs["tiny-gan"]], out=runs["tiny-gan"].parent / "board-cas").md_path.read_text()
    assert "Generated data as classifier training data" in md


def test_inapplicable_application_metrics_are_refused(runs, eval_cache):  # noqa: F811
    with pytest.raises(EvalError, match="needs a class-conditional model"):
        evaluate_run(runs["tiny-vae"], metrics=("cas",), cache_dir=eval_cache, progress=False)
    with pytest.raises(EvalError, match="does not generate from a source image"):
        evaluate_run(runs["tiny-gan"], metrics=("upscale",), cache_dir=eval_cache, progress=False)
    with pytest.raises(EvalError, match="built-in masks"):
        evaluate_run(runs["tiny-gan"], metrics=("inpaint",), masks=["blob"], cache_dir=eval_cache, progress=False)
