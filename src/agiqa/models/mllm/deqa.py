"""``deqa``: DeQA-Score's recipe (methods.md 5), fine-tuned per fold on a native MLLM.

Training sample: an image of the training part with one of DeQA-Score's ten rating questions
(drawn once per image and dimension, seed 131) and the answer "The quality of the image is
<level>." (the level from five equal bins of the training MOS range), paired with a partner image
drawn at random from the same training part (DeQA-Score's pair training). Per pair:

- **fidelity** (Thurstone) between the predicted preference ``Phi((s_A - s_B) / sqrt 2)`` (fixed
  unit std) and the target ``Phi((mu_A - mu_B) / sqrt(sigma_A^2 + sigma_B^2))`` from MOS and std
  (a dataset without std gives a hard 0 / 0.5 / 1 target);
- per image, **next-token cross-entropy** over the answer tokens except the level token, plus
  **KL(soft label || softmax over the vocabulary)** at the level position (soft labels:
  ``soft_labels``), summed over A and B;
- ``L = rank x fidelity + next_token x (CE + softkl x KL)`` with DeQA-Score's weights 1.0, 0.05
  and 1.0 (``loss_weights``).

``s`` is the expected level score over the softmax of the five level logits
(DeQA-Score's ``closeset_rating_loss``). LoRA (r 128, alpha 256, dropout 0.05) goes on every
linear layer of the language model; ``train_vision`` also trains the vision tower, as DeQA-Score's
LoRA run does. The recipe (lr 2e-5, cosine, 3 % warmup, 3 epochs, bf16, gradient checkpointing)
is the entry's ``train`` section and ``backbone.gradient_checkpointing``.

Differences from DeQA-Score: a native transformers MLLM instead of mPLUG-Owl2 (no
trust_remote_code, current transformers), LoRA through peft; the label range is the training
part's observed MOS min and max (DeQA-Score uses the whole dataset's); epochs are selected on
validation like every agiqa model (DeQA-Score keeps the last of 3); the uniform label DeQA-Score's
formula gives at mu = 3 exactly is replaced (``soft_labels``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from agiqa.data.manifest import Dimension
from agiqa.errors import ConfigError
from agiqa.models.base import MODELS, PartData
from agiqa.models.mllm.backbone import Turn, known_keys
from agiqa.models.mllm.common import PlanDataset, Sample, format_question, token_mean
from agiqa.models.mllm.levels import LEVEL_WORDS, LevelModel
from agiqa.models.mllm.losses import (
    fidelity_loss,
    fixed_std_preference,
    soft_kl,
    thurstone_target,
)
from agiqa.models.mllm.soft_labels import (
    DENSITIES,
    ERROR_THRESHOLD,
    LEVEL_SCORES,
    STD_THRESHOLD,
    hard_level,
    soft_label,
    to_level_scale,
)

#: DeQA-Score's ten paraphrased rating questions (build_soft_labels/gen_soft_label.py).
TRAIN_QUESTIONS = (
    "What do you think about the quality of this image?",
    "Can you rate the quality of this picture?",
    "Can you judge the quality of this image?",
    "How would you rate the quality of this image?",
    "How would you judge the quality of this image?",
    "What is your quality rating for this image?",
    "What's your opinion on the quality of this picture?",
    "Rate the quality of this image.",
    "Could you evaluate the quality of this image?",
    "How do you assess the quality of this image?",
)
DEFAULT_LORA = {"r": 128, "alpha": 256, "dropout": 0.05}


@dataclass(frozen=True)
class LossWeights:
    """DeQA-Score's defaults: weight_rank 1.0, weight_next_token 0.05, weight_softkl 1.0."""

    rank: float = 1.0
    next_token: float = 0.05
    softkl: float = 1.0

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any] | None) -> LossWeights:
        entry = known_keys(cls, entry, "loss_weights")
        weights = cls(**{k: float(v) for k, v in entry.items()})
        if min(weights.rank, weights.next_token, weights.softkl) < 0:
            raise ConfigError(f"loss_weights must be non-negative; got {weights}")
        return weights


