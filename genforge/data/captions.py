"""Captions beside an image folder, in the Hugging Face ``imagefolder`` layout.

A ``metadata.jsonl`` (one JSON object per line) or ``metadata.csv`` (a header row) in the folder lists
its images: a ``file_name`` column (a path relative to the folder), the caption column (``text`` by
default, ``data.caption_column``) and any other columns; ``data.label_column`` names one whose values
become class labels (sorted distinct values → 0, 1, …). Images the file does not list are not used.

    file_name,text,category
    apple.png,red apple,food
    cat/tabby.png,"cat face, tabby",animal
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError

__all__ = ["Metadata", "METADATA_FILES", "find_metadata", "read_metadata"]

METADATA_FILES = ("metadata.jsonl", "metadata.csv")
MAX_CAPTION_CHARS = 2_000


@dataclass
class Metadata:
    """The rows of a metadata file: each image's path, caption and (when asked) label value."""

    source: Path
    files: list[Path]
    captions: list[str]
    labels: list[str] | None


def find_metadata(root: Path) -> Path | None:
    """The folder's metadata file, or None; both kinds at once is refused."""
    found = [root / name for name in METADATA_FILES if (root / name).is_file()]
    if len(found) > 1:
        raise DataError(f"{root} holds both metadata.jsonl and metadata.csv; keep one")
    return found[0] if found else None


def _rows(path: Path) -> list[dict]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    if path.suffix == ".csv":
        try:
            return list(csv.DictReader(text.splitlines()))
        except csv.Error as e:
            raise DataError(f"{path}: not a readable CSV file ({e})") from None
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{n}: not a JSON object ({e.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{n}: each line must be a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


def read_metadata(path: Path, caption_column: str = "text", label_column: str | None = None) -> Metadata:
    """Read and check a metadata file: every row names an existing file inside the folder and has a
    caption (a non-empty string of at most ``MAX_CAPTION_CHARS``); no file is listed twice.

    Raises:
        DataError: one line naming the file, the row and the problem.
    """
    root = path.parent
    rows = _rows(path)
    if not rows:
        raise DataError(f"{path} lists no images")
    for column in ("file_name", caption_column, label_column):
        if column is not None and column not in rows[0]:
            what = "caption column (data.caption_column)" if column == caption_column else (
                "label column (data.label_column)" if column == label_column else "column")
            raise DataError(f"{path} has no {column!r} {what}; its columns are {sorted(rows[0])}")
    files, captions, labels, seen = [], [], [], set()
    resolved_root = root.resolve()
    for n, row in enumerate(rows, 1):
        where = f"{path} row {n}"
        name, caption = row.get("file_name"), row.get(caption_column)
        if not isinstance(name, str) or not name:
            raise DataError(f"{where}: file_name must be a non-empty string, got {name!r}")
        file = (root / name)
        if not file.resolve().is_relative_to(resolved_root):
            raise DataError(f"{where}: file_name {name!r} points outside {root}")
        if not file.is_file():
            raise DataError(f"{where}: file_name {name!r} names no file in {root}")
        if file.resolve() in seen:
            raise DataError(f"{where}: {name!r} is listed twice")
        seen.add(file.resolve())
        if not isinstance(caption, str) or not caption.strip():
            raise DataError(f"{where}: the caption ({caption_column!r}) of {name!r} is empty or not text: {caption!r}")
        if len(caption) > MAX_CAPTION_CHARS:
            raise DataError(f"{where}: the caption of {name!r} has {len(caption)} characters (limit "
                            f"{MAX_CAPTION_CHARS})")
        files.append(file)
        captions.append(" ".join(caption.split()))
        if label_column is not None:
            value = row.get(label_column)
            if value is None or str(value).strip() == "":
                raise DataError(f"{where}: {name!r} has no {label_column!r} value")
            labels.append(str(value).strip())
    return Metadata(source=path, files=files, captions=captions, labels=labels if label_column else None)
