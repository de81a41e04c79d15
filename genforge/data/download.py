"""Checksummed downloads from a list of mirrors, into a cache folder, atomically.

A file is streamed into a temporary file beside its final name, hashed on the
way, and renamed onto the final name only after its checksum matches, so the
cache never holds a half-written or wrong file (the temporary is removed on
any failure, Ctrl-C included). Plain ``urllib``: no extra dependency.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from genforge import __version__
from genforge.io import atomic_path

from .errors import DataError

__all__ = ["DownloadError", "RemoteFile", "download_file", "download_url", "file_digest", "cached_digest",
           "verify_file", "verify_local_file"]

_CHUNK = 1 << 20  # bytes per read


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset: its name on every mirror and its published checksum(s).

    ``sha256`` is checked when known, else ``md5`` (hex digests of the file as
    served, e.g. of the ``.gz``). ``raw_sha256`` is the sha256 of a ``.gz``
    file's decompressed bytes, when known: it checks an uncompressed copy
    given in ``--data-dir`` (see :func:`verify_local_file`).
    """

    name: str
    sha256: str | None = None
    md5: str | None = None
    raw_sha256: str | None = None

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


# (resolved path, size, mtime_ns, algorithm) → hex digest: each file is hashed at most once per process.
_DIGESTS: dict[tuple[str, int, int, str], str] = {}


def cached_digest(path: Path, algorithm: str = "sha256") -> str:
    """:func:`file_digest`, remembered in memory by path, size and modification time.

    A file that is rewritten (new size or mtime) is hashed again; an unchanged
    one is hashed once per process, however often it is verified.
    """
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns, algorithm)
    digest = _DIGESTS.get(key)
    if digest is None:
        digest = _DIGESTS[key] = file_digest(path, algorithm)
    return digest


def verify_file(path: Path, spec: RemoteFile) -> None:
    """Raise :class:`DataError` unless ``path`` has ``spec``'s checksum."""
    actual = cached_digest(path, spec.algorithm)
    if actual != spec.digest:
        raise DataError(f"{path} is not the expected {spec.name}: {spec.algorithm} {actual}, expected "
                        f"{spec.digest}; delete it so that it is downloaded again, or replace it with the "
                        f"official file")


def _owner(digest: str, raw: bool, known: Iterable[tuple[str, RemoteFile]]) -> tuple[str, RemoteFile] | None:
    """The known ``(dataset, file)`` whose sha256 (of the file as served, or ``raw``: decompressed) is ``digest``."""
    return next(((d, f) for d, f in known if (f.raw_sha256 if raw else f.sha256) == digest), None)


def _unverified(path: Path, spec: RemoteFile, dataset: str) -> None:
    print(f"genforge: warning: {path} is used unverified: only the checksum of {dataset}'s compressed {spec.name} "
          f"is known (put the .gz file there to have it checked)", file=sys.stderr, flush=True)


def verify_local_file(path: Path, spec: RemoteFile, dataset: str,
                      known: Iterable[tuple[str, RemoteFile]] = ()) -> None:
    """Check a file the user gave in ``--data-dir`` against the built-in ``dataset``'s ``spec``.

    A file named as served (``spec.name``, e.g. the ``.gz``) is hashed as is and
    compared with ``spec``'s checksum (so is ``x.idx3-ubyte.gz``). An
    uncompressed copy of a ``.gz`` file (``x-idx3-ubyte``, ``x.idx3-ubyte``) cannot be
    compared with the ``.gz`` checksum: it is compared with ``spec.raw_sha256``,
    the sha256 of the decompressed bytes, when that is known. When it is not
    (Fashion-MNIST), the file is refused only if it is recognised as another
    known file, and is otherwise used unverified after a one-line warning on
    stderr. Each file is hashed at most once per process (:func:`cached_digest`).

    Args:
        path: the file in the data folder.
        spec: what ``dataset`` expects there.
        dataset: the dataset asked for (``data.name``), for the message.
        known: ``(dataset, file)`` of every built-in file, to say which one a
            wrong file is.

    Raises:
        DataError: one line naming the file and the dataset asked for (and the
            file it is, when recognised); it says to point ``--data-dir`` at the
            right files or to pass ``--no-verify``.
    """
    others = [(d, f) for d, f in known if (d, f.name) != (dataset, spec.name)]
    fix = f"point --data-dir at {dataset}'s files, or pass --no-verify to use your own variant"
    raw = spec.name.endswith(".gz") and not path.name.endswith(".gz")
    expected = spec.raw_sha256 if raw else spec.digest
    if raw and expected is None and not any(f.raw_sha256 for _, f in others):
        _unverified(path, spec, dataset)  # nothing known to compare an uncompressed file with
        return
    actual = cached_digest(path, "sha256" if raw else spec.algorithm)
    if actual == expected:
        return
    owner = _owner(actual if raw or spec.algorithm == "sha256" else cached_digest(path, "sha256"), raw, others)
    if owner is not None:
        d, f = owner
        raise DataError(f"{path} is {d}'s {f.name}{' (uncompressed)' if raw else ''}, not {dataset}'s"
                        f"{'' if f.name == spec.name else ' ' + spec.name}; {fix}")
    if expected is None:
        _unverified(path, spec, dataset)
        return
    what = f"{spec.name} uncompressed" if raw else spec.name
    raise DataError(f"{path} is not {dataset}'s {what} ({'sha256' if raw else spec.algorithm} {actual}, "
                    f"expected {expected}); {fix}")


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


