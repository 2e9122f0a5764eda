"""Shared open_clip loading for the CLIP-based models.

Two paths go through the same ``open_clip.create_model_and_transforms`` factory:

- the real one, ``arch`` plus a pretrained tag (``ViT-L-14`` / ``openai`` for the qiyan111/AIGC
  reproduction), with weights from the Hugging Face cache; ``offline=True`` makes a missing cache
  fail at once with a message naming the arch, tag and cache directory;
- the tiny random-init ``agiqa-tiny-clip`` architecture (``clip_configs/agiqa-tiny-clip.json``),
  the embedded default and the one the tests use: no weights, no network.

The tokenizer is open_clip's own, which for CLIP architectures is the BPE ``SimpleTokenizer`` whose
vocabulary ships inside the package, so it never downloads anything.

Transforms use the normalisation statistics of the checkpoint (open_clip's ``preprocess_cfg``, the
OpenAI CLIP mean/std for the ``openai`` tags and for the tiny model). Training augments with
RandomResizedCrop(scale 0.8-1) and a horizontal flip as qiyan111/AIGC does; evaluation resizes the
short side and centre-crops (the published code squashes to 224x224 instead, distorting the aspect).
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from PIL import Image
from torch import nn

from agiqa.data.manifest import Dimension
from agiqa.errors import AgiqaError, ConfigError
from agiqa.models.base import AgiqaModel
from agiqa.weights_record import hub_offline

TINY_ARCH = "agiqa-tiny-clip"
CONFIG_DIR = Path(__file__).with_name("clip_configs")


def open_clip_module() -> ModuleType:
    """open_clip with agiqa's model configs registered, imported on first use.

    Imported here rather than at the top: it takes 2-3 s (it loads torchvision and
    transformers), and the workflow imports this module to check model entries at parse time.
    """
    import open_clip

    # Registering twice would only rescan, but keep the search path list clean.
    if TINY_ARCH not in open_clip.list_models():
        open_clip.add_model_config(CONFIG_DIR)
    return open_clip


class BackboneUnavailableError(AgiqaError):
    """The requested CLIP weights cannot be loaded (not cached while offline, download failed)."""


@dataclass(frozen=True)
class BackboneConfig:
    """The ``backbone`` entry of a CLIP model's config."""

    arch: str = TINY_ARCH
    pretrained: str | None = None
    cache_dir: str | None = None
    offline: bool = False
    image_size: int | None = None

    @classmethod
    def from_dict(cls, entry: dict[str, Any] | None) -> BackboneConfig:
        entry = dict(entry or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(entry) - known)
        if unknown:
            raise ConfigError(f"backbone: unknown keys {unknown} (known: {sorted(known)})")
        config = cls(**entry)
        for name in ("arch", "pretrained", "cache_dir"):
            value = getattr(config, name)
            if not isinstance(value, str | None) or (name == "arch" and not value):
                raise ConfigError(f"backbone.{name} must be a name or path; got {value!r}")
        if not isinstance(config.offline, bool):
            raise ConfigError(f"backbone.offline must be true or false; got {config.offline!r}")
        size = config.image_size
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 16):
            raise ConfigError(f"backbone.image_size must be an integer >= 16; got {size!r}")
        return config

    @property
    def description(self) -> str:
        if self.pretrained:
            return f"open_clip {self.arch}/{self.pretrained}"
        return f"open_clip {self.arch} (random init)"


class _ToRGB:
    """Any PIL mode -> RGB; a class rather than a lambda so DataLoader workers can pickle it."""

    def __call__(self, image: Image.Image) -> Image.Image:
        return image.convert("RGB") if isinstance(image, Image.Image) else image


