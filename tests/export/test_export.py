"""``genforge export``: ONNX graphs equal PyTorch (≤ 1e-4), the exported GPT decoder run through genforge's one
decode loop gives genforge's tokens, the hf folder's contents, and the one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

ort = pytest.importorskip("onnxruntime")

from genforge.cli import main  # noqa: E402
from genforge.export import export_run  # noqa: E402
from genforge.export.onnx import OnnxLanguageModel  # noqa: E402
from genforge.models import FAMILIES, build, config_class, load  # noqa: E402
from genforge.models.decoding import stream  # noqa: E402

FAST = ["train.max_steps=2", "train.checkpoint_every=2", "train.sample_every=2", "train.log_every=1",
        "train.eval_samples=16"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    from genforge.training.run import train

    root = tmp_path_factory.mktemp("export")
    corpus = root / "corpus.txt"
    corpus.write_text("".join(f"line {i % 17} of a small corpus, with words.\n" for i in range(300)), encoding="utf-8")
    extra = {"tiny-gpt": [f"data.name=text:{corpus}"], "tiny-diffusion": ["sample.n=2"]}
    out = {}
    for recipe in ("tiny-gan", "tiny-vae", "tiny-diffusion", "tiny-gpt"):
        out[recipe] = root / recipe
        train(recipe, overrides=[*FAST, *extra.get(recipe, [])], out=out[recipe], progress=False)
    out["tiny-sr"] = root / "tiny-sr"  # an untrained superres model (the family has no ONNX graphs)
    sr = build(config_class("superres")(family="superres", channels=1, image_size=8, factors=[2], width=8))
    sr.save_pretrained(out["tiny-sr"], run_config={"task": "image"})
    return out


def _session(path: Path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("recipe,graph", [("tiny-gan", "generator"), ("tiny-vae", "decoder"),
                                          ("tiny-diffusion", "denoiser"), ("tiny-gpt", "decoder")])
def test_onnx_graph_equals_pytorch(runs, tmp_path, recipe, graph):
    out = export_run(runs[recipe], "onnx", out=tmp_path / "onnx")
    report = json.loads((out / "verify.json").read_text())
    print(f"{recipe} {graph}: max |onnxruntime - torch| {report['graphs'][graph]['max_abs_diff']:.1e}")
    assert report["graphs"][graph]["max_abs_diff"] <= 1e-4
    model = load(runs[recipe]).eval()
    module, inputs, names, _, _ = model.onnx_graphs()[graph]
    inputs = tuple(t.repeat(3, *[1] * (t.ndim - 1)) if recipe != "tiny-gpt" else t for t in inputs)  # batch 6
    with torch.no_grad():
        want = module(*inputs)
    want = want if isinstance(want, tuple) else (want,)
    got = _session(out / f"{graph}.onnx").run(None, {n: t.numpy() for n, t in zip(names, inputs)})
    for g, w in zip(got, want):
        assert g.shape == tuple(w.shape)
        assert float(abs(torch.from_numpy(g) - w).max()) <= 1e-4


def _onnx_generate(session, model, prompt: torch.Tensor, steps: int, seed: int, temperature: float) -> list[int]:
    """Decode with the ONNX graph and its KV cache through genforge's own decode loop."""
    exported = OnnxLanguageModel(session, model)
    generator = torch.Generator().manual_seed(seed)
    return [int(t[0]) for t in stream(exported, prompt[None], steps, generator=generator, temperature=temperature)]


@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("steps", [20, 60])  # 4 + 20 ≤ block_size 32: no slide; 4 + 60: the window slides twice
def test_gpt_onnx_kv_cache_generation_equals_genforge(runs, tmp_path, temperature, steps):
    out = export_run(runs["tiny-gpt"], "onnx", out=tmp_path / "onnx")
    generation = json.loads((out / "verify.json").read_text())["graphs"]["decoder"]["generation"]
    assert generation["same_tokens"] and generation["new_tokens"] > 32 and generation["rows"] == 2
    model = load(runs["tiny-gpt"]).eval()
    prompt = torch.tensor([1, 2, 3, 4], dtype=torch.long)
    want = model.generate(prompt[None], steps, temperature=temperature, generator=torch.Generator().manual_seed(7))
    assert _onnx_generate(_session(out / "decoder.onnx"), model, prompt, steps, 7, temperature) == want[0, 4:].tolist()


def test_gpt_onnx_text_equals_genforge_sample(runs, tmp_path, capsys):
    """The exported decoder, fed the run's tokenizer, writes the text ``genforge sample --seed`` prints."""
    from genforge.data.tokenizers import load_tokenizer

    out = export_run(runs["tiny-gpt"], "onnx", out=tmp_path / "onnx")
    prompt = "line 3"
    capsys.readouterr()
    assert main(["sample", str(runs["tiny-gpt"]), "--n", "1", "--seed", "11", "--prompt", prompt,
                 "--max-new-tokens", "24", "--temperature", "1.0"]) == 0
    printed = capsys.readouterr().out
    tokenizer = load_tokenizer(runs["tiny-gpt"] / "tokenizer.json")
    model = load(runs["tiny-gpt"]).eval()
    ids = _onnx_generate(_session(out / "decoder.onnx"), model, torch.tensor(tokenizer.encode(prompt)), 24, 11, 1.0)
    text = prompt + tokenizer.decode(ids)
    assert len(text) >= len(prompt) + 20 and text in printed, (text, printed)  # 24 random draws, char tokens


