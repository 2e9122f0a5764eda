"""Zero-shot CLIP baseline: no training, scores straight from the CLIP embedding space.

- alignment dimensions: ``(cos(img, prompt) + 1) / 2``, the CLIPScore-style similarity that is also
  the base of the qiyan111/AIGC consistency head (methods.md section 3);
- quality dimensions: CLIP-IQA style antonym prompts (methods.md section 2.3): the softmax over
  ``logit_scale * cos(img, [positive, negative])`` gives the probability of the positive prompt,
  averaged over the configured pairs (default "Good photo." / "Bad photo.");
- overall dimensions (AIGIQA-20K: perceptual quality with alignment mixed in):
  ``w * quality + (1 - w) * alignment`` of the two scores above, ``w = overall_quality_weight``
  (default 0.5: the track gives no weighting, so neither signal is preferred).

Differences from the published uses: CLIP-AGIQA/DCMPLN learn prompt contexts around the antonym
classes; here the prompts are fixed text, so nothing trains. Heads follow the dataset's dimension
kinds rather than a fixed quality/alignment pair.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from PIL import Image

from agiqa.data.manifest import Dimension
from agiqa.errors import ConfigError
from agiqa.models.base import MODELS
from agiqa.models.clip_backbone import ClipModel

DEFAULT_QUALITY_PROMPTS = (("Good photo.", "Bad photo."),)


@MODELS.register("clip_zeroshot")
class ClipZeroShot(ClipModel):
    """Frozen CLIP: cosine similarity for alignment, antonym-prompt probability for quality.

    Args:
        dimensions: The dataset's rated dimensions; the output columns follow their order.
        backbone: ``{arch, pretrained, cache_dir, offline, image_size}`` as for ``clip_residual``.
        quality_prompts: ``[[positive, negative], ...]`` antonym pairs; the quality score is the
            mean over pairs of the probability of the positive prompt.
        overall_quality_weight: Weight ``w`` of the quality score in an ``overall`` dimension,
            in [0, 1]; the alignment score gets ``1 - w``.
    """

    trainable = False
    uses_gpu = True

    def __init__(
        self,
        dimensions: Sequence[Dimension],
        backbone: Mapping[str, Any] | None = None,
        quality_prompts: Sequence[Sequence[str]] = DEFAULT_QUALITY_PROMPTS,
        overall_quality_weight: float = 0.5,
    ) -> None:
        super().__init__(dimensions, dict(backbone or {}))
        self.check_settings(locals())
        self.overall_quality_weight = float(overall_quality_weight)
        self.clip.requires_grad_(False)
        self.train(False)
        pairs = _antonym_pairs(quality_prompts)
        self.register_buffer("antonyms", self._encode_pairs(pairs), persistent=False)

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any]) -> None:
        super().check_settings(settings)
        weight = settings.get("overall_quality_weight")
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 <= weight <= 1:
            raise ConfigError(f"overall_quality_weight must be in [0, 1]; got {weight!r}")
        _antonym_pairs(settings.get("quality_prompts", DEFAULT_QUALITY_PROMPTS))

    def train(self, mode: bool = True) -> ClipZeroShot:
        # Nothing trains, so the backbone always runs as at inference (no dropout, fixed stats).
        return super().train(False)

    def image_transform(self, train: bool) -> Callable[[Image.Image], torch.Tensor]:
        return self._preprocess.image(train=False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.head_forward(self.encode(images, tokens))

    @torch.no_grad()
    def head_forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        image = features["image"]
        scores: dict[str, torch.Tensor] = {}
        if self.uses_text:
            scores["alignment"] = ((image * features["text"]).sum(dim=-1) + 1) / 2
        if any(dim.kind in ("quality", "overall") for dim in self.dimensions):
            scores["quality"] = self._antonym_probability(image)
        if "alignment" in scores and "quality" in scores:
            weight = self.overall_quality_weight
            scores["overall"] = weight * scores["quality"] + (1 - weight) * scores["alignment"]
        columns = [scores[dim.kind] for dim in self.dimensions]
        return torch.stack(columns, dim=-1).clamp(0.0, 1.0)  # rounding can step past 1

    def _antonym_probability(self, image: torch.Tensor) -> torch.Tensor:
        cosine = torch.einsum("bd,pkd->bpk", image, self.antonyms)
        probability = (self.clip.logit_scale.exp() * cosine).softmax(dim=-1)[..., 0]
        return probability.mean(dim=-1)

    @torch.no_grad()
    def _encode_pairs(self, pairs: list[tuple[str, str]]) -> torch.Tensor:
        """[pairs, 2, embed_dim] normalised prompt embeddings, computed once."""
        prompts = [prompt for pair in pairs for prompt in pair]
        embeddings = self.clip.encode_text(self.tokenize(prompts), normalize=True)
        return embeddings.reshape(len(pairs), 2, -1)


def _antonym_pairs(quality_prompts: Sequence[Sequence[str]]) -> list[tuple[str, str]]:
    pairs = [tuple(pair) for pair in quality_prompts if not isinstance(pair, str)]
    well_formed = all(len(pair) == 2 and all(isinstance(p, str) for p in pair) for pair in pairs)
    well_formed = well_formed and len(pairs) == len(quality_prompts)
    if not pairs or not well_formed:
        raise ConfigError(
            "quality_prompts must be a non-empty list of [positive, negative] prompt pairs; "
            f"got {quality_prompts!r}"
        )
    return [(pair[0], pair[1]) for pair in pairs]