def train_transform(preprocess_cfg: dict[str, Any]) -> Callable[[Image.Image], torch.Tensor]:
    """RandomResizedCrop(scale 0.8-1) + horizontal flip with the checkpoint's mean/std."""
    from torchvision import transforms as T

    interpolation = (
        T.InterpolationMode.BILINEAR
        if preprocess_cfg.get("interpolation") == "bilinear"
        else T.InterpolationMode.BICUBIC
    )
    return T.Compose(
        [
            _ToRGB(),
            T.RandomResizedCrop(
                preprocess_cfg["size"], scale=(0.8, 1.0), interpolation=interpolation
            ),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(mean=preprocess_cfg["mean"], std=preprocess_cfg["std"]),
        ]
    )


@dataclass(frozen=True)
class ClipPreprocess:
    """Everything a CLIP model needs to turn raw inputs into tensors."""

    train_transform: Callable[[Image.Image], torch.Tensor]
    eval_transform: Callable[[Image.Image], torch.Tensor]
    tokenizer: Callable[..., torch.Tensor]
    context_length: int

    def image(self, train: bool) -> Callable[[Image.Image], torch.Tensor]:
        return self.train_transform if train else self.eval_transform

    def tokenize(self, prompts: Sequence[str]) -> torch.Tensor:
        """[n, context_length] token ids; longer prompts are truncated (end token kept)."""
        return self.tokenizer(list(prompts), context_length=self.context_length)


@dataclass(frozen=True)
class ClipBundle:
    """A loaded open_clip model with its preprocessing."""

    model: nn.Module
    preprocess: ClipPreprocess
    embed_dim: int
    description: str


def load_clip(
    arch: str = TINY_ARCH,
    pretrained: str | None = None,
    cache_dir: str | None = None,
    offline: bool = False,
    image_size: int | None = None,
) -> ClipBundle:
    """Create an open_clip model, its transforms and tokenizer (fp32, on the CPU)."""
    open_clip = open_clip_module()
    config = BackboneConfig(arch, pretrained, cache_dir, offline, image_size)
    tag_cfg = _pretrained_cfg(config)
    with hub_offline(offline):
        if offline and tag_cfg:
            _require_cached_url(config, tag_cfg)
        if tag_cfg:  # cached files against the fetch record, before anything reads them
            from agiqa.weights import verify_open_clip
            from agiqa.weights_record import WeightsNotRecordedError

            try:
                verify_open_clip(arch, str(pretrained), tag_cfg, cache_dir)
            except WeightsNotRecordedError as error:
                raise BackboneUnavailableError(_load_failure(config, error)) from None
        try:
            with _quiet_random_init(pretrained):
                model, _, eval_transform = open_clip.create_model_and_transforms(
                    arch,
                    pretrained=pretrained,
                    cache_dir=cache_dir,
                    force_image_size=image_size,
                    # open_clip only warns when OpenAI weights meet a GELU config: QuickGELU
                    force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)),
                    weights_only=True,
                )
        except (RuntimeError, FileNotFoundError, OSError) as error:
            raise BackboneUnavailableError(_load_failure(config, error)) from error
        tokenizer = open_clip.get_tokenizer(arch, cache_dir=cache_dir)
    preprocess = ClipPreprocess(
        train_transform=train_transform(model.visual.preprocess_cfg),
        eval_transform=eval_transform,
        tokenizer=tokenizer,
        context_length=int(model.context_length),
    )
    return ClipBundle(model, preprocess, _embed_dim(model), config.description)


def _pretrained_cfg(config: BackboneConfig) -> dict[str, Any]:
    """The open_clip tag entry; ConfigError on an unknown arch, tag or checkpoint file."""
    open_clip = open_clip_module()
    has_schema = config.arch.startswith(("hf-hub:", "local-dir:"))
    if not has_schema and config.arch not in open_clip.list_models():
        raise ConfigError(f"unknown open_clip architecture '{config.arch}'")
    if not config.pretrained or has_schema:
        return {}
    tag_cfg = open_clip.get_pretrained_cfg(config.arch, config.pretrained)
    if not tag_cfg and not os.path.isfile(config.pretrained):
        tags = open_clip.list_pretrained_tags_by_model(config.arch)
        raise ConfigError(
            f"'{config.pretrained}' is neither a pretrained tag of {config.arch} "
            f"(known: {', '.join(tags) or 'none'}) nor a checkpoint file"
        )
    return dict(tag_cfg)


