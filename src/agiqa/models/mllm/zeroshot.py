"""``mllm_zeroshot``: Q-Align-style zero-shot scoring with a native multimodal LLM.

No training (methods.md 9.4): the user turn is the image and "How would you rate the quality of
this image?", the assistant turn starts with "The quality of the image is", and the next-token
logits of " excellent", " good", " fair", " poor", " bad" give the score
``softmax(five logits) . [5, 4, 3, 2, 1]``. Each level word must be one token after the stem
(checked when the model is built). Alignment and overall dimensions use questions that quote the
generation prompt (``levels.DEFAULT_TEMPLATES``); templates and level words are config.

Differences from Q-Align: the backbone is any native transformers MLLM (Qwen2.5-VL in the paper
preset) instead of the Q-Align-tuned mPLUG-Owl2, the prompt is rendered with the model's own
chat template with the stem appended as raw text (as Q-ReAlign does), and scores map linearly
from [1, 5] onto each dimension's scale (``label_range: scale``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agiqa.data.manifest import Dimension
from agiqa.models.base import MODELS
from agiqa.models.mllm.levels import LEVEL_WORDS, LevelModel


@MODELS.register("mllm_zeroshot")
class MllmZeroShot(LevelModel):
    """Frozen MLLM, level-word expected score.

    Args:
        dimensions: The dataset's rated dimensions.
        backbone: ``BackboneSpec`` keys (``name``, ``cache_dir``, ``local_files_only``, ...).
        templates: ``{kind: {question, stem}}`` over ``levels.DEFAULT_TEMPLATES``.
        levels: The five level words, best first.
        label_range: ``scale`` (default) or ``observed`` (the training part's MOS range).
    """

    trainable = False

    def __init__(
        self,
        dimensions: Sequence[Dimension],
        backbone: Mapping[str, Any] | None = None,
        templates: Mapping[str, Any] | None = None,
        levels: Sequence[str] = LEVEL_WORDS,
        label_range: str = "scale",
    ) -> None:
        super().__init__(dimensions, backbone, templates, levels, label_range)
        self.train(False)

    def train(self, mode: bool = True) -> MllmZeroShot:
        # Nothing trains, so the model always runs as at inference (no dropout).
        return super().train(False)
