"""Fuzz suite of the command line: every bad input exits 1 or 2 with one line on stderr, no traceback, and
leaves every file that existed before byte-identical.

Each case is a command; ``{gan}``, ``{gpt}``, ``{tmp}`` … in it are replaced by paths of the fixtures below
(trained tiny runs, damaged copies of them, bad input files).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
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
    # ---- outputs a command does not own inside a run, and empty, root and system outputs (issue 24)
    ["sample", "{gan}", "-o", "{gan}/checkpoints/step-00000002/x.png"],
    ["sample", "{gan}", "-o", "{gan}/samples/step-00000002.png", "--overwrite"],
    ["sample", "{gan}", "-o", "{gan}/samples/notes.png"],
    ["sample", "{gpt}", "-o", "{gpt}/best/x.txt"],
    ["export", "{gpt}", "--format", "hf", "--out", "{gpt}/best"],
    ["export", "{gan}", "--format", "onnx", "--out", "{gan}/checkpoints"],
    ["export", "{gan}", "--format", "hf", "--out", "{gan}/samples/export"],
    ["synth", "{gan}", "--n", "4", "--out", "{gan}/samples"],
    ["synth", "{gan}", "--n", "4", "--out", "{gan}/synthetic"],
    ["synth", "{gan}", "--n", "4", "--out", "{gan}/synthetic.npz"],
    ["compare", "{gan}", "--out", "{gan}/checkpoints"],
    ["compare", "{gan}", "--out", "{gan}"],
    ["compare", "{gan}", "--out", "{gan}/samples"],
    ["inpaint", "{gan}", "--image", "{png}", "--mask", "center", "-o", "{gan}/config.yaml"],
    ["inpaint", "{gan}", "--image", "{png}", "--mask", "center", "-o", "{gan}/samples/x.png"],
    ["interpolate", "{gan}", "-o", "{gan}/samples/sample-x.png"],
    ["interpolate", "{gan}", "-o", "{gan}/model.png"],
    *[[*cmd, out] for cmd in (["sample", "{gan}", "-o"], ["interpolate", "{gan}", "-o"],
                              ["inpaint", "{gan}", "--image", "{png}", "--mask", "center", "-o"])
      for out in ("", " ", "/", "/x.png", "/etc/genforge-x.png", "/usr/share/genforge-x.png")],
    *[[*cmd, out] for cmd in (["export", "{gan}", "--format", "hf", "--out"], ["synth", "{gan}", "--n", "4", "--out"],
                              ["compare", "{gan}", "--out"])
      for out in ("", " ", "/", "/etc", "/usr/share/genforge-x", "/proc/genforge-x")],
    # ---- server options out of range at start-up: refused before any model is loaded or port bound
    ["serve", "{gan}", "--max-tokens", str(10**12)],
    ["serve", "{gan}", "--timeout", "-1"],
    ["serve", "{gan}", "--timeout", "1e12"],
    ["serve", "{gan}", "--timeout", "nan"],
    ["serve", "{gan}", "--api-key", "clé☃"],
    ["serve", "{gan}", "--api-key", "two words"],
    ["serve", "{gan}", "--port", "70000"],
    ["serve", "{gan}", "--port", "-1"],
    ["serve", "{gan}", "--max-queue", "-1"],
    ["serve", "{gan}", "--max-batch", str(10**9)],
    ["serve", "{gan}", "--max-n", str(10**6)],
    ["serve", "{gan}", "--batch-window", "-1"],
    ["serve", "{gan}", "--write-timeout", "-5"],
    ["serve", "{gan}", "--stream-buffer", str(10**12)],
    ["serve", "{gan}", "--max-body-bytes", str(10**15)],
    ["serve", "{tmp}/no-such-run"],
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
    assert len(CASES) + len(BOUND_CASES) >= 100


# ---------------------------------------------------------------- bounded input, native failures, resume checks

def _bomb(levels: int = 9) -> str:
    """A YAML "billion laughs": 9 aliases of 9 aliases of ... (9**9 strings once expanded)."""
    lines = ["a0: &a0 [" + ", ".join(["lol"] * 9) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + f"\nmodel: *a{levels - 1}\n"


def _edit_tokenizer(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def bounds(world, tmp_path_factory) -> dict[str, Path]:
    """``world`` plus recipes, runs and corpora that probe the bounds, under the same checked root."""
    root, w = world["tmp"], dict(world)
    deep = "[" * 10_000 + "]" * 10_000
    for name, text in (("bomb", _bomb()), ("deep", f"model: {deep}\n"), ("selfref", "model: &m {family: *m}\n"),
                       ("huge", "description: " + "x" * (2 << 20) + "\n")):
        w[f"{name}_yaml"] = root / f"{name}.yaml"
        w[f"{name}_yaml"].write_text(text)
    w["loop"] = root / "loop"
    (w["loop"] / "a" / "b").mkdir(parents=True)
    (w["loop"] / "a" / "b" / "notes.md").write_text("not a .txt file")
    for link, target in (("a/up", ".."), ("a/b/top", "../.."), ("a/b/self", ".")):
        (w["loop"] / link).symlink_to(target, target_is_directory=True)
    tok = "tokenizer.json"
    bpe = root / "gpt-bpe"
    corpus = root / "corpus.txt"
    assert main(["train", "tiny-gpt", "--out", str(bpe), "--set", f"data.name=text:{corpus}",
                 "--set", "data.tokenizer=bpe", "--set", "data.vocab_size=280", *FAST]) == 0
    regex = {"type": "Split", "pattern": {"Regex": "(a+)+$"}, "behavior": "Isolated", "invert": False}
    for name, base, change in (
            ("tok_regex", bpe, lambda d: d.__setitem__("pre_tokenizer", regex)),
            ("tok_dropout", bpe, lambda d: d["model"].__setitem__("dropout", 0.3)),
            ("tok_big", world["gpt"], lambda d: d.__setitem__("chars", [chr(0x4E00 + i) for i in range(500)]))):
        w[name] = root / name
        shutil.copytree(base, w[name])
        _edit_tokenizer(w[name] / tok, change)
    w["tok_deep"] = root / "tok_deep"
    shutil.copytree(world["gpt"], w["tok_deep"])
    (w["tok_deep"] / tok).write_text("[" * 100_000 + "]" * 100_000)
    cfg = yaml.safe_load((world["gpt"] / "config.yaml").read_text())
    other = root / "other-corpus.txt"  # as many distinct characters as corpus.txt, not the same ones
    other.write_text(corpus.read_text().translate(str.maketrans("abc", "xyz")))
    edits = {"cfg_bomb": _bomb(), "cfg_deep": f"model: {deep}\n",
             "edited": {**cfg, "model": {**cfg["model"], "n_embd": 64}},
             "wider": {**cfg, "model": {**cfg["model"], "n_layer": 3}},
             "other_corpus": {**cfg, "data": {**cfg["data"], "name": f"text:{other}"}},
             **{f"no_{s}": {k: v for k, v in cfg.items() if k != s} for s in ("train", "model", "data")}}
    for name, content in edits.items():
        w[name] = root / name
        shutil.copytree(world["gpt"], w[name])
        text = content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False)
        (w[name] / "config.yaml").write_text(text)
    return w


BOUND_CASES = [
    # ---- recipes and configs: alias expansion, nesting, size
    ["train", "--config", "{bomb_yaml}"],
    ["train", "--config", "{deep_yaml}"],
    ["train", "--config", "{selfref_yaml}"],
    ["train", "--config", "{huge_yaml}"],
    ["train", "tiny-gan", "--set", "train.lr=" + "[" * 10_000 + "]" * 10_000],
    ["train", "tiny-gan", "--set", "train.betas=[&a [1,1,1,1,1,1,1,1,1], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a], "
                                   "&c [*b,*b,*b,*b,*b,*b,*b,*b,*b], &d [*c,*c,*c,*c,*c,*c,*c,*c,*c], "
                                   "&e [*d,*d,*d,*d,*d,*d,*d,*d,*d], &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]]"],
    ["sample", "{cfg_bomb}"],
    ["sample", "{cfg_deep}"],
    # ---- corpora: globs and folders over symbolic-link loops
    ["train", "tiny-gpt", "--set", "data.name=text:{loop}/**/*.txt", "--out", "{tmp}/new-loop-glob"],
    ["train", "tiny-gpt", "--set", "data.name=text:{loop}", "--out", "{tmp}/new-loop-folder"],
    # ---- tokenizers: checked on load
    ["sample", "{tok_regex}", "--prompt", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab"],
    ["sample", "{tok_dropout}"],
    ["sample", "{tok_big}"],
    ["sample", "{tok_deep}"],
    ["eval", "{tok_regex}"],
    # ---- resume: the run's config, tokenizer and checkpoints must agree
    ["train", "--out", "{gpt}", "--resume", "--set", "data.name=text:{tmp}/other-corpus.txt"],
    ["train", "--out", "{gpt}", "--resume", "--set", "data.tokenizer=byte"],
    ["train", "--out", "{gpt}", "--resume", "--set", "model.n_embd=64"],
    ["train", "--out", "{edited}", "--resume"],
    ["train", "--out", "{wider}", "--resume"],
    ["train", "--out", "{other_corpus}", "--resume", "--no-progress"],  # no "tokenizing ..." line
    ["train", "--out", "{no_train}", "--resume"],
    ["train", "--out", "{no_model}", "--resume"],
    ["train", "--out", "{no_data}", "--resume"],
]


class _Hung(BaseException):  # not an Exception, so main cannot report it as an error
    pass


@pytest.mark.parametrize("case", BOUND_CASES, ids=lambda c: " ".join(c)[:80])
def test_bounded_input_fails_fast_in_one_line(case, bounds, capsys, monkeypatch):
    """The cases of issue 24 (findings 4 and 7), each given at most 60 s (they used to hang or grow)."""
    def hung(*_):
        raise _Hung(f"{case[:3]} ran longer than 60 s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    try:
        test_bad_input_is_one_line_and_destroys_nothing(case, bounds, capsys, monkeypatch)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
