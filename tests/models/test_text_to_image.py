"""Text-to-image diffusion: the contract for a prompted model, the word tokenizer, cross-attention against
a reference computation, guidance with a negative prompt, and the CLI / HTTP path from a caption folder."""

from __future__ import annotations

import base64
import io
import json
import math

import pytest
import torch
from PIL import Image

from genforge import models
from genforge.cli import main
from genforge.config import ConfigError, FieldError
from genforge.models.conditions import Condition
from genforge.models.diffusion import Diffusion, DiffusionConfig
from genforge.models.text_encoder import EMPTY, PAD, UNKNOWN, CrossAttention, WordTokenizer, words_of
from tests.models.contract import ImageModelContract, image_batch

CAPTIONS = ["red apple — food & drink", "green apple — food & drink", "cat face — animals & nature",
            "grinning face — smileys & emotion"]


def tokenizer() -> WordTokenizer:
    return WordTokenizer.fit(CAPTIONS, 8)


def cfg(**kw) -> DiffusionConfig:
    tok = tokenizer()
    return DiffusionConfig(**{"channels": 3, "image_size": 8, "prompted": True, "text_words": tok.words,
                              "text_len": tok.length, "width": 8, "text_width": 16, "text_layers": 1,
                              "timesteps": 50, "vlb_timesteps": 4, "sample_prompts": CAPTIONS[:2], **kw})


def prompted_batch(config: DiffusionConfig, n: int = 4) -> dict[str, torch.Tensor]:
    batch = image_batch(config, n)
    del batch["y"]
    batch["text"] = WordTokenizer(config.text_words, config.text_len).encode([CAPTIONS[i % 4] for i in range(n)])
    return batch


class TestPromptedFlow(ImageModelContract):
    def tiny_config(self):
        return cfg(objective="flow")

    def dummy_batch(self):
        return prompted_batch(self.tiny_config())

    def test_condition_argument(self):
        model = self.make_model()
        with pytest.raises(ValueError, match="takes a prompt"):
            model.sample(2, condition=1, generator=torch.Generator().manual_seed(0))
        a = model.sample(2, condition=Condition(text=("red apple",)), generator=torch.Generator().manual_seed(0))
        b = model.sample(2, condition=Condition(text=("red apple", "red apple")),
                         generator=torch.Generator().manual_seed(0))
        c = model.sample(2, condition=Condition(text=("cat face",)), generator=torch.Generator().manual_seed(0))
        assert torch.equal(a, b) and not torch.equal(a, c)

    def test_conditional_batch_without_labels_is_a_value_error(self):
        model = self.make_model()
        batch = self.dummy_batch()
        with pytest.raises(ValueError, match="needs captions"):
            model.losses({"x": batch["x"]})
        with pytest.raises(ValueError, match="caption ids in"):
            model.losses({"x": batch["x"], "text": batch["text"] + model.tokenizer.vocab_size})


class TestPromptedDDPM(ImageModelContract):
    def tiny_config(self):
        return cfg()

    def dummy_batch(self):
        return prompted_batch(self.tiny_config())

    test_condition_argument = TestPromptedFlow.test_condition_argument
    test_conditional_batch_without_labels_is_a_value_error = (
        TestPromptedFlow.test_conditional_batch_without_labels_is_a_value_error)


def test_the_word_tokenizer_reads_captions_and_refuses_what_it_cannot_encode():
    tok = tokenizer()
    assert words_of("Cat  Face — Animals & Nature!") == ["cat", "face", "animals", "&", "nature"]
    assert tok.words == sorted({w for c in CAPTIONS for w in words_of(c)}) and tok.length == 5
    ids = tok.encode(["red apple", "", "APPLE, red"])
    assert ids.shape == (3, 5) and ids.dtype == torch.long
    assert ids[0, :2].tolist() == [tok.index["red"], tok.index["apple"]] and ids[0, 2:].tolist() == [PAD] * 3
    assert ids[1].tolist() == [EMPTY] + [PAD] * 4  # the empty caption is one token, never all padding
    assert torch.equal(tok.empty(2), ids[1:2].expand(2, -1))
    assert ids[2, :2].tolist() == [tok.index["apple"], tok.index["red"]]
    with pytest.raises(FieldError, match=r"'aple'.*did you mean 'apple'"):
        tok.encode(["red aple"])
    with pytest.raises(FieldError, match="has 6 words; this model reads at most 5"):
        tok.encode(["red apple red apple red apple"])
    lenient = tok.encode(["blue apple red apple red apple"], strict=False)
    assert lenient[0].tolist() == [UNKNOWN, tok.index["apple"], tok.index["red"], tok.index["apple"], tok.index["red"]]


