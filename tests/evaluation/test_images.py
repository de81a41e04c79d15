"""The image evaluation pipeline: noise monotonicity, guardrails, label balancing, samples files, the cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genforge.config import DataConfig
from genforge.data import ImageData, load_images
from genforge.evaluation.features.evaluators import (EvaluatorError, EvaluatorTrainConfig, PRESETS, build_evaluator,
                                                     load_evaluator)
from genforge.evaluation.images import (ImageEvalOptions, balanced_labels, evaluate_images, evaluator_extractor,
                                        reference_features)
from genforge.evaluation.protocol import EvalError
from genforge.metrics import SampleSizeError

QUICK = EvaluatorTrainConfig(min_steps=150, max_steps=150)  # a weaker digits evaluator that trains in seconds


def _ensure_evaluator(store: Path, name: str, config: EvaluatorTrainConfig, data_dir: Path | None = None) -> None:
    try:
        load_evaluator(name, cache_dir=store)
    except EvaluatorError:
        build_evaluator(name, cache_dir=store, config=config, data_dir=data_dir, progress=False)


@pytest.fixture(scope="session")
def eval_cache(request, tmp_path_factory) -> Path:
    """A fresh genforge cache root whose evaluator lookup finds a digits evaluator.

    The shipped one when genforge has it; otherwise a quick one built once and kept
    in pytest's cache folder, copied in.
    """
    cache = tmp_path_factory.mktemp("gfcache")
    try:
        load_evaluator("digits", cache_dir=cache)
        return cache
    except EvaluatorError:
        pass
    try:
        store = Path(request.config.cache.mkdir("genforge-evaluators"))
    except AttributeError:  # cacheprovider disabled
        store = tmp_path_factory.mktemp("evaluators-store")
    _ensure_evaluator(store, "digits", QUICK)
    shutil.copytree(store / "evaluators", cache / "evaluators")
    return cache


@pytest.fixture(scope="module")
def halves() -> tuple[ImageData, DataConfig, torch.Tensor]:
    """Digits split into two disjoint shuffled halves: ``test_x`` is the reference, the other half are "samples"."""
    d = load_images(DataConfig(name="digits"))
    x = torch.cat([d.train_x, d.test_x])
    y = torch.cat([d.train_y, d.test_y])
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))
    a, b = perm[: len(x) // 2], perm[len(x) // 2:]
    data = ImageData(name="digits", train_x=x[a].contiguous(), train_y=y[a], test_x=x[b].contiguous(), test_y=y[b],
                     classes=d.classes)
    return data, DataConfig(name="digits"), x[a].contiguous()


def _noisy(x: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (x.float() + sigma * 255 * torch.randn(x.shape, generator=g)).round().clamp(0, 255).to(torch.uint8)


def _values(report) -> dict[str, float]:
    return {r.metric: r.value for r in report.results}


def test_fid_rises_monotonically_with_noise_on_digits(eval_cache, halves):
    data, cfg, other = halves
    opts = ImageEvalOptions(metrics=("fid", "kid", "pr"), n=len(other), kid_subset_size=200, cache_dir=eval_cache,
                            allow_small=True)  # digits: 898 images, below the k-NN size rule
    fids, kids, precisions = [], [], []
    for sigma in (0.0, 0.05, 0.1, 0.2, 0.4):
        v = _values(evaluate_images(data, cfg, opts, samples=_noisy(other, sigma)))
        fids.append(v["fid"])
        kids.append(v["kid"])
        precisions.append(v["precision"])
    print("digits FID vs noise sigma (0, .05, .1, .2, .4):", [round(f, 2) for f in fids])
    assert all(a < b for a, b in zip(fids, fids[1:])), fids
    assert all(a < b for a, b in zip(kids, kids[1:])), kids
    assert precisions[0] > precisions[-1]
    assert fids[-1] > 5 * fids[0]  # the clean halves are close; heavy noise is far


def test_identical_sets_give_zero_fid_and_full_precision(eval_cache, halves):
    data, cfg, _ = halves
    r = evaluate_images(data, cfg, ImageEvalOptions(metrics=("fid", "pr", "dc"), cache_dir=eval_cache,
                                                    allow_small=True), samples=data.test_x)
    v = _values(r)
    assert v["fid"] == pytest.approx(0.0, abs=1e-6)
    assert v["precision"] == v["recall"] == v["coverage"] == 1.0


def test_images_are_resized_to_the_evaluator_on_both_sides(eval_cache):
    cfg = DataConfig(name="digits", image_size=16, channels=3)  # as digits-dcgan trains, in RGB
    data = load_images(cfg)
    r = evaluate_images(data, cfg, ImageEvalOptions(metrics=("fid", "is"), cache_dir=eval_cache), samples=data.test_x)
    fid = r.results[0]
    assert fid.value == pytest.approx(0.0, abs=1e-6)
    assert (fid.protocol.image_size, fid.protocol.channels, fid.protocol.extractor) == (16, 3, "evaluator:digits")
    native = evaluate_images(data, cfg, ImageEvalOptions(metrics=("fid",), cache_dir=eval_cache),
                             samples=data.train_x[:400]).results[0]
    assert native.value > 0 and native.protocol.id != fid.protocol.id


def test_guardrails(eval_cache, halves):
    data, cfg, other = halves
    small = ImageEvalOptions(metrics=("fid",), n=100, cache_dir=eval_cache)  # D = 128
    with pytest.raises(SampleSizeError, match=r"--allow-small") as err:
        evaluate_images(data, cfg, small, samples=other)
    assert "100 generated and 100 reference" in str(err.value)
    r = evaluate_images(data, cfg, ImageEvalOptions(metrics=("fid",), n=100, allow_small=True,
                                                    cache_dir=eval_cache), samples=other)
    assert any(w.startswith("WARNING: FID needs N >= feature dimension") for w in r.warnings)
    assert any("compare only results with the same N" in w for w in r.warnings)
    # KID subset larger than the sets: lowered, loudly, and recorded in the protocol
    r = evaluate_images(data, cfg, ImageEvalOptions(metrics=("kid",), n=300, cache_dir=eval_cache), samples=other)
    assert any("KID subset size lowered from 1000 to 300" in w for w in r.warnings)
    assert r.results[0].protocol.params["subset_size"] == 300
    # KID and PRDC alone do not need N >= D
    r = evaluate_images(data, cfg, ImageEvalOptions(metrics=("kid", "dc"), n=50, cache_dir=eval_cache,
                                                    allow_small=True), samples=other)
    assert not any("FID needs" in w for w in r.warnings)


def test_knn_metrics_on_small_sets_are_skipped_refused_or_flagged(eval_cache, halves):
    data, cfg, other = halves  # 898 reference images: below PRDC_MIN_N
    r = evaluate_images(data, cfg, ImageEvalOptions(n=len(other), cache_dir=eval_cache), samples=other)
    assert not {"precision", "recall", "density", "coverage"} & {x.metric for x in r.results}
    assert any(n.startswith("pr, dc: skipped (k-NN manifold estimates need at least 1000") for n in r.notes)
    with pytest.raises(SampleSizeError, match=r"precision/recall/density/coverage: .* 898 reference .*--allow-small"):
        evaluate_images(data, cfg, ImageEvalOptions(metrics=("pr",), n=len(other), cache_dir=eval_cache),
                        samples=other)
    r = evaluate_images(data, cfg, ImageEvalOptions(metrics=("pr",), n=len(other), allow_small=True,
                                                    cache_dir=eval_cache), samples=other)
    assert {x.metric for x in r.results} == {"precision", "recall"}
    assert any("are unreliable" in w and "898 reference" in w for w in r.warnings)


def test_knn_metrics_between_the_two_thresholds_carry_a_warning(eval_cache):
    from genforge.evaluation.images import PRDC_MIN_N, PRDC_WARN_N, _prdc_policy

    warns, notes, metrics = [], [], ["fid", "pr", "dc"]
    _prdc_policy(ImageEvalOptions(), metrics, PRDC_MIN_N, PRDC_WARN_N - 1, warns, notes)
    assert metrics == ["fid", "pr", "dc"] and not notes
    assert len(warns) == 1 and "still moving with N" in warns[0]
    warns.clear()
    _prdc_policy(ImageEvalOptions(), metrics, PRDC_WARN_N, PRDC_WARN_N, warns, notes)
    assert not warns


def test_an_evaluator_that_misclassifies_its_held_out_images_is_reported():
    from genforge.evaluation.features import Extractor
    from genforge.evaluation.images import _evaluator_trust

    def make(acc):
        return Extractor(id="evaluator:x", sha256="", dim=8, run=lambda x: (x, None), channels=1, image_size=8,
                         num_classes=10, test_accuracy=acc, test_examples=201)
    warns: list[str] = []
    weak = make(0.77)
    _evaluator_trust(weak, weak, warns)
    assert len(warns) == 1 and "only 77.0% of its 201 held-out images" in warns[0] and "--features inception" in warns[0]
    warns.clear()
    _evaluator_trust(make(0.99), None, warns)
    assert warns == []


def test_inapplicable_metrics_and_bad_options(eval_cache, halves):
    data, cfg, other = halves
    with pytest.raises(EvalError, match="'recon' does not apply: samples have no model"):
        evaluate_images(data, cfg, ImageEvalOptions(metrics=("recon",), cache_dir=eval_cache), samples=other)
    with pytest.raises(EvalError, match="unknown image metric"):
        ImageEvalOptions(metrics=("fid", "fidd"))
    with pytest.raises(EvalError, match="reference must be"):
        ImageEvalOptions(reference="val")
    with pytest.raises(EvalError, match=r"\[1, 16, 16\] but the reference images are \[1, 8, 8\]"):
        evaluate_images(data, cfg, ImageEvalOptions(cache_dir=eval_cache), samples=torch.zeros(200, 1, 16, 16,
                                                                                              dtype=torch.uint8))


def test_protocol_records_extractor_sizes_and_subsample(eval_cache, halves):
    data, cfg, other = halves
    r = evaluate_images(data, cfg, ImageEvalOptions(n=600, reference_seed=3, seed=2, cache_dir=eval_cache,
                                                    allow_small=True), samples=other)
    _, info = load_evaluator("digits", cache_dir=eval_cache)
    names = [x.metric for x in r.results]
    assert names == ["fid", "kid", "precision", "recall", "density", "coverage", "is", "modes_hit", "modes_kl"]
    for res in r.results:
        p = res.protocol
        assert (p.extractor, p.extractor_sha256) == (info.id, info.sha256)
        assert (p.n_generated, p.n_reference, p.reference_split) == (600, 600, "test")
        assert (p.reference_subsample, p.subsample_seed, p.seed) == ("shuffled", 3, 2)
        assert (p.dataset, p.image_size, p.channels) == ("digits", 8, 1)
        assert p.split_sizes == {"train": len(data.train_x), "test": len(data.test_x)}
    byname = {x.metric: x for x in r.results}
    assert byname["kid"].std is not None and byname["is"].std is not None
    assert byname["precision"].protocol.params == {"k": 3} and byname["density"].protocol.params == {"k": 5}
    # the reference is a shuffled subset, not the first 600
    first = evaluate_images(data, cfg, ImageEvalOptions(metrics=("fid",), n=600, reference_seed=4,
                                                        cache_dir=eval_cache), samples=other).results[0]
    assert first.protocol.reference_sha256 != byname["fid"].protocol.reference_sha256


def test_reference_features_are_cached_and_repaired(eval_cache, halves, tmp_path):
    data, cfg, _ = halves
    ext = evaluator_extractor(data, cfg, cache_dir=eval_cache)
    meta = {"dataset": "digits", "split": "test", "n": 500, "subsample_seed": 0, "reference_sha256": "abc"}
    x = data.test_x[:500]
    f1, s1, hit1 = reference_features(ext, x, meta, cache_dir=tmp_path)
    f2, s2, hit2 = reference_features(ext, x, meta, cache_dir=tmp_path)
    assert (hit1, hit2) == (False, True)
    assert torch.equal(f1, f2) and np.array_equal(s1.sigma, s2.sigma)
    _, _, hit3 = reference_features(ext, x, {**meta, "n": 499, "reference_sha256": "x"}, cache_dir=tmp_path)
    assert not hit3  # another key
    (npz,) = [p for p in (tmp_path / "eval-reference").glob("*-500-*.npz") if ".stats." not in p.name]
    npz.write_bytes(b"garbage")
    with pytest.warns(RuntimeWarning, match="unreadable"):
        f4, _, hit4 = reference_features(ext, x, meta, cache_dir=tmp_path)
    assert not hit4 and torch.equal(f4, f1)


def test_balanced_labels_follow_the_reference_histogram():
    ref = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    labels, how = balanced_labels(ref, 7, 3, seed=0)
    assert torch.bincount(labels, minlength=3).tolist() == [4, 2, 1]  # 3.5, 2.1, 1.4 → largest remainder
    assert "proportions" in how
    big, _ = balanced_labels(ref, 1000, 3, seed=5)
    assert torch.bincount(big).tolist() == [500, 300, 200]
    assert not torch.equal(big, big.sort().values)  # shuffled
    assert torch.equal(big, balanced_labels(ref, 1000, 3, seed=5)[0])
    uni, how = balanced_labels(None, 10, 4, seed=0)
    assert torch.bincount(uni).tolist() == [3, 3, 2, 2] and "uniform" in how


# --------------------------------------------------------------------------- samples files


def test_unlabelled_folder_needs_inception(tmp_path, eval_cache):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(folder / f"{i}.png")
    cfg = DataConfig(name=f"imagefolder:{folder}")
    data = load_images(cfg)
    with pytest.raises(EvaluatorError, match="--features inception"):
        evaluate_images(data, cfg, ImageEvalOptions(n=4, cache_dir=eval_cache), samples=data.train_x)


def test_inception_features_protocol(tmp_path, halves):
    from genforge.data import DataError
    from genforge.evaluation.features.inception_weights import find_or_fetch

    try:
        weights = find_or_fetch(download=False, cache_dir=tmp_path, progress=False)
    except DataError:
        pytest.skip("FID Inception weights not available offline")
    data, cfg, other = halves
    small = ImageData(name="digits", train_x=data.train_x[:8], train_y=data.train_y[:8], test_x=data.test_x[:8],
                      test_y=data.test_y[:8], classes=data.classes)
    opts = ImageEvalOptions(metrics=("fid", "kid"), n=8, features="inception", cache_dir=tmp_path, batch_size=8)
    with pytest.raises(SampleSizeError, match="2048-d inception-v3-fid"):
        evaluate_images(small, cfg, opts, samples=other[:8])
    opts.allow_small = True
    r = evaluate_images(small, cfg, opts, samples=other[:8])
    p = r.results[0].protocol
    assert (p.extractor, p.extractor_sha256, p.feature_dim) == ("inception-v3-fid", weights.sha256, 2048)
    assert r.results[1].protocol.params["subset_size"] == 8


@pytest.mark.slow
def test_mnist_train_vs_test_fid_and_noise(mnist_dir, request, record_property):
    """Real MNIST: 10k shuffled train images vs the 10k test images in the MNIST evaluator's feature space."""
    try:
        _, info = load_evaluator("mnist")
        cache = None
    except EvaluatorError:
        store = Path(request.config.cache.mkdir("genforge-evaluators"))
        _ensure_evaluator(store, "mnist", PRESETS["mnist"], data_dir=mnist_dir)
        cache = store
    cfg = DataConfig(name="mnist", data_dir=str(mnist_dir))
    data = load_images(cfg)
    idx = torch.randperm(len(data.train_x), generator=torch.Generator().manual_seed(0))[:10_000]
    train = data.train_x[idx].contiguous()
    opts = ImageEvalOptions(metrics=("fid", "kid", "pr", "dc"), n=10_000, cache_dir=cache)
    fids = []
    for sigma in (0.0, 0.05, 0.1, 0.2):
        v = _values(evaluate_images(data, cfg, opts, samples=_noisy(train, sigma)))
        fids.append(v["fid"])
        if sigma == 0.0:
            record_property("mnist_fid_train10k_vs_test10k", v["fid"])
            record_property("mnist_kid_train10k_vs_test10k", v["kid"])
            print(f"MNIST FID train(10k shuffled) vs test(10k): {v['fid']:.3f}; KID {v['kid']:.4g}; "
                  f"precision {v['precision']:.3f} recall {v['recall']:.3f}")
    record_property("mnist_fid_vs_noise", fids)
    print("MNIST FID vs noise sigma (0, .05, .1, .2):", [round(f, 2) for f in fids])
    assert all(a < b for a, b in zip(fids, fids[1:])), fids
    assert fids[1] > 2 * fids[0]


def test_every_evaluator_behind_the_metrics_has_its_held_out_accuracy_noted():
    from genforge.evaluation.features import Extractor
    from genforge.evaluation.images import _evaluator_trust

    ex = Extractor(id="evaluator:x", sha256="ab" * 32, dim=8, run=lambda x: (x, None), channels=1, image_size=8,
                   num_classes=10, test_accuracy=0.9925, test_examples=400)
    warns: list[str] = []
    notes: list[str] = []
    _evaluator_trust(ex, ex, warns, notes)
    assert warns == [] and notes == ["evaluator evaluator:x (sha256 abababababab…): 99.25% of its 400 held-out "
                                     "images classified correctly"]
