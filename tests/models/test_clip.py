"""The clip family (a contrastive text–image encoder) and text-to-image diffusion standing on it frozen
(``parents.text_encoder``): the contract, the loss against the towers, the per-image shifts, the retrieval
evaluation against a closed form, the frozen tower, and the chain through ``genforge train`` / ``sample``."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from genforge import models
from genforge.cli import main
from genforge.config import ConfigError, FieldError
from genforge.data import ImageData
from genforge.evaluation.retrieval import CAPTION_LOSS, retrieval_hook
from genforge.models.clip import Clip, ClipConfig, _shift, contrastive_loss
from genforge.models.text_encoder import WordTokenizer
from tests.models.contract import ImageModelContract
from tests.models.test_text_to_image import CAPTIONS, prompted_batch
from tests.models.test_text_to_image import cfg as t2i_cfg


def clip_cfg(**kw) -> ClipConfig:
    tok = WordTokenizer.fit(CAPTIONS, 8)
    return ClipConfig(**{"channels": 3, "image_size": 8, "text_words": tok.words, "text_len": tok.length,
                         "width": 8, "image_width": 8, "text_width": 16, "text_layers": 1,
                         "sample_prompts": CAPTIONS[:2], **kw})


def make_clip(seed: int = 0, **kw) -> Clip:
    torch.manual_seed(seed)
    return Clip(clip_cfg(**kw))


class TestClip(ImageModelContract):
    def tiny_config(self):
        return clip_cfg()

    def dummy_batch(self):
        return prompted_batch(self.tiny_config())

    def test_conditional_batch_without_labels_is_a_value_error(self):
        model = self.make_model()
        with pytest.raises(ValueError, match="needs captions"):
            model.losses({"x": self.dummy_batch()["x"]})


def test_the_loss_is_infonce_of_the_two_towers_embeddings():
    model = make_clip().eval()  # eval: no shifts
    batch = prompted_batch(model.config, n=4)
    images, texts = model.embed_images(batch["x"]), model.embed_texts(batch["text"])
    assert torch.allclose(images.norm(dim=1), torch.ones(4)) and torch.allclose(texts.norm(dim=1), torch.ones(4))
    logits = math.exp(float(model.logit_scale.detach())) * images.double() @ texts.double().T
    want = (F.cross_entropy(logits, torch.arange(4)) + F.cross_entropy(logits.T, torch.arange(4))) / 2
    assert float(model.losses(batch)["loss"].detach()) == pytest.approx(float(want), rel=1e-5)
    assert float(contrastive_loss(images, texts, 1.0)) > 0


def test_training_shifts_each_image_by_its_own_edge_padded_offset():
    x = torch.rand(5, 3, 8, 8)
    torch.manual_seed(4)
    out = _shift(x, 0.25)  # offsets in [0, 4] of a 2-pixel pad
    torch.manual_seed(4)
    d = torch.randint(0, 5, (5, 2))
    padded = F.pad(x, (2, 2, 2, 2), mode="replicate")
    for i in range(5):
        dx, dy = int(d[i, 0]), int(d[i, 1])
        assert torch.equal(out[i], padded[i, :, dy:dy + 8, dx:dx + 8])
    assert len({tuple(r) for r in d.tolist()}) > 1  # not one offset for the whole batch
    assert _shift(x, 0.0) is x


@pytest.mark.parametrize("bad, match", [({"prompted": False}, "prompted"), ({"heads": 3}, "heads"),
                                        ({"shift": 0.6}, "shift"), ({"width": 0}, "width"),
                                        ({"conditional": True}, "prompted")])
def test_bad_options_name_the_field(bad, match):
    with pytest.raises(FieldError, match=match):
        clip_cfg(**bad)


def test_the_retrieval_evaluation_matches_its_closed_form():
    """One-hot embeddings of each image's caption: every caption ranks first, and the caption loss is the
    cross-entropy of a logit s against M - 1 logits 0."""
    model = make_clip()
    model.logit_scale.data.fill_(math.log(2.0))  # s = 2
    captions = [CAPTIONS[i % 4] for i in range(6)]
    data = ImageData(name="toy", train_x=torch.zeros(4, 3, 8, 8, dtype=torch.uint8), train_y=None,
                     test_x=torch.arange(6, dtype=torch.uint8).view(6, 1, 1, 1).expand(6, 3, 8, 8).contiguous(),
                     test_y=None, classes=[], train_text=CAPTIONS, test_text=captions)
    pool = sorted(set(captions))
    model.embed_images = lambda x: F.one_hot(torch.tensor([pool.index(captions[int(v)]) for v in x[:, 0, 0, 0]]),
                                             8).float()
    model.embed_texts = lambda ids: F.one_hot(torch.arange(ids.shape[0]), 8).float()
    got = retrieval_hook(data)(model, 0)
    s, m = 2.0, len(pool)
    assert got[CAPTION_LOSS] == pytest.approx(-math.log(math.exp(s) / (math.exp(s) + m - 1)), rel=1e-5)
    assert got[f"eval/r_precision@{m}"] == 1.0


def frozen_pair(**kw) -> tuple[Clip, models.GenerativeModel]:
    clip = make_clip().eval()
    torch.manual_seed(1)
    config = t2i_cfg(frozen_text=True, **kw)
    return clip, models.build(config, {"text_encoder": clip})


def test_a_frozen_text_encoder_is_read_not_trained_and_not_saved():
    clip, model = frozen_pair()
    assert model.text is clip.text_tower
    assert not any(k.startswith("text.") for k in model.state_dict())
    assert all(not p.requires_grad for p in clip.parameters())
    before = {k: v.clone() for k, v in clip.state_dict().items()}
    params = model.param_groups()["loss"]
    assert not {id(p) for p in params} & {id(p) for p in clip.parameters()}
    opt = torch.optim.Adam(params, lr=1e-2)
    model.train()
    model.losses(prompted_batch(model.config))["loss"].backward()
    opt.step()
    assert all(torch.equal(before[k], v) for k, v in clip.state_dict().items())
    assert model.text_pool.weight.grad is not None and float(model.text_pool.weight.grad.abs().sum()) > 0


def test_a_frozen_text_encoder_must_match_and_be_named():
    clip = make_clip()
    with pytest.raises(ConfigError, match="text_width"):
        models.build(t2i_cfg(frozen_text=True, text_width=32), {"text_encoder": clip})
    with pytest.raises(ConfigError, match="text_words"):
        models.build(t2i_cfg(frozen_text=True, text_words=["apple", "red"]), {"text_encoder": clip})
    with pytest.raises(ConfigError, match="no parents.text_encoder"):
        models.build(t2i_cfg(frozen_text=True))
    with pytest.raises(ConfigError, match="frozen_text"):
        models.build(t2i_cfg(), {"text_encoder": clip})
    torch.manual_seed(0)
    with pytest.raises(ConfigError, match="must be a clip run"):
        models.build(t2i_cfg(frozen_text=True), {"text_encoder": models.build(t2i_cfg())})
    with pytest.raises(ValueError, match=r"optional: text_encoder.*unknown \['teacher'\]"):
        models.build(t2i_cfg(frozen_text=True), {"text_encoder": clip, "teacher": clip})


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "t2i-clip"
    assert main(["train", "tiny-t2i-clip", "--out", str(out), "--no-progress", "--set", "train.num_threads=1"]) == 0
    return out


def test_the_chain_trains_the_encoder_first_and_samples_from_a_prompt(chain, tmp_path, capsys):
    encoder = chain / "parents" / "text_encoder"
    model = models.load(chain)
    assert model.config.frozen_text and model.text is model.parents["text_encoder"].text_tower
    assert model.config.text_words == models.load(encoder).config.text_words
    evals = [json.loads(line) for line in (encoder / "metrics.jsonl").read_text().splitlines()]
    assert any(CAPTION_LOSS in e for e in evals)  # the encoder's own held-out evaluation, not a FID
    preview = Image.open(encoder / "samples.png")  # held-out images ranked first for the run's prompts
    assert preview.text["prompts"].split(" | ")[0] == models.load(encoder).config.sample_prompts[0]
    out = tmp_path / "three.png"
    assert main(["sample", str(chain), "--prompt", "digit 3", "--n", "4", "--guidance", "2", "-o", str(out)]) == 0
    code = main(["sample", str(encoder), "-o", str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    assert code != 0 and "does not generate" in err and "parents.text_encoder" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "x.png").exists()


def test_a_text_field_the_encoder_fixes_is_refused_in_one_line(chain, tmp_path, capsys):
    code = main(["train", "tiny-t2i", "--out", str(tmp_path / "r"), "--no-progress", "--set",
                 f"parents.text_encoder={chain / 'parents' / 'text_encoder'}", "--set", "model.text_width=32"])
    err = capsys.readouterr().err
    assert code == 2 and "model.text_width is set" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_the_onnx_export_carries_both_encoders_of_the_parent(chain, tmp_path):
    pytest.importorskip("onnxruntime")
    assert main(["export", str(chain), "--format", "onnx", "--out", str(tmp_path / "onnx")]) == 0
    verify = json.loads((tmp_path / "onnx" / "parents" / "text_encoder" / "verify.json").read_text())
    assert set(verify["graphs"]) == {"image_encoder", "text_encoder"}
    assert {"text_encoder", "denoiser"} <= set(json.loads((tmp_path / "onnx" / "verify.json").read_text())["graphs"])
