"""Fuzz suite of the command line: every bad input exits 1 or 2 with one line on stderr, no traceback, and
leaves every file that existed before byte-identical.

Each case is a command; ``{gan}``, ``{gpt}``, ``{tmp}`` … in it are replaced by paths of the fixtures below
(trained tiny runs, damaged copies of them, bad input files).
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from genforge.cli import main

FAST = ["--no-progress", "--set", "train.max_steps=2", "--set", "train.checkpoint_every=2",
        "--set", "train.sample_every=2", "--set", "train.num_threads=1"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """Trained runs, damaged copies and bad input files, all under one root that every case must not change."""
    root = tmp_path_factory.mktemp("fuzz")
    w = {"tmp": root, "gan": root / "gan", "gpt": root / "gpt"}
    corpus = root / "corpus.txt"
    corpus.write_text("".join(f"the line {i % 9} of a corpus.\n" for i in range(300)), encoding="utf-8")
    assert main(["train", "tiny-gan", "--out", str(w["gan"]), *FAST]) == 0
    assert main(["train", "tiny-gpt", "--out", str(w["gpt"]), "--set", f"data.name=text:{corpus}", *FAST]) == 0
    for name, damage in (("garbage", b"this is not a safetensors file"), ("empty", b"")):
        w[name] = root / name
        shutil.copytree(w["gan"], w[name])
        (w[name] / "model.safetensors").write_bytes(damage)
    w["nan"] = root / "nan"
    shutil.copytree(w["gan"], w["nan"])
    tensors = load_file(str(w["nan"] / "model.safetensors"))
    first = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[first] = torch.full_like(tensors[first], float("nan"))
    save_file(tensors, str(w["nan"] / "model.safetensors"), metadata={"family": "gan"})
    for name, text in (("listcfg", "- a\n- b\n"), ("tagcfg", "!!python/object/apply:os.system ['echo owned']\n"),
                       ("notyaml", "model: [unclosed\n")):
        w[name] = root / name
        shutil.copytree(w["gan"], w[name])
        (w[name] / "config.yaml").write_text(text)
    w["file"] = root / "a-file.txt"
    w["file"].write_text("I am a file")
    w["png"] = root / "existing.png"
    w["png"].write_bytes(b"not really a png, but it exists")
    w["empty_npy"] = root / "empty.npy"
    w["empty_npy"].write_bytes(b"")
    np.save(root / "good.npy", np.zeros((200, 8, 8), dtype=np.uint8))
    w["bool_npy"] = root / "bool.npy"
    np.save(w["bool_npy"], np.zeros((20, 8, 8), dtype=bool))
    w["empty_txt"] = root / "empty.txt"
    w["empty_txt"].write_text("")
    w["board"] = root / "board"
    w["board"].mkdir()
    (w["board"] / "leaderboard.md").write_text("an earlier leaderboard")
    w["recipe_list"] = root / "list.yaml"
    w["recipe_list"].write_text("- not\n- a mapping\n")
    w["recipe_tag"] = root / "tag.yaml"
    w["recipe_tag"].write_text("model: !!python/object/apply:os.system ['echo owned']\n")
    return w


CASES = [
    # ---- train: recipes, overrides, resources
    ["train", "no-such-recipe"],
    ["train", "--config", "{tmp}/missing.yaml"],
    ["train", "--config", "{recipe_list}"],
    ["train", "--config", "{recipe_tag}"],
    ["train", "tiny-gan", "--config", "{recipe_list}"],
    ["train", "tiny-gan", "--set", "train.lrr=1"],
    ["train", "tiny-gan", "--set", "train.lr=.inf"],
    ["train", "tiny-gan", "--set", "train.lr=-.inf"],
    ["train", "tiny-gan", "--set", "train.lr=nan"],
    ["train", "tiny-gan", "--set", "train.lr=é"],
    ["train", "tiny-gan", "--set", "train.lr="],
    ["train", "tiny-gan", "--set", "train.num_threads=100000"],
    ["train", "tiny-gan", "--set", "train.max_steps=1000000000000000000000000000000"],
    ["train", "tiny-gan", "--set", "train.max_steps=0"],
    ["train", "tiny-gan", "--set", "train.batch_size=-1"],
    ["train", "tiny-gan", "--set", "train.device=banana"],
    ["train", "tiny-gan", "--set", "train.device=cuda:99"],
    ["train", "tiny-gan", "--set", "train.precision=fp8"],
    ["train", "tiny-gan", "--set", "model.family=nope"],
    ["train", "tiny-gan", "--set", "model.z_dim=0"],
    ["train", "tiny-gan", "--set", "data.name=tinyshakespeare"],
    ["train", "tiny-gpt", "--set", "data.name=digits"],
    ["train", "tiny-gpt", "--set", "data.name=text:{empty_txt}", "--out", "{tmp}/new-empty-corpus"],
    ["train", "tiny-gan", "--set", "data.name=imagefolder:{tmp}/no-such-folder"],
    ["train", "tiny-gan", "--set", "sample.temperature=0.5"],
    ["train", "tiny-gan", "--set", "sample.n=0"],
    ["train", "tiny-gan", "--set", "=3"],
    ["train", "tiny-gan", "--set", "no-equals-sign"],
    ["train", "tiny-gan", "--set", "train.group_steps={{bogus: 2}}", "--out", "{tmp}/new-bad-group", *FAST],
    ["train", "tiny-gan", "--out", "{gan}"],
    ["train", "tiny-gan", "--out", "{file}/sub"],
    ["train", "tiny-gan", "--out", "{file}"],
    ["train", "--out", "{tmp}/no-such-run", "--resume"],
    ["train", "--resume"],
    ["train", "tiny-gan", "--out", "{gan}", "--resume"],
    ["train", "--bogus-flag"],
    ["bogus-command"],
    # ---- sample: counts, labels, devices, outputs, options
    ["sample"],
    ["sample", "{tmp}/no-such-run"],
    ["sample", "{file}"],
    ["sample", "{gan}", "--n", "0"],
    ["sample", "{gan}", "--n", "-3"],
    ["sample", "{gan}", "--n", "abc"],
    ["sample", "{gan}", "--n", "1000000000"],
    ["sample", "{gan}", "--nrow", "0"],
    ["sample", "{gan}", "--batch-size", "0"],
    ["sample", "{gan}", "--seed", "x"],
    ["sample", "{gan}", "--label", "10"],
    ["sample", "{gan}", "--label", "-1"],
    ["sample", "{gan}", "--label", "ankle_boot"],
    ["sample", "{gan}", "--label", ""],
    ["sample", "{gan}", "--device", "banana"],
    ["sample", "{gan}", "--device", "cuda:7"],
    ["sample", "{gan}", "-o", "{gan}/model.safetensors"],
    ["sample", "{gan}", "-o", "{gan}/config.yaml"],
    ["sample", "{gan}", "-o", "{gan}/checkpoints/x.png"],
    ["sample", "{gan}", "-o", "{gan}/samples.png"],
    ["sample", "{gan}", "-o", "{png}"],
    ["sample", "{gan}", "-o", "{tmp}"],
    ["sample", "{gan}", "-o", "{tmp}/grid.gif"],
    ["sample", "{gan}", "-o", "{tmp}/grid"],
    ["sample", "{gan}", "-o", "{file}/sub.png"],
    ["sample", "{gan}", "--set", "sample.bogus=1"],
    ["sample", "{gan}", "--set", "train.lr=1"],
    ["sample", "{gan}", "--set", "sample.n=1e400"],
    ["sample", "{gan}", "--prompt", "hi"],
    ["sample", "{gan}", "--best"],
    ["sample", "{garbage}"],
    ["sample", "{empty}"],
    ["sample", "{nan}"],
    ["sample", "{listcfg}"],
    ["sample", "{tagcfg}"],
    ["sample", "{notyaml}"],
    ["sample", "{gpt}", "--temperature", "nan"],
    ["sample", "{gpt}", "--temperature", "inf"],
    ["sample", "{gpt}", "--temperature", "-1"],
    ["sample", "{gpt}", "--top-p", "2"],
    ["sample", "{gpt}", "--top-p", "0"],
    ["sample", "{gpt}", "--top-k", "0"],
    ["sample", "{gpt}", "--max-new-tokens", "1000000000", "--n", "8"],
    ["sample", "{gpt}", "--max-new-tokens", "-1"],
    ["sample", "{gpt}", "--n", "100", "--max-new-tokens", "999999"],
    ["sample", "{gpt}", "--prompt", "☃ snowman"],
    ["sample", "{gpt}", "--prompt", ""],
    ["sample", "{gpt}", "--label", "3"],
    ["sample", "{gpt}", "-o", "{gpt}/tokenizer.json"],
    ["sample", "{gpt}", "-o", "{gpt}/best/model.safetensors"],
    ["sample", "{gpt}", "-o", "{file}"],
    # ---- eval
    ["eval"],
    ["eval", "{tmp}/no-such-run"],
    ["eval", "{gan}", "--n", "100000000"],
    ["eval", "{gan}", "--n", "1"],
    ["eval", "{gan}", "--n", "50"],
    ["eval", "{gan}", "--metrics", "bogus"],
    ["eval", "{gan}", "--metrics", "nll"],
    ["eval", "{gan}", "--metrics", ","],
    ["eval", "{gan}", "--batch-size", "0"],
    ["eval", "{gan}", "--kid-subset-size", "-1"],
    ["eval", "{gan}", "--reference", "val"],
    ["eval", "{gan}", "--dataset", "digits"],
    ["eval", "{gpt}", "--temperature", "nan"],
    ["eval", "{gpt}", "--max-new-tokens", "0"],
    ["eval", "{garbage}"],
    ["eval", "{nan}"],
    ["eval", "{tagcfg}"],
    ["eval", "--samples", "{empty_npy}", "--dataset", "digits"],
    ["eval", "--samples", "{bool_npy}", "--dataset", "digits"],
    ["eval", "--samples", "{file}", "--dataset", "digits"],
    ["eval", "--samples", "{empty_npy}"],
    ["eval", "--samples", "{empty_npy}", "{gan}", "--dataset", "digits"],
    ["eval", "--samples", "{tmp}/good.npy", "--dataset", "digits", "--out", "{gan}"],
    # ---- compare, recipes, evaluators
    ["compare", "{tmp}/no-such-run"],
    ["compare", "{gan}", "--out", "{file}"],
    ["compare", "{gan}", "--out", "{board}"],
    ["recipes", "show"],
    ["recipes", "show", "no-such-recipe"],
    ["recipes", "bogus"],
    ["evaluators", "build"],
    ["evaluators", "build", "tinyshakespeare"],
]


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


@pytest.mark.parametrize("case", CASES, ids=lambda c: " ".join(c)[:80])
def test_bad_input_is_one_line_and_destroys_nothing(case, world, capsys, monkeypatch):
    monkeypatch.setenv("GENFORGE_DEBUG", "")
    argv = [a.format(**{k: str(v) for k, v in world.items()}) for a in case]
    before = _tree(world["tmp"])
    try:
        code = main(argv)
    except SystemExit as e:  # argparse
        code = e.code
    out = capsys.readouterr()
    lines = [line for line in out.err.splitlines() if line.strip()]
    assert code in (1, 2), f"exit {code}: {out.err[-500:]}"
    assert "Traceback" not in out.err and "Traceback" not in out.out
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {out.err[-800:]}"
    assert "error" in lines[0], lines[0]
    after = _tree(world["tmp"])
    changed = [k for k in before if after.get(k) != before[k]]
    assert changed == [], f"changed or removed: {changed[:5]}"


def test_the_suite_covers_enough_cases():
    assert len(CASES) >= 100
