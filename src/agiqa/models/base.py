"""The interface every model implements, so the trainer and the pipeline treat them alike."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

import torch
from PIL import Image
from torch import nn

from agiqa.data.manifest import Dimension
from agiqa.registry import Registry


class AgiqaModel(nn.Module):
    """Predicts every rated dimension of a dataset, each normalised to [0, 1].

    Subclasses set the class attributes and implement the four methods below. A model's
    constructor takes the dataset's ``dimensions`` plus the keyword arguments of its config
    entry (everything but ``type`` and ``train``).
    """

    #: False for zero-shot baselines: the trainer only evaluates them.
    trainable: ClassVar[bool] = True
    #: True when the model benefits from a GPU; the workflow then declares ``resources: gpu=1``.
    uses_gpu: ClassVar[bool] = True
    #: True when the model reads per-image VLM descriptions besides the prompt.
    uses_descriptions: ClassVar[bool] = False
    #: Short description of the backbone for ``agiqa models list``.
    backbone_name: str = ""

    def __init__(self, dimensions: Sequence[Dimension]) -> None:
        super().__init__()
        if not dimensions:
            raise ValueError("a model needs at least one rated dimension")
        self.dimensions = tuple(dimensions)

    def image_transform(self, train: bool) -> Callable[[Image.Image], torch.Tensor]:
        """PIL image -> CHW float tensor; ``train`` selects the augmenting variant."""
        raise NotImplementedError

    def tokenize(
        self, prompts: Sequence[str], descriptions: Sequence[str] | None = None
    ) -> torch.Tensor:
        """Prompts (and, for ``uses_descriptions`` models, descriptions) -> one token tensor.

        The trainer passes ``descriptions`` (one per prompt, "" where an image has none) only to
        models with ``uses_descriptions``; the model packs both into the tensor ``forward`` gets.
        """
        raise NotImplementedError

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Return predictions of shape [batch, len(dimensions)] on the normalised scale."""
        raise NotImplementedError

    def loss(self, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Training loss for normalised ``targets`` of shape [batch, len(dimensions)]."""
        return nn.functional.mse_loss(predictions, targets)

    # Optional: models whose encoders are frozen can have their features computed once and
    # cached across folds and configs. They return a key from ``feature_key`` and split
    # ``forward`` into ``encode`` (frozen, cacheable) and ``head_forward`` (what trains).

    def feature_key(self) -> str | None:
        """Identity of the frozen encoders and their eval transform; None when not cacheable."""
        return None

    def encode(self, images: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Frozen features: ``image`` [batch, d] and, when the model reads prompts, ``text``."""
        raise NotImplementedError

    def head_forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Predictions from ``encode``'s features, same shape as ``forward``'s."""
        raise NotImplementedError


MODELS: Registry[type[AgiqaModel]] = Registry("model")


def build_model(config: dict, dimensions: Sequence[Dimension]) -> AgiqaModel:
    """Build a model from its config entry ``{type: NAME, train: {...}, **kwargs}``."""
    # `descriptions` names the describer whose table the trainer reads (a pipeline setting).
    kwargs = {k: v for k, v in config.items() if k not in ("type", "train", "descriptions")}
    model_class = MODELS.get(config["type"])
    return model_class(dimensions, **kwargs)


def trainable_parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