def test_cross_attention_equals_a_reference_computation():
    torch.manual_seed(0)
    layer = CrossAttention(8, 6, heads=2)
    x, context = torch.randn(2, 8, 3, 3), torch.randn(2, 5, 6)
    keep = torch.tensor([[True, True, True, False, False], [True, False, False, False, False]])
    got = layer(x, context, keep)
    h = layer.norm(x).flatten(2).transpose(1, 2)  # [B, 9, 8]
    q = h @ layer.q.weight.T + layer.q.bias
    kv = context @ layer.kv.weight.T + layer.kv.bias
    k, v = kv[..., :8], kv[..., 8:]
    out = torch.zeros(2, 9, 8)
    for b in range(2):
        m = int(keep[b].sum())  # only the kept tokens exist for the reference
        for head in range(2):
            sl = slice(4 * head, 4 * head + 4)
            w = torch.softmax(q[b, :, sl] @ k[b, :m, sl].T / math.sqrt(4), dim=-1)  # [9, m]
            out[b, :, sl] = w @ v[b, :m, sl]
    want = x + (out @ layer.out.weight.T + layer.out.bias).transpose(1, 2).reshape(2, 8, 3, 3)
    assert torch.allclose(got, want, atol=1e-5)
    moved = context.clone()
    moved[:, 3:] = 99.0  # what stands at masked positions changes nothing
    assert torch.allclose(layer(x, moved, keep), got, atol=1e-6)


def test_guidance_mixes_the_prompt_with_the_empty_caption_or_a_negative_prompt():
    torch.manual_seed(0)
    model = Diffusion(cfg(objective="flow"))
    x, t = torch.randn(2, 3, 8, 8), torch.full((2,), 25.0)
    y = model.tokenizer.encode(["red apple"] * 2)
    cond, empty = model._predict(x, t, y), model._predict(x, t, model.tokenizer.encode([""] * 2))
    assert torch.allclose(model._guided(x, t, y, 3.0), empty + 3.0 * (cond - empty), atol=1e-5)
    neg = model.tokenizer.encode(["cat face"] * 2)
    assert torch.allclose(model._guided(x, t, y, 3.0, neg), model._predict(x, t, neg) + 3.0 * (
        cond - model._predict(x, t, neg)), atol=1e-5)
    with pytest.raises(ConfigError, match="sample.negative_prompt"):
        model.parse_sample_options({"negative_prompt": "purple cow"})
    with pytest.raises(ConfigError, match="label_dropout > 0"):
        Diffusion(cfg(label_dropout=0.0)).parse_sample_options({"guidance": 3})


def test_a_prompted_model_cannot_also_take_labels_and_needs_its_vocabulary():
    with pytest.raises(ValueError, match="prompted and conditional"):
        DiffusionConfig(prompted=True, conditional=True)
    with pytest.raises(ValueError, match="text_words"):
        Diffusion(DiffusionConfig(channels=3, image_size=8, prompted=True))