def test_hf_folder(runs, tmp_path, capsys):
    gpt = tmp_path / "gpt-hf"
    assert main(["export", str(runs["tiny-gpt"]), "--format", "hf", "--out", str(gpt)]) == 0
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md", "samples.txt"} <= \
        {p.name for p in gpt.iterdir()}
    cfg = json.loads((gpt / "config.json").read_text())
    assert cfg["family"] == "gpt" and cfg["model"]["n_layer"] == 2 and "genforge_version" in cfg
    card = (gpt / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: genforge\n") and "## Recipe" in card and "family: gpt" in card
    assert (gpt / "model.safetensors").read_bytes() == (runs["tiny-gpt"] / "model.safetensors").read_bytes()
    # an image run, with an evaluation on record, into the default folder
    gan = runs["tiny-gan"]
    (gan / "eval.json").write_text(json.dumps({"results": [
        {"metric": "fid", "value": 12.5, "std": None, "protocol_id": "x", "protocol": {"n": 100}}]}))
    try:
        assert main(["export", str(gan), "--format", "hf"]) == 0
    finally:
        (gan / "eval.json").unlink()
    hf = gan / "export-hf"
    assert (hf / "samples.png").read_bytes() == (gan / "samples.png").read_bytes()
    card = (hf / "README.md").read_text()
    assert "| fid | 12.5 |" in card and '"n": 100' in card and "![samples](samples.png)" in card
    assert not (hf / "tokenizer.json").exists()


def fail(capsys, argv: list[str], pattern: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert pattern in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_errors(runs, tmp_path, capsys):
    fail(capsys, ["export", str(runs["tiny-gan"]), "--format", "tflite"], "unknown export format 'tflite'")
    fail(capsys, ["export", str(runs["tiny-sr"]), "--format", "onnx", "--out", str(tmp_path / "x")],
         "family superres cannot be exported to ONNX; formats it supports: hf")
    assert not (tmp_path / "x").exists()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    fail(capsys, ["export", str(runs["tiny-gan"]), "--format", "onnx", "--out", str(busy)], "not empty")
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    fail(capsys, ["export", str(tmp_path / "nope"), "--format", "hf"], "nope")


_TINY = {"n_layer": 1, "n_embd": 16, "n_head": 2, "block_size": 16, "vocab_size": 40, "width": 8, "g_width": 8,
         "d_width": 8, "max_width": 16, "z_dim": 8, "latent_dim": 4, "channels": 1, "image_size": 8}


def _shipped_recipes() -> list[str]:
    from genforge.config.files import recipe_path

    return sorted(p.stem for p in recipe_path("tiny-gpt").parent.glob("*.yaml") if not p.stem.startswith("tiny-"))


@pytest.mark.parametrize("recipe", _shipped_recipes())
def test_onnx_export_of_every_shipped_recipe_tiny_variant_verifies(tmp_path, recipe):
    """The recipe's own model section (dropout, attention, conditioning …) at tiny sizes: the graphs are compared
    with the model in eval mode, so dropout > 0 (text-bpe) exports and verifies (issue 24, finding 8)."""
    from genforge.config import load_yaml
    from genforge.config.files import recipe_path

    section = dict(load_yaml(recipe_path(recipe))["model"])
    cls = config_class(section["family"])
    fields = cls.__dataclass_fields__
    section.update({k: v for k, v in _TINY.items() if k in fields})
    if section.get("conditional"):
        section["num_classes"] = 3
    if "factors" in section:
        section["factors"] = [2]
    if section.get("prompted", "prompted" in fields and fields["prompted"].default):  # captions come from data
        section.update(text_words=["red", "apple"], text_len=4, text_width=16)
    if FAMILIES[section["family"]].parent_roles:  # a student needs its teacher run: not a standalone export
        pytest.skip(f"{recipe}: its model stands on a parent run ({FAMILIES[section['family']].parent_roles})")
    model = build(cls(**section))
    model.train()  # as left by training: export must not depend on the mode it finds
    model.save_pretrained(tmp_path / "run", run_config={"task": model.task})
    if "onnx" not in type(model).export_formats:
        pytest.skip(f"{recipe}: family {model.family} has no ONNX graphs")
    out = export_run(tmp_path / "run", "onnx", out=tmp_path / "onnx")
    report = json.loads((out / "verify.json").read_text())
    assert report["graphs"] and all(g["max_abs_diff"] <= 1e-4 for g in report["graphs"].values())
    assert all(g.get("generation", {}).get("same_tokens", True) for g in report["graphs"].values())


def test_the_model_card_quotes_only_results_of_the_weights_exported(runs, tmp_path):
    """eval.json of older weights is left out of the card, with a line saying so; what the eval file carries
    is escaped (issue 24, finding 6)."""
    import shutil

    from genforge.rundir import weights_sha256

    run = tmp_path / "gan"
    shutil.copytree(runs["tiny-gan"], run)
    result = {"metric": "fid<script>x</script>", "value": 12.5, "std": None, "protocol": {"n": "a|`b`"}}

    def card(sha: str | None) -> str:
        subject = {} if sha is None else {"subject": {"weights_sha256": sha}}
        (run / "eval.json").write_text(json.dumps({"results": [result], **subject}))
        return (export_run(run, "hf", out=tmp_path / f"hf-{sha}") / "README.md").read_text()

    current = card(weights_sha256(run / "model.safetensors"))
    assert "| fid&lt;script&gt;x&lt;/script&gt; | 12.5 |" in current and "<script>" not in current
    assert "``" in current and "Unchecked" not in current and "left out" not in current
    stale = card("0" * 64)
    assert "12.5" not in stale and "fid" not in stale and "are of other weights" in stale
    unchecked = card(None)
    assert "Unchecked" in unchecked and "12.5" in unchecked
