"""Level-word scoring shared by ``mllm_zeroshot`` (Q-Align style) and ``deqa`` (DeQA-Score).

Each rated dimension is asked its own question (``templates[kind]``: the quality question for
``quality``, one that quotes the generation prompt for ``alignment`` and ``overall``); the
assistant turn starts with the template's stem, and the logits of the next token are read for
the five level words. The score is ``softmax(logits[levels]) . [5, 4, 3, 2, 1]`` on the level
scale [1, 5], mapped linearly onto the MOS range the model's labels use (``label_range``):

- ``scale``: the dimension's native scale range (no data needed; Q-Align style);
- ``observed``: the min and max MOS of the split's training part (DeQA-Score builds its labels
  on the observed range of each dataset; we never look at the test part).

Predictions files also get the predicted level distribution (``dist_<dim>_<word>``), and, for
dimensions with a published std, metrics.json gets DeQA-Score's distribution distances.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from agiqa.data.manifest import Dimension
from agiqa.errors import ConfigError
from agiqa.models.base import PartData, PredictionDetails
from agiqa.models.mllm.backbone import Turn
from agiqa.models.mllm.common import (
    MllmModel,
    PlanDataset,
    Sample,
    format_question,
    rows_mean,
    spread,
    training_part,
)
from agiqa.models.mllm.losses import distribution_metrics, expected_scores
from agiqa.models.mllm.soft_labels import LEVEL_SCORES, to_level_scale

#: Q-Align's and DeQA-Score's level words, best first (scores 5 ... 1).
LEVEL_WORDS = ("excellent", "good", "fair", "poor", "bad")
#: Questions and stems per dimension kind. The quality pair is Q-Align's / DeQA-Score's.
DEFAULT_TEMPLATES: dict[str, dict[str, str]] = {
    "quality": {
        "question": "How would you rate the quality of this image?",
        "stem": "The quality of the image is",
    },
    "alignment": {
        "question": (
            'This image was generated from the prompt "{prompt}". '
            "How well does the image match the prompt?"
        ),
        "stem": "The alignment of the image with the prompt is",
    },
    "overall": {
        "question": (
            'This image was generated from the prompt "{prompt}". How would you rate the image '
            "overall, for its quality and for how well it matches the prompt?"
        ),
        "stem": "The image overall is",
    },
}
LABEL_RANGES = ("scale", "observed")


@dataclass(frozen=True)
class Template:
    question: str
    stem: str


def resolve_templates(
    dimensions: Sequence[Dimension], templates: Mapping[str, Any] | None
) -> dict[str, Template]:
    """The template of every dimension kind present: defaults with the config's keys over them."""
    given = dict(templates or {})
    unknown = sorted(set(given) - set(DEFAULT_TEMPLATES))
    if unknown:
        raise ConfigError(f"templates: unknown kinds {unknown} (known: {list(DEFAULT_TEMPLATES)})")
    resolved = {}
    for kind in {dim.kind for dim in dimensions}:
        entry = {**DEFAULT_TEMPLATES[kind], **dict(given.get(kind) or {})}
        extra = sorted(set(entry) - {"question", "stem"})
        if extra:
            raise ConfigError(f"templates.{kind}: unknown keys {extra} (known: question, stem)")
        if kind != "quality" and "{prompt}" not in entry["question"]:
            raise ConfigError(f"templates.{kind}.question must quote the prompt as {{prompt}}")
        resolved[kind] = Template(str(entry["question"]), str(entry["stem"]))
    return resolved


