"""``POST /v1/images/edits`` with the official ``openai`` client: img2img without a mask (strength 0 gives the
image back), inpainting with an OpenAI-style transparent mask (known pixels kept), and one 400 per bad input."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from genforge.cli import main

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A tiny text-to-image run on the captioned 8×8 digits and a tiny GAN, served together."""
    from tests.serve.conftest import running_server

    root = tmp_path_factory.mktemp("edits")
    for recipe in ("tiny-t2i", "tiny-gan"):
        assert main(["train", recipe, "--out", str(root / recipe), "--no-progress", "--set", "train.max_steps=4",
                     "--set", "train.num_threads=1"]) == 0
    with running_server([f"t2i={root / 'tiny-t2i'}", f"gan={root / 'tiny-gan'}"]) as (url, _):
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0), root


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


SOURCE = (np.arange(64, dtype=np.uint8).reshape(8, 8) * 4)


def pixels(result) -> list[np.ndarray]:
    return [np.array(Image.open(io.BytesIO(base64.b64decode(d.b64_json)))) for d in result.data]


def test_img2img_without_a_mask(served):
    client, _ = served
    same = client.images.edit(model="t2i", image=("a.png", png(SOURCE)), prompt="digit 3", n=2,
                              extra_body={"strength": 0, "seed": 1})
    assert [p.shape for p in pixels(same)] == [(8, 8), (8, 8)]
    assert all(np.array_equal(p, SOURCE) for p in pixels(same))  # strength 0: the image itself
    moved = client.images.edit(model="t2i", image=("a.png", png(SOURCE)), prompt="digit 3", n=1,
                               extra_body={"strength": 0.8, "seed": 1, "steps": 4})
    again = client.images.edit(model="t2i", image=("a.png", png(SOURCE)), prompt="digit 3", n=1,
                               extra_body={"strength": 0.8, "seed": 1, "steps": 4})
    assert not np.array_equal(pixels(moved)[0], SOURCE) and np.array_equal(pixels(moved)[0], pixels(again)[0])


def test_inpainting_with_a_transparent_mask_keeps_the_known_pixels(served):
    client, _ = served
    mask = np.full((8, 8, 4), 255, dtype=np.uint8)
    mask[2:6, 2:6, 3] = 0  # OpenAI's convention: fully transparent = edit
    got = pixels(client.images.edit(model="t2i", image=("a.png", png(SOURCE)), mask=("m.png", png(mask)),
                                    prompt="digit 5", n=1, extra_body={"seed": 2, "steps": 10}))[0]
    keep = mask[..., 3] == 255
    assert np.array_equal(got[keep], SOURCE[keep]) and not np.array_equal(got[~keep], SOURCE[~keep])


@pytest.mark.parametrize("kwargs, param, words", [
    ({"extra_body": {"strength": 1.5}}, "strength", "strength"),
    ({"mask": ("m.png", png(np.zeros((4, 4, 4), dtype=np.uint8)))}, "mask", "same size"),
    ({"image": ("a.png", png(np.zeros((6, 6), dtype=np.uint8)))}, "image", "8x8"),
    ({"image": ("a.png", b"not a png")}, "image", "not a readable image"),
    ({"prompt": "digit eleventy"}, "prompt", "never saw"),
    ({"extra_body": {"stpes": 3}}, "stpes", "steps"),
    ({"model": "gan"}, "image", "cannot do img2img"),
])
def test_bad_input_is_one_400_naming_the_field(served, kwargs, param, words):
    client, _ = served
    call = {"model": "t2i", "image": ("a.png", png(SOURCE)), "prompt": "digit 3", "n": 1, **kwargs}
    if call["model"] == "gan":
        call["prompt"] = ""  # the client requires one; empty is no condition
    with pytest.raises(openai.BadRequestError) as err:
        client.images.edit(**call)
    body = err.value.body
    assert body["param"] == param and words in body["message"], body