class DownloadError(DataError):
    """Every URL of a download failed; ``failures`` holds ``(url, reason)`` for each, in the order tried."""

    def __init__(self, message: str, failures: list[tuple[str, str]]):
        super().__init__(message)
        self.failures = failures


def download_url(urls: Sequence[str], target: str | Path, digest: str, *, algorithm: str = "sha256",
                 prefix: bool = False, timeout: float = 30.0, progress: bool = True, hint: str = "") -> Path:
    """Download ``target`` from the first of ``urls`` that serves it with the expected checksum.

    Each URL is streamed into a temporary file beside ``target``, hashed on the
    way, and renamed onto ``target`` only when its digest matches; the
    temporary is deleted on any failure, and the next URL is tried.

    Args:
        urls: the file's full URLs, tried in order.
        target: the final file; its folder is created if needed.
        digest: expected lower-case hex digest of the file as served.
        algorithm: ``hashlib`` name of ``digest``'s algorithm.
        prefix: accept any digest starting with ``digest`` (for publishers that
            give only its first hex digits).
        timeout: seconds allowed for connecting and for each read.
        progress: print a progress line, and each failure, on stderr.
        hint: appended to the error message when every URL fails (e.g. how to
            provide the file by hand).

    Returns:
        ``target``, which holds a verified copy (mode 0644).

    Raises:
        DataError: the folder cannot be created.
        DownloadError: every URL failed (network error, HTTP error, short read,
            checksum mismatch); the message lists each URL with its reason.
    """
    target = Path(target)
    if not urls:
        raise ValueError(f"no URL given for {target.name}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the cache folder {target.parent} ({e}); set GENFORGE_CACHE to a writable "
                        f"folder") from None
    expected = f"one starting with {digest}" if prefix else digest
    failures: list[tuple[str, str]] = []
    for url in urls:
        try:
            with atomic_path(target) as tmp:  # the temporary is deleted unless the block succeeds
                actual = _stream(url, tmp, algorithm, timeout, progress)
                if not (actual.startswith(digest) if prefix else actual == digest):
                    raise _ChecksumMismatch(f"checksum mismatch for {target.name}: got {algorithm} {actual}, "
                                            f"expected {expected}")
                tmp.chmod(0o644)  # mkstemp's 0600 would make a shared cache unreadable to others
            return target
        except (OSError, http.client.HTTPException, ValueError, _ChecksumMismatch) as e:
            # OSError covers URLError, HTTPError, timeouts and refused connections; ValueError a malformed URL.
            failures.append((url, _reason(e)))
            if progress:
                print(f"failed: {url}: {_reason(e)}", file=sys.stderr, flush=True)
    message = f"could not download {target.name} into {target.parent}:\n" + "\n".join(
        f"  {url}: {reason}" for url, reason in failures)
    raise DownloadError(message + (f"\n{hint}" if hint else ""), failures)


def download_file(spec: RemoteFile, dest_dir: str | Path, mirrors: Sequence[str], *, timeout: float = 30.0,
                  progress: bool = True, hint: str = "") -> Path:
    """Download ``spec.name`` into ``dest_dir``, trying each mirror in order (:func:`download_url`).

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
    if not mirrors:
        raise ValueError(f"no mirror given for {spec.name}")
    urls = [base.rstrip("/") + "/" + spec.name for base in mirrors]
    return download_url(urls, Path(dest_dir) / spec.name, spec.digest, algorithm=spec.algorithm, timeout=timeout,
                        progress=progress, hint=hint)