#: open_clip's root-logger warning for an architecture built without weights.
_RANDOM_INIT_WARNING = "No pretrained weights loaded for model"


def _not_random_init_warning(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(_RANDOM_INIT_WARNING)


@contextmanager
def _quiet_random_init(pretrained: str | None) -> Iterator[None]:
    """Drop open_clip's "initialized randomly" warning when no weights were asked for.

    Random initialisation is then intended (a tiny model trained from scratch, or an
    architecture whose weights a checkpoint loads right after); any other warning still shows.
    """
    if pretrained:
        yield
        return
    root = logging.getLogger()
    root.addFilter(_not_random_init_warning)
    try:
        yield
    finally:
        root.removeFilter(_not_random_init_warning)


def _require_cached_url(config: BackboneConfig, tag_cfg: dict[str, Any]) -> None:
    """Tags served only by URL bypass the hub's offline switch; check their cache file ourselves."""
    url = tag_cfg.get("url")
    if tag_cfg.get("hf_hub") or tag_cfg.get("file") or not url:
        return
    cache_dir = config.cache_dir or os.path.expanduser("~/.cache/clip")
    if not os.path.isfile(os.path.join(cache_dir, os.path.basename(url))):
        raise BackboneUnavailableError(
            _load_failure(config, FileNotFoundError(f"{os.path.basename(url)} not cached"))
        )


def _load_failure(config: BackboneConfig, error: BaseException) -> str:
    where = config.cache_dir or "the default Hugging Face cache (HF_HUB_CACHE)"
    message = (
        f"cannot load CLIP weights for arch '{config.arch}', pretrained '{config.pretrained}' "
        f"from cache dir {where}"
    )
    if config.offline:
        message += (
            " with offline=True (HF_HUB_OFFLINE=1): the weights are not in that cache; fetch them "
            "once on a machine with network access using the same cache_dir, or set offline: false"
        )
    return f"{message}. Cause: {error}"


def _embed_dim(model: nn.Module) -> int:
    output_dim = getattr(model.visual, "output_dim", None)
    if isinstance(output_dim, int):
        return output_dim
    # Towers without the attribute (timm, HF): measure one embedding instead.
    size = model.visual.preprocess_cfg["size"]
    with torch.no_grad():
        return int(model.encode_image(torch.zeros(1, 3, *size)).shape[-1])


@dataclass(frozen=True)
class Tower:
    """One transformer tower: its embedding stem and its ordered residual blocks."""

    name: str
    stem: tuple[nn.Parameter, ...]
    blocks: nn.ModuleList


def clip_towers(model: nn.Module) -> tuple[Tower, Tower]:
    """The vision and text towers of an open_clip CLIP/CustomTextCLIP with native transformers."""
    visual = model.visual
    text = getattr(model, "text", model)  # CustomTextCLIP nests the text tower, CLIP flattens it
    vision_blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
    text_blocks = getattr(getattr(text, "transformer", None), "resblocks", None)
    if not isinstance(vision_blocks, nn.ModuleList) or not isinstance(text_blocks, nn.ModuleList):
        raise ConfigError(
            "partial freezing needs open_clip's native ViT image and text transformers; "
            f"this backbone has {type(visual).__name__} / {type(text).__name__}"
        )
    vision_stem = _parameters_of(
        visual, ("conv1", "class_embedding", "positional_embedding", "ln_pre")
    )
    text_stem = _parameters_of(text, ("token_embedding", "positional_embedding", "cls_emb"))
    return Tower("vision", vision_stem, vision_blocks), Tower("text", text_stem, text_blocks)


def _parameters_of(owner: nn.Module, names: Sequence[str]) -> tuple[nn.Parameter, ...]:
    found: list[nn.Parameter] = []
    for name in names:
        part = getattr(owner, name, None)
        if isinstance(part, nn.Parameter):
            found.append(part)
        elif isinstance(part, nn.Module):
            found.extend(part.parameters())
    return tuple(found)


def freeze_first_blocks(model: nn.Module, layers: int) -> None:
    """Freeze the embeddings and blocks ``[0, layers)`` of both towers.

    ``layers`` may exceed the shallower tower (ViT-L-14: 24 image, 12 text blocks, and the published
    recommendation is 18); that tower then has all its blocks frozen, as slicing would give.
    """
    towers = clip_towers(model)
    deepest = max(len(tower.blocks) for tower in towers)
    if isinstance(layers, bool) or not isinstance(layers, int) or not 0 <= layers <= deepest:
        depths = ", ".join(f"{tower.name} {len(tower.blocks)}" for tower in towers)
        raise ConfigError(
            f"freeze.layers must be an integer in [0, {deepest}] for this backbone "
            f"(blocks per tower: {depths}); got {layers!r}"
        )
    for tower in towers:
        for parameter in tower.stem:
            parameter.requires_grad_(False)
        for block in tower.blocks[:layers]:
            block.requires_grad_(False)


class ClipModel(AgiqaModel):
    """Base of the models built on one open_clip backbone: loading, transforms, tokens."""

    backbone_name = "open_clip CLIP"

    def __init__(self, dimensions: Sequence[Dimension], backbone: dict[str, Any] | None) -> None:
        super().__init__(dimensions)
        config = BackboneConfig.from_dict(dict(backbone or {}))
        bundle = load_clip(**asdict(config))
        self.clip = bundle.model
        self.embed_dim = bundle.embed_dim
        self._preprocess = bundle.preprocess
        self.backbone_name = config.description
        # The text tower only runs when some dimension needs the prompt.
        self.uses_text = any(self.reads_prompt(dim.kind) for dim in self.dimensions)

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any]) -> None:
        super().check_settings(settings)
        BackboneConfig.from_dict(settings.get("backbone"))

    @classmethod
    def reads_prompt(cls, kind: str) -> bool:
        """Whether a dimension of this kind is predicted from the prompt too.

        ``alignment`` needs it; ``overall`` (quality with alignment mixed in) does by default.
        """
        return kind in ("alignment", "overall")

    @classmethod
    def without_weights(cls, entry: dict[str, Any]) -> dict[str, Any]:
        """The entry with the backbone's weights replaced by a random initialisation.

        The architecture (and so every parameter count) stays; nothing is read or downloaded.
        """
        entry = copy.deepcopy(entry)
        backbone = dict(entry.get("backbone") or {})
        backbone["pretrained"] = None
        backbone.pop("offline", None)
        entry["backbone"] = backbone
        return entry

    def image_transform(self, train: bool) -> Callable[[Image.Image], torch.Tensor]:
        return self._preprocess.image(train)

    def tokenize(
        self, prompts: Sequence[str], descriptions: Sequence[str] | None = None
    ) -> torch.Tensor:
        return self._preprocess.tokenize(prompts)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.head_forward(self.encode(images, tokens))

    def encode(self, images: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        features = {"image": self.clip.encode_image(images, normalize=True)}
        if self.uses_text:
            features["text"] = self.clip.encode_text(tokens, normalize=True)
        return features

    def feature_key(self) -> str | None:
        if any(p.requires_grad for p in self.clip.parameters()):
            return None
        digest = hashlib.sha256()
        digest.update(repr(self._preprocess.image(train=False)).encode())
        digest.update(f"text={self.uses_text}".encode())
        # Hash the weights themselves: a random-init backbone differs from seed to seed.
        for name, tensor in sorted(self.clip.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return f"{self.backbone_name.replace('/', '_').replace(' ', '_')}-{digest.hexdigest()[:16]}"
