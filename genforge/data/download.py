"""Checksummed downloads from a list of mirrors, into a cache folder, atomically.

A file is streamed into a temporary file beside its final name, hashed on the
way, and renamed onto the final name only after its checksum matches, so the
cache never holds a half-written or wrong file (the temporary is removed on
any failure, Ctrl-C included). Plain ``urllib``: no extra dependency.
"""

from __future__ import annotations

import hashlib
import http.client
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from genforge import __version__
from genforge.io import atomic_path

from .errors import DataError

__all__ = ["RemoteFile", "download_file", "file_digest", "verify_file"]

_CHUNK = 1 << 20  # bytes per read


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset: its name on every mirror and its published checksum(s).

    ``sha256`` is checked when known, else ``md5`` (hex digests of the file as
    served, e.g. of the ``.gz``).
    """

    name: str
    sha256: str | None = None
    md5: str | None = None

    def __post_init__(self) -> None:
        if not (self.sha256 or self.md5):
            raise ValueError(f"RemoteFile {self.name!r} needs a sha256 or md5 checksum")

    @property
    def algorithm(self) -> str:
        return "sha256" if self.sha256 else "md5"

    @property
    def digest(self) -> str:
        return (self.sha256 or self.md5 or "").lower()


class _ChecksumMismatch(Exception):
    pass


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of the file at ``path``, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_file(path: Path, spec: RemoteFile) -> None:
    """Raise :class:`DataError` unless ``path`` has ``spec``'s checksum."""
    actual = file_digest(path, spec.algorithm)
    if actual != spec.digest:
        raise DataError(f"{path} is not the expected {spec.name}: {spec.algorithm} {actual}, expected "
                        f"{spec.digest}; delete it so that it is downloaded again, or replace it with the "
                        f"official file")


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _stream(url: str, out: Path, algorithm: str, timeout: float, progress: bool) -> str:
    """GET ``url`` into ``out``; returns the hex digest of what was written."""
    request = urllib.request.Request(url, headers={"User-Agent": f"genforge/{__version__}"})
    h = hashlib.new(algorithm)
    tty = progress and sys.stderr.isatty()
    with urllib.request.urlopen(request, timeout=timeout) as response, open(out, "wb") as f:
        total = int(response.headers.get("Content-Length") or 0)
        if progress:
            size = f" ({_mb(total)})" if total else ""
            print(f"downloading {url}{size}", file=sys.stderr, end="" if tty else "\n", flush=True)
        done, last = 0, 0.0
        try:
            while chunk := response.read(_CHUNK):
                f.write(chunk)
                h.update(chunk)
                done += len(chunk)
                if tty and time.monotonic() - last > 0.2:
                    last = time.monotonic()
                    share = f"{100 * done / total:3.0f}% " if total else ""
                    print(f"\rdownloading {url}: {share}{_mb(done)}", file=sys.stderr, end="", flush=True)
        finally:
            if tty:  # end the progress line, whatever happened
                print(f"\rdownloading {url}: {_mb(done)}", file=sys.stderr, flush=True)
        if total and done != total:
            raise http.client.IncompleteRead(b"", total - done)
    return h.hexdigest()


def _reason(e: BaseException) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        return str(e.reason)
    if isinstance(e, http.client.IncompleteRead):
        return f"connection closed early ({e.expected} bytes missing)"
    return str(e) or type(e).__name__


def download_file(spec: RemoteFile, dest_dir: str | Path, mirrors: Sequence[str], *, timeout: float = 30.0,
                  progress: bool = True, hint: str = "") -> Path:
    """Download ``spec.name`` into ``dest_dir``, trying each mirror in order.

    Args:
        spec: file name and checksum.
        dest_dir: folder of the final file (created if needed).
        mirrors: base URLs; the file's URL is ``base.rstrip("/") + "/" + spec.name``.
        timeout: seconds allowed for connecting and for each read.
        progress: print a progress line on stderr.
        hint: appended to the error message when every mirror fails (e.g. how
            to provide the file by hand).

    Returns:
        ``dest_dir / spec.name``, which holds a verified copy.

    Raises:
        DataError: every mirror failed (network error, HTTP error, checksum
            mismatch); the message lists each URL with its error.
    """
    dest_dir = Path(dest_dir)
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the cache folder {dest_dir} ({e}); set GENFORGE_CACHE to a writable "
                        f"folder") from None
    if not mirrors:
        raise ValueError(f"no mirror given for {spec.name}")
    target = dest_dir / spec.name
    failures = []
    for base in mirrors:
        url = base.rstrip("/") + "/" + spec.name
        try:
            with atomic_path(target) as tmp:  # the temporary is deleted unless the block succeeds
                actual = _stream(url, tmp, spec.algorithm, timeout, progress)
                if actual != spec.digest:
                    raise _ChecksumMismatch(f"checksum mismatch for {spec.name}: expected {spec.algorithm} "
                                            f"{spec.digest}, got {actual}")
                tmp.chmod(0o644)  # mkstemp's 0600 would make a shared cache unreadable to others
            return target
        except (OSError, http.client.HTTPException, ValueError, _ChecksumMismatch) as e:
            # OSError covers URLError, HTTPError, timeouts and refused connections; ValueError a malformed URL.
            failures.append(f"  {url}: {_reason(e)}")
            if progress:
                print(f"failed: {url}: {_reason(e)}", file=sys.stderr, flush=True)
    message = f"could not download {spec.name} into {dest_dir}:\n" + "\n".join(failures)
    raise DataError(message + (f"\n{hint}" if hint else ""))
