"""CLIP residual learning for quality and prompt consistency.

Origin: ``baseline.py`` of qiyan111/AIGC (methods.md section 3). On the L2-normalised CLIP image
and prompt embeddings it predicts

- quality: ``q = sigmoid(Linear(img)) + s_q * tanh(MLP(img))``;
- consistency: ``c = a * (cos + 1) / 2 + b + s_c * tanh(MLP([img, txt, cos]))`` with learnable
  scalars ``a`` (init 1) and ``b`` (init 0).

Deliberate differences from the published code (docs/methods.md lists them with their switches):

- no clamp to [0, 1] in ``forward`` by default: a clamp zeroes the gradient of every saturated
  output, so training could stall on exactly the images that are most wrong. The fold trainer
  clips every model's predictions to the scale before any metric, so RMSE and raw PLCC are on the
  dimension's scale either way. ``clamp: true`` restores the published clamps (methods.md 9.3):
  ``q = clamp(., 0, 1)``, ``c_base = clamp(a (cos + 1) / 2 + b, 0, 1)`` and
  ``c = clamp(c_base + residual, 0, 1)``;
- partial freezing works (the published ``--partial_freeze`` walks ``encoder.layer`` and crashes
  with an AttributeError), and its depth is validated against both towers;
- one head per rated dimension of the dataset, chosen by the dimension's kind (``quality`` heads see
  the image only, ``alignment`` heads the image and prompt), instead of two hard-wired outputs, so
  one class serves AGIQA-3K, AIGCIQA2023 (three dimensions) and quality-only datasets; the text
  tower is skipped when no dimension needs the prompt. An ``overall`` dimension (AIGIQA-20K:
  quality with alignment mixed in) gets the consistency head: its MLP reads the image embedding
  as well as the prompt and their cosine, so it can weigh both, while the quality head never
  sees the prompt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from agiqa.data.manifest import Dimension
from agiqa.errors import ConfigError
from agiqa.models.base import MODELS
from agiqa.models.clip_backbone import ClipModel, freeze_first_blocks

FREEZE_MODES = ("none", "partial", "full")


class QualityHead(nn.Module):
    """``sigmoid(Linear(img)) + scale * tanh(MLP(img))``: a linear base plus a bounded residual."""

    def __init__(
        self, embed_dim: int, hidden: int, dropout: float, scale: float, clamp: bool = False
    ) -> None:
        super().__init__()
        self.base = nn.Linear(embed_dim, 1)
        self.residual = nn.Sequential(
            nn.Linear(embed_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, 1)
        )
        self.scale = scale
        self.clamp = clamp

    def forward(
        self, image: torch.Tensor, text: torch.Tensor | None, cosine: torch.Tensor | None
    ) -> torch.Tensor:
        out = torch.sigmoid(self.base(image)) + self.scale * torch.tanh(self.residual(image))
        return _unit(out) if self.clamp else out


class AlignmentHead(nn.Module):
    """``a * (cos + 1) / 2 + b + scale * tanh(MLP([img, txt, cos]))``."""

    def __init__(
        self,
        embed_dim: int,
        hidden: tuple[int, int],
        dropout: float,
        scale: float,
        clamp: bool = False,
    ) -> None:
        super().__init__()
        self.clamp = clamp
        features = 2 * embed_dim + 1
        self.a = nn.Parameter(torch.tensor(1.0))
        self.b = nn.Parameter(torch.tensor(0.0))
        self.residual = nn.Sequential(
            nn.LayerNorm(features),
            nn.Linear(features, hidden[0]),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden[0], hidden[1]),
            nn.GELU(),
            nn.Linear(hidden[1], 1),
        )
        self.scale = scale

    def forward(
        self, image: torch.Tensor, text: torch.Tensor | None, cosine: torch.Tensor | None
    ) -> torch.Tensor:
        if text is None or cosine is None:
            raise ValueError("an alignment head needs the prompt embedding")
        base = self.a * (cosine + 1) / 2 + self.b
        residual = self.residual(torch.cat([image, text, cosine], dim=-1))
        if self.clamp:  # the published clamps, on the base and on the sum
            return _unit(_unit(base) + self.scale * torch.tanh(residual))
        return base + self.scale * torch.tanh(residual)


def _unit(values: torch.Tensor) -> torch.Tensor:
    return values.clamp(0.0, 1.0)


@MODELS.register("clip_residual")
class ClipResidual(ClipModel):
    """CLIP embeddings with one residual head per rated dimension (qiyan111/AIGC, repaired).

    Args:
        dimensions: The dataset's rated dimensions; the output columns follow their order.
        backbone: ``{arch, pretrained, cache_dir, offline, image_size}`` for ``load_clip``. The
            default is the tiny random-init ``agiqa-tiny-clip``; the paper uses ``ViT-L-14`` with
            ``pretrained: openai``.
        freeze: ``{mode, layers}``. ``none`` fine-tunes all of CLIP (published default),
            ``full`` trains only the heads (linear probe), ``partial`` freezes the embeddings and
            the first ``layers`` blocks of both towers (published recommendation: 18 on ViT-L-14).
        residual_scale_q: Bound ``s_q`` of the quality residual.
        residual_scale_c: Bound ``s_c`` of the consistency residual.
        dropout: Dropout inside the residual MLPs.
        quality_hidden: Hidden width of the quality MLP.
        alignment_hidden: The two hidden widths of the consistency MLP.
        loss_weights: ``{dimension name: weight}`` for every dimension; ``None`` weighs them
            equally with weights summing to 1 (0.5/0.5 on AGIQA-3K, as published).
        clamp: Clamp the heads' outputs to [0, 1] as the published code does (default off: the
            clamp zeroes the gradient of saturated outputs; the trainer clips predictions).

    Dimension kinds: ``quality`` -> quality head (image only); ``alignment`` and ``overall`` ->
    consistency head (image, prompt and their cosine).
    """

    trainable = True
    uses_gpu = True

    def __init__(
        self,
        dimensions: Sequence[Dimension],
        backbone: Mapping[str, Any] | None = None,
        freeze: Mapping[str, Any] | None = None,
        residual_scale_q: float = 0.2,
        residual_scale_c: float = 0.2,
        dropout: float = 0.1,
        quality_hidden: int = 128,
        alignment_hidden: Sequence[int] = (256, 64),
        loss_weights: Mapping[str, float] | None = None,
        clamp: bool = False,
    ) -> None:
        super().__init__(dimensions, dict(backbone or {}))
        hidden_c = _pair(alignment_hidden)
        if not isinstance(clamp, bool):
            raise ConfigError(f"clamp must be true or false; got {clamp!r}")
        self.heads = nn.ModuleList(
            QualityHead(self.embed_dim, quality_hidden, dropout, residual_scale_q, clamp)
            if dim.kind == "quality"
            else AlignmentHead(self.embed_dim, hidden_c, dropout, residual_scale_c, clamp)
            for dim in self.dimensions
        )
        self.register_buffer("loss_weights", self._weights(loss_weights), persistent=False)
        self._freeze(dict(freeze or {}))

    def head_forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        image, text = features["image"], features.get("text")
        cosine = None if text is None else (image * text).sum(dim=-1, keepdim=True)
        # No clamp by default: it zeroes the gradients of saturated outputs (``clamp`` restores it).
        return torch.cat([head(image, text, cosine) for head in self.heads], dim=-1)

    def loss(self, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        per_dimension = ((predictions - targets) ** 2).mean(dim=0)
        return (per_dimension * self.loss_weights).sum()

    def _weights(self, loss_weights: Mapping[str, float] | None) -> torch.Tensor:
        names = [dim.name for dim in self.dimensions]
        if loss_weights is None:
            return torch.full((len(names),), 1.0 / len(names))
        if set(loss_weights) != set(names):
            raise ConfigError(
                f"loss_weights must give a weight for exactly the dimensions {names}; "
                f"got {sorted(loss_weights)}"
            )
        weights = torch.tensor([float(loss_weights[name]) for name in names])
        if (weights < 0).any() or weights.sum() <= 0:
            raise ConfigError(f"loss_weights must be non-negative, sum > 0: {dict(loss_weights)}")
        return weights

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any]) -> None:
        super().check_settings(settings)
        parse_freeze(settings.get("freeze"))
        _pair(settings.get("alignment_hidden", ()))
        if not isinstance(settings.get("clamp", False), bool):
            raise ConfigError(f"clamp must be true or false; got {settings['clamp']!r}")
        weights = settings.get("loss_weights")
        if weights is not None and not isinstance(weights, Mapping):
            raise ConfigError(f"loss_weights must map dimension names to weights; got {weights!r}")

    def _freeze(self, freeze: dict[str, Any]) -> None:
        mode, layers = parse_freeze(freeze)
        if mode == "full":
            self.clip.requires_grad_(False)
        elif mode == "partial":
            freeze_first_blocks(self.clip, layers)
        # Parameters forward never touches would get no gradient: keep them out of the optimiser.
        for name, parameter in self.clip.named_parameters():
            unused_text = not self.uses_text and not name.startswith("visual.")
            if unused_text or name.startswith("logit_"):
                parameter.requires_grad_(False)


def parse_freeze(freeze: Mapping[str, Any] | None) -> tuple[str, Any]:
    """``freeze: {mode, layers}`` as (mode, layers); the depth is checked against the backbone
    when it is built (``freeze_first_blocks``)."""
    freeze = dict(freeze or {})
    mode = freeze.pop("mode", "none")
    layers = freeze.pop("layers", None)
    if freeze:
        raise ConfigError(f"freeze: unknown keys {sorted(freeze)} (known: mode, layers)")
    if mode not in FREEZE_MODES:
        raise ConfigError(f"freeze.mode must be one of {FREEZE_MODES}; got {mode!r}")
    if mode == "partial" and layers is None:
        raise ConfigError("freeze.mode 'partial' needs freeze.layers")
    return mode, layers


def _pair(hidden: Sequence[int]) -> tuple[int, int]:
    if isinstance(hidden, str) or not isinstance(hidden, Sequence) or len(hidden) != 2:
        raise ConfigError(f"alignment_hidden needs two widths; got {hidden!r}")
    return int(hidden[0]), int(hidden[1])