@pytest.fixture(scope="module")
def caption_folder(tmp_path_factory):
    """24 coloured 12-px squares and circles with captions, in the Hugging Face metadata.jsonl layout."""
    root = tmp_path_factory.mktemp("shapes")
    rows = []
    colours = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 230)}
    for i in range(24):
        colour, shape = list(colours)[i % 3], ("square", "circle")[i // 3 % 2]
        im = Image.new("RGBA", (12, 12), (0, 0, 0, 0))
        px = im.load()
        for u in range(12):
            for w in range(12):
                if shape == "square" and 2 <= u < 10 and 2 <= w < 10 or shape == "circle" and (u - 5.5) ** 2 + (
                        w - 5.5) ** 2 < 16:
                    px[u, w] = (*colours[colour], 255)
        im.save(root / f"{i:02d}.png")
        rows.append({"file_name": f"{i:02d}.png", "text": f"a {colour} {shape}"})
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def t2i_run(caption_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "t2i"
    code = main(["train", "tiny-t2i", "--out", str(out), "--no-progress", "--set",
                 f"data.name=imagefolder:{caption_folder}", "--set", "data.background=white", "--set",
                 "train.num_threads=1"])
    assert code == 0
    return out


def test_a_captioned_folder_trains_with_no_other_change_and_samples_from_a_prompt(t2i_run, tmp_path, capsys):
    model = models.load(t2i_run)
    assert model.accepted_conditions() == ("text", "image") and model.config.channels == 3  # a prompt; img2img
    assert set(model.config.text_words) == {"a", "red", "green", "blue", "square", "circle"}
    grid = Image.open(t2i_run / "samples.png")  # the preview: one tile per prompt of the run's list, captioned
    assert grid.text["prompts"].split(" | ")[0] == model.config.sample_prompts[0]
    assert grid.size[1] > grid.size[0]  # caption strips under the square tiles
    out = tmp_path / "red.png"
    assert main(["sample", str(t2i_run), "--prompt", "a red circle", "--n", "4", "--guidance", "2",
                 "--negative-prompt", "a blue square", "--seed", "3", "-o", str(out)]) == 0
    assert Image.open(out).text["prompt"] == "a red circle"
    code = main(["sample", str(t2i_run), "--prompt", "a purple circle", "-o", str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    assert code == 2 and "'purple'" in err and "never saw in a caption" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.png").exists()


def served_images(run, prompts: dict[str, int], refused: str | None = None) -> dict[str, list]:
    """Images the official openai client's ``images.generate`` gets from ``genforge serve RUN`` for each prompt
    (n each); ``refused``: a prompt whose 400 must say the model never saw a word."""
    openai = pytest.importorskip("openai")
    pytest.importorskip("fastapi")
    from tests.serve.conftest import running_server

    out = {}
    with running_server([f"t2i={run}"]) as (url, _):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        for prompt, n in prompts.items():
            got = client.images.generate(model="t2i", prompt=prompt, n=n, response_format="b64_json")
            out[prompt] = [Image.open(io.BytesIO(base64.b64decode(d.b64_json))) for d in got.data]
        if refused is not None:
            with pytest.raises(openai.BadRequestError, match="never saw in a caption"):
                client.images.generate(model="t2i", prompt=refused, n=1)
    return out


def test_the_official_openai_client_generates_from_a_prompt(t2i_run):
    images = served_images(t2i_run, {"a green square": 2}, refused="a green triangle")["a green square"]
    assert len(images) == 2 and images[0].size == (12, 12) and images[0].mode == "RGB"


def test_onnx_export_writes_the_caption_encoder_and_the_denoiser_and_the_hf_export_loads(t2i_run, tmp_path):
    pytest.importorskip("onnxruntime")
    assert main(["export", str(t2i_run), "--format", "onnx", "--out", str(tmp_path / "onnx")]) == 0
    verify = json.loads((tmp_path / "onnx" / "verify.json").read_text())
    assert set(verify["graphs"]) == {"text_encoder", "denoiser"}  # checked against PyTorch at batch 2 and 5
    assert verify["graphs"]["denoiser"]["inputs"] == ["x_t", "t", "tokens", "keep", "caption"]
    assert main(["export", str(t2i_run), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert cfg["model"]["prompted"] and set(cfg["model"]["text_words"]) == set(models.load(t2i_run).config.text_words)
    assert (tmp_path / "hf" / "model.safetensors").read_bytes() == (t2i_run / "model.safetensors").read_bytes()


def test_a_text_to_image_teacher_is_refused_for_distillation(t2i_run, tmp_path, capsys):
    code = main(["train", "mnist-diffusion-distill", "--out", str(tmp_path / "student"), "--no-progress",
                 "--set", f"parents.teacher={t2i_run}", "--set", "data.name=digits"])
    err = capsys.readouterr().err
    assert code == 2 and "text-to-image teacher" in err


def test_evaluation_draws_from_the_reference_captions(t2i_run, tmp_path, capsys):
    digits = tmp_path / "digits"  # captions from the labels: "digit 3"; the digits evaluator scores them
    assert main(["train", "tiny-t2i", "--out", str(digits), "--no-progress", "--set", "train.max_steps=2"]) == 0
    assert main(["eval", str(digits), "--metrics", "fid", "--n", "24", "--allow-small", "--no-progress"]) == 0
    capsys.readouterr()
    report = json.loads((digits / "eval.json").read_text())
    assert report["generation"]["conditioning"].startswith("the captions of the test reference images")
    model = models.load(t2i_run)
    assert model.readable_prompt("A RED triangle, circle!") == "a red circle"  # unknown words dropped


def test_alignment_metrics_rank_prompt_following_against_its_ceiling_and_floor(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("genforge.evaluation.alignment.EVALUATOR_STEPS", 150)
    digits = tmp_path / "digits"  # captions "digit 3": the contrastive evaluator learns them on the training split
    assert main(["train", "tiny-t2i", "--out", str(digits), "--no-progress", "--set", "train.max_steps=2"]) == 0
    assert main(["eval", str(digits), "--metrics", "align", "--n", "40", "--no-progress"]) == 0
    capsys.readouterr()
    report = json.loads((digits / "eval.json").read_text())
    got = {r["metric"]: r for r in report["results"]}
    assert set(got) == {"clip_score", "r_precision", "r_precision_real", "r_precision_chance", "category_accuracy"}
    k = got["r_precision"]["protocol"]["params"]["k"]
    assert k == 10 and got["r_precision_chance"]["value"] == pytest.approx(0.1)  # ten distinct captions
    assert got["r_precision_real"]["value"] > 0.5  # real digits are found among their ten captions
    assert 0.0 <= got["r_precision"]["value"] <= 1.0 and -100.0 <= got["clip_score"]["value"] <= 100.0
    assert got["clip_score"]["protocol"]["extractor"] == "contrastive:digits"
    assert len(got["clip_score"]["protocol"]["extractor_sha256"]) == 64
    code = main(["eval", "--samples", str(tmp_path / "none.npz"), "--dataset", "digits", "--metrics", "align"])
    assert code != 0
    longer = tmp_path / "longer"  # compare ranks text-to-image runs on the alignment metrics with their protocols
    assert main(["train", "tiny-t2i", "--out", str(longer), "--no-progress", "--set", "train.max_steps=40"]) == 0
    assert main(["eval", str(longer), "--metrics", "align", "--n", "40", "--no-progress"]) == 0
    assert main(["compare", str(digits), str(longer), "--out", str(tmp_path / "board")]) == 0
    board = (tmp_path / "board" / "leaderboard.md").read_text()
    section = board.split("Text–image alignment")[1]
    assert "R-precision" in section and "CLIP score" in section and "R-precision of real images" in section
    assert "digits" in section and "longer" in section