@dataclass(frozen=True)
class LabelSettings:
    """How soft labels are built (DeQA-Score's ``density_type``, ``thre_std``, ``thre_diff``)."""

    density: str = "pdf"
    std_threshold: float = STD_THRESHOLD
    error_threshold: float = ERROR_THRESHOLD

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any] | None) -> LabelSettings:
        settings = cls(**known_keys(cls, entry, "soft_labels"))
        if settings.density not in DENSITIES:
            raise ConfigError(f"soft_labels.density must be one of {DENSITIES}")
        return settings


@dataclass(frozen=True)
class PairSample:
    """Image A of the training part and its partner B, both for the same dimension."""

    a: Sample
    b: Sample
    partner: int


@MODELS.register("deqa")
class DeqaScore(LevelModel):
    """DeQA-Score: soft-label KL + Thurstone fidelity on pairs, LoRA on a native MLLM.

    Args:
        dimensions: The dataset's rated dimensions.
        backbone: ``BackboneSpec`` keys.
        templates: ``{kind: {question, stem}}``; the quality question is the one asked at
            evaluation, training draws from ``train_questions``.
        levels: The five level words, best first.
        label_range: ``observed`` (default, the training part's MOS min and max) or ``scale``.
        lora: ``{r, alpha, dropout}`` (default DeQA-Score's 128, 256, 0.05).
        train_vision: Also train the vision tower (DeQA-Score's LoRA run does).
        train_questions: Quality questions drawn per image in training (DeQA-Score's ten).
        question_seed: Seed of that draw (DeQA-Score: 131).
        loss_weights: ``{rank, next_token, softkl}``.
        soft_labels: ``{density, std_threshold, error_threshold}``.
    """

    def __init__(
        self,
        dimensions: Sequence[Dimension],
        backbone: Mapping[str, Any] | None = None,
        templates: Mapping[str, Any] | None = None,
        levels: Sequence[str] = LEVEL_WORDS,
        label_range: str = "observed",
        lora: Mapping[str, Any] | None = None,
        train_vision: bool = False,
        train_questions: Sequence[str] = TRAIN_QUESTIONS,
        question_seed: int = 131,
        loss_weights: Mapping[str, Any] | None = None,
        soft_labels: Mapping[str, Any] | None = None,
    ) -> None:
        lora = {**DEFAULT_LORA, **dict(lora or {})}
        super().__init__(dimensions, backbone, templates, levels, label_range, lora, train_vision)
        if isinstance(train_questions, str) or not train_questions:
            raise ConfigError("train_questions must be a non-empty list of questions")
        self.train_questions = tuple(str(q) for q in train_questions)
        self.question_seed = int(question_seed)
        self.weights = LossWeights.from_dict(loss_weights)
        self.label_settings = LabelSettings.from_dict(soft_labels)
        self.register_buffer("level_scores", torch.tensor(LEVEL_SCORES), persistent=False)

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any]) -> None:
        super().check_settings(settings)
        questions = settings.get("train_questions")
        if isinstance(questions, str) or not questions:
            raise ConfigError("train_questions must be a non-empty list of questions")
        LossWeights.from_dict(settings.get("loss_weights"))
        LabelSettings.from_dict(settings.get("soft_labels"))

    # --- data ------------------------------------------------------------------------------

    def make_dataset(self, data: PartData, train: bool) -> Dataset:
        self.fit_label_range(data)
        if not train:
            return self.eval_dataset(data)
        return self.pair_dataset(data)

    def label_table(self, data: PartData, column: int) -> dict[str, np.ndarray]:
        """Raw MOS and std, the soft label and the answer level of every row, for one column."""
        dim = self.dimensions[column]
        low, high = self.label_bounds(column)
        mos = data.frame[dim.mos_column].to_numpy(float)
        has_std = dim.std_column in data.frame and data.frame[dim.std_column].notna().all()
        std = data.frame[dim.std_column].to_numpy(float) if has_std else np.zeros_like(mos)
        mu, sigma = to_level_scale(mos, std if has_std else None, low, high)
        settings = self.label_settings
        labels = np.stack(
            [
                soft_label(
                    m,
                    None if sigma is None else s,
                    settings.density,
                    settings.std_threshold,
                    settings.error_threshold,
                )
                for m, s in zip(mu, sigma if sigma is not None else mu, strict=True)
            ]
        )
        levels = np.array([hard_level(m, low, high) for m in mos])
        return {"mos": mos, "std": std, "soft": labels, "level": levels}

    def pair_dataset(self, data: PartData) -> Dataset:
        """One item per (row, dimension) of the training part, paired with a random partner."""
        n_rows, n_columns = len(data.frame), len(self.dimensions)
        if n_rows == 0:  # the empty validation part of a protocol that carves none
            return PlanDataset([], lambda plan: plan)
        if n_rows == 1:
            raise ConfigError("deqa trains on pairs: the training part needs at least 2 images")
        images = self.images_of(data)
        prompts = data.frame["prompt"].astype(str).tolist()
        tables = [self.label_table(data, column) for column in range(n_columns)]
        # DeQA-Score draws one question per image once, when it builds its label files.
        draw = np.random.default_rng(self.question_seed)
        asked = draw.integers(len(self.train_questions), size=(n_rows, n_columns))

        def sample(row: int, column: int) -> Sample:
            table = tables[column]
            template = self.templates[self.dimensions[column].kind]
            question = template.question
            if self.dimensions[column].kind == "quality":
                question = self.train_questions[asked[row, column]]
            level = int(table["level"][row])
            turn = Turn(
                (images[row],),
                format_question(question, prompts[row]),
                template.stem,
                answer=f" {self.levels[level]}.",
            )
            target = {
                "soft": table["soft"][row],
                "mos": table["mos"][row],
                "std": table["std"][row],
            }
            return Sample(row, column, turn, self.level_ids[column], level, target)

        def build(plan: tuple[int, int]) -> PairSample:
            row, column = plan
            # A partner from the same training part, never the image itself.
            partner = int(torch.randint(n_rows - 1, ()).item())
            partner += partner >= row
            return PairSample(sample(row, column), sample(partner, column), partner)

        plans = [(row, column) for row in range(n_rows) for column in range(n_columns)]
        return PlanDataset(plans, build)

    def collate(self, samples: list) -> tuple[dict[str, Any], Any, torch.Tensor]:
        """Pairs -> one batch of all A images then all B images; plain samples as usual."""
        if samples and isinstance(samples[0], PairSample):
            samples = [pair.a for pair in samples] + [pair.b for pair in samples]
        return super().collate(samples)

    # --- training --------------------------------------------------------------------------

    def forward_batch(self, inputs: dict[str, Any]) -> torch.Tensor:
        """Training: [2n, 7] (five level log-probs, summed CE, CE tokens); evaluation:
        LevelModel's."""
        if "labels" in inputs:
            return self.answer_outputs(inputs)
        return super().forward_batch(inputs)

    def loss(self, predictions: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        """``rank x fidelity + next_token x sum over A, B of (CE + softkl x KL)``.

        As DeQA-Score: CE averaged over all of the A (or B) batch's answer tokens but the level
        token, KL averaged over the batch's samples (``batchmean``).
        """
        half = len(predictions) // 2
        log_levels, summed, counts = predictions[:, :5], predictions[:, 5], predictions[:, 6]
        scores = log_levels.softmax(dim=-1) @ self.level_scores.to(log_levels)
        mos, std = targets["mos"], targets["std"]
        preferred = fixed_std_preference(scores[:half], scores[half:])
        target = thurstone_target(mos[:half], mos[half:], std[:half], std[half:])
        fidelity = fidelity_loss(preferred, target)
        kl = soft_kl(log_levels, targets["soft"])
        token_loss = sum(
            token_mean(summed[side], counts[side]) + self.weights.softkl * kl[side].mean()
            for side in (slice(None, half), slice(half, None))
        )
        return self.weights.rank * fidelity + self.weights.next_token * token_loss
