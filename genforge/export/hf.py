"""Hugging Face-style model folder: ``config.json``, ``model.safetensors``, tokenizer files, ``README.md``.

The weights are the run's sampling weights (``model.safetensors``: the EMA when the run kept one),
copied byte for byte. The model card's YAML front matter names ``library_name: genforge``; its
body holds the recipe (the run's ``config.yaml``), the evaluation results with their protocol
(``eval.json``, when it measured these weights) and the run's final samples.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import yaml

from genforge import __version__
from genforge.config import to_dict
from genforge.io import atomic_write_text
from genforge.models.base import GenerativeModel
from genforge.rundir import EVAL_JSON, RunDir, weights_sha256

CARD = "README.md"
HF_CONFIG = "config.json"


def hf_config(model: GenerativeModel) -> dict[str, Any]:
    """``config.json``: family, task, the model config and the genforge version that wrote it."""
    return {"library_name": "genforge", "family": model.family, "task": model.task,
            "model": to_dict(model.config), "genforge_version": __version__}


def _md(s: Any) -> str:
    """Text from a run's files as literal Markdown: HTML's ``&<>`` as entities, Markdown's marks escaped."""
    text = " ".join(str(s).splitlines()).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"([\\`*_\[\]#!|~])", r"\\\1", text)


def _code(s: str) -> str:
    """``s`` as an inline code span (fenced by more backticks than it holds; ``|`` escaped for tables)."""
    text = " ".join(s.splitlines()).replace("|", "\\|")
    fence = "`" * (max((len(r) for r in re.findall("`+", text)), default=0) + 1)
    pad = " " if "`" in text else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _eval_section(run: RunDir) -> list[str]:
    """Markdown lines for ``eval.json``'s results (metric, value, protocol) when they are of the weights
    exported: results of other weights are left out with a line saying so; results that record no weights
    are marked unchecked. None when absent or unreadable."""
    if not run.eval_json.is_file():
        return []
    try:
        record = json.loads(run.eval_json.read_text(encoding="utf-8"))
        results, subject = record.get("results", []), record.get("subject") or {}
        recorded = subject.get("weights_sha256")
    except (OSError, ValueError, AttributeError):
        return []
    lines = ["## Evaluation", ""]
    if recorded and recorded != weights_sha256(run.weights):
        return [*lines, f"The results in {EVAL_JSON} are of other weights (sha256 {_md(str(recorded)[:12])}…, "
                        f"not these) and are left out; run `genforge eval` again to measure these.", ""]
    if not recorded:
        lines += [f"Unchecked: {EVAL_JSON} does not record which weights it measured.", ""]
    lines += ["| metric | value | protocol |", "|---|---|---|"]
    for r in results:
        std = f" ± {r['std']:.4g}" if isinstance(r.get("std"), (int, float)) else ""
        value = f"{r['value']:.6g}" if isinstance(r.get("value"), (int, float)) else _md(r.get("value"))
        protocol = _code(json.dumps(r.get("protocol", {}), sort_keys=True))
        lines.append(f"| {_md(r.get('metric'))} | {value}{std} | {protocol} |")
    return [*lines, ""]


def model_card(model: GenerativeModel, run: RunDir, samples: str | None) -> str:
    """The ``README.md`` text: YAML front matter, recipe, evaluation, samples."""
    front = {"library_name": "genforge", "tags": ["genforge", model.family, model.task]}
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
             f"# {_md(run.path.resolve().name)}", "",
             f"A genforge `{model.family}` model ({model.task}), exported with genforge {__version__}.", "",
             "## Recipe", "", "```yaml", run.config.read_text(encoding="utf-8").strip(), "```", "",
             *_eval_section(run)]
    if samples is not None and samples.endswith(".png"):
        lines += ["## Samples", "", f"![samples]({samples})", ""]
    elif samples is not None:
        text = (run.path / samples).read_text(encoding="utf-8", errors="replace")
        lines += ["## Samples", "", "```text", text.strip(), "```", ""]
    return "\n".join(lines) + "\n"


def export_hf(model: GenerativeModel, run_dir: Path, out: Path) -> Path:
    """Write the model folder for the run at ``run_dir`` into ``out`` (an absent or empty folder)."""
    run = RunDir(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run.weights, out / "model.safetensors")
    atomic_write_text(out / HF_CONFIG, json.dumps(hf_config(model), indent=2) + "\n")
    if run.tokenizer.is_file():
        shutil.copyfile(run.tokenizer, out / run.tokenizer.name)
    sample_file = run.samples(model.task)
    samples = None
    if sample_file.is_file():
        shutil.copyfile(sample_file, out / sample_file.name)
        samples = sample_file.name
    atomic_write_text(out / CARD, model_card(model, run, samples))
    return out