class LevelModel(MllmModel):
    """Scores every dimension by the level-word distribution after its template's stem.

    Args:
        dimensions: The dataset's rated dimensions.
        backbone: ``BackboneSpec`` keys.
        templates: ``{kind: {question, stem}}`` over ``DEFAULT_TEMPLATES``.
        levels: The five level words, best first; each must be one token after the stem.
        label_range: ``scale`` or ``observed`` (see the module docstring).
        lora: LoRA settings, or None for a frozen model.
        train_vision: With LoRA, also train the vision tower.
    """

    def __init__(
        self,
        dimensions: Sequence[Dimension],
        backbone: Mapping[str, Any] | None = None,
        templates: Mapping[str, Any] | None = None,
        levels: Sequence[str] = LEVEL_WORDS,
        label_range: str = "scale",
        lora: Mapping[str, Any] | None = None,
        train_vision: bool = False,
    ) -> None:
        super().__init__(dimensions, backbone, lora, train_vision)
        LevelModel.check_settings(locals())
        self.levels = tuple(str(word) for word in levels)
        self.label_range = label_range
        self.templates = resolve_templates(self.dimensions, templates)
        self.level_ids = [
            self.choice_ids(self.templates[dim.kind].stem, self.levels) for dim in self.dimensions
        ]
        # The MOS range of the labels per dimension; "observed" refits it on each training part.
        low = torch.tensor([dim.low for dim in self.dimensions], dtype=torch.float64)
        high = torch.tensor([dim.high for dim in self.dimensions], dtype=torch.float64)
        self.register_buffer("label_low", low)
        self.register_buffer("label_high", high)

    # --- labels ----------------------------------------------------------------------------

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any]) -> None:
        super().check_settings(settings)
        levels, label_range = settings.get("levels", LEVEL_WORDS), settings.get("label_range")
        if isinstance(levels, str) or len(levels) != len(LEVEL_SCORES):
            raise ConfigError(f"levels must be five words, best first; got {levels!r}")
        if label_range not in LABEL_RANGES:
            raise ConfigError(f"label_range must be one of {LABEL_RANGES}; got {label_range!r}")
        every_kind = [Dimension(kind, kind, 0.0, 1.0) for kind in DEFAULT_TEMPLATES]
        resolve_templates(every_kind, settings.get("templates"))

    def fit_label_range(self, data: PartData) -> None:
        """With ``observed``, take the training part's MOS min and max per dimension."""
        part = training_part(data)
        if self.label_range != "observed" or part is None:
            return
        for column, dim in enumerate(self.dimensions):
            mos = part.frame[dim.mos_column].to_numpy(float)
            low, high = float(np.nanmin(mos)), float(np.nanmax(mos))
            if not high > low:
                raise ConfigError(
                    f"dimension {dim.name}: every training image has MOS {low}; "
                    "label_range observed needs a spread (use label_range: scale)"
                )
            self.label_low[column], self.label_high[column] = low, high

    def label_bounds(self, column: int) -> tuple[float, float]:
        return float(self.label_low[column]), float(self.label_high[column])

    def question(self, column: int, prompt: str) -> Turn:
        template = self.templates[self.dimensions[column].kind]
        return Turn((), format_question(template.question, prompt), template.stem)

    # --- evaluation ------------------------------------------------------------------------

    def make_dataset(self, data: PartData, train: bool) -> Dataset:
        self.fit_label_range(data)
        return self.eval_dataset(data)

    def eval_dataset(self, data: PartData) -> Dataset:
        """One sample per (row, dimension): the image and its dimension's question."""
        images = self.images_of(data)
        prompts = data.frame["prompt"].astype(str).tolist()
        plans = [
            (row, column) for row in range(len(prompts)) for column in range(len(self.dimensions))
        ]

        def build(plan: tuple[int, int]) -> Sample:
            row, column = plan
            turn = self.question(column, prompts[row])
            turn = Turn((images[row],), turn.question, turn.stem)
            return Sample(row, column, turn, self.level_ids[column])

        return PlanDataset(plans, build)

    def forward_batch(self, inputs: dict[str, Any]) -> torch.Tensor:
        """Eval: [B, n_dims x 5] level probabilities at each sample's column, NaN elsewhere."""
        probabilities = self.choice_probabilities(inputs)
        return spread(probabilities, inputs["columns"], len(self.dimensions))

    def level_distributions(self, outputs: np.ndarray, rows: np.ndarray, n_rows: int):
        """[n_rows, n_dims, 5] mean level distribution of each row's samples."""
        return rows_mean(outputs, rows, n_rows, len(LEVEL_SCORES))

    def reduce_predictions(self, outputs: np.ndarray, rows: np.ndarray, n_rows: int) -> np.ndarray:
        """Expected level score, mapped from [1, 5] onto each dimension's label range."""
        scores, _ = expected_scores(self.level_distributions(outputs, rows, n_rows), LEVEL_SCORES)
        predictions = np.empty_like(scores)
        for column, dim in enumerate(self.dimensions):
            low, high = self.label_bounds(column)
            native = low + (scores[:, column] - 1.0) / 4.0 * (high - low)
            predictions[:, column] = dim.normalise(native)
        return predictions.astype(np.float32)

    def prediction_details(
        self, frame: pd.DataFrame, outputs: np.ndarray, rows: np.ndarray
    ) -> PredictionDetails:
        """The predicted distribution per row; KL/JS/Wasserstein to the ground truth per dim."""
        distributions = self.level_distributions(outputs, rows, len(frame))
        details = PredictionDetails()
        for column, dim in enumerate(self.dimensions):
            for level, word in enumerate(self.levels):
                details.columns[f"dist_{dim.name}_{word}"] = distributions[:, column, level]
            if dim.std_column not in frame or frame[dim.std_column].isna().all():
                continue  # no published std: no ground-truth distribution
            low, high = self.label_bounds(column)
            mu, sigma = to_level_scale(
                frame[dim.mos_column].to_numpy(float),
                frame[dim.std_column].to_numpy(float),
                low,
                high,
            )
            mean, std = expected_scores(distributions[:, column], LEVEL_SCORES)
            known = np.isfinite(mu) & np.isfinite(sigma) & np.isfinite(mean)
            details.metrics[dim.name] = distribution_metrics(
                mu[known], sigma[known], mean[known], std[known]
            )
        return details
