"""``depictqa_compare``: DepictQA-style comparative assessment (methods.md 4 and 9.4).

Training: LoRA-tune the MLLM on pairs of the training part. The user turn shows "Image A:" <image>
"Image B:" <image> and asks "Which image has better quality, Image A or Image B?" (alignment and
overall dimensions: a variant that quotes each image's generation prompt); the assistant answers
"The better one is Image A." (or B). The A/B token gets a soft cross-entropy (KL) to the
Thurstone probability that A is better, ``Phi((mu_A - mu_B) / sqrt(sigma_A^2 + sigma_B^2))``;
the other answer tokens get next-token cross-entropy (``token_weight``). Which image is shown
first is drawn at random per pair.

Scoring: each image is compared with K anchor images of the training part, chosen per dimension
(seeded, one per training-MOS quantile stratum, so they span the training range), in both orders
(``symmetric``, to cancel position bias). Its score (``score``) is either its mean probability
of winning (``win_rate``) or Mosteller's least-squares Thurstone (Case V) fit of all its pairwise
outcomes, the mean of ``Phi^-1(p)`` over its comparisons (``thurstone``; the anchors' own scale
values are a constant shared by every image, since every image meets every anchor). After
training (``calibrate``) a monotone map from score to the dimension's scale is fitted out of
sample: an isotonic fit of the normalised MOS on the score over the validation part, images the
comparator never trained on (``calibration: validation``); where the split has no validation part
(the test-selection protocols), or with ``calibration: quantile``, the score's unit value (the
win rate, or ``Phi`` of the Thurstone score) is mapped to that quantile of the training part's
MOS, which uses no comparison of a training image. Ties of the fitted step function are broken
by the raw score, so the map is strictly increasing and the ranks (SRCC) are the raw score's.
The anchors (images, prompts, descriptions) and the fit are buffers, so a checkpoint scores new
images without the dataset.

Reasoning (optional): when the model entry names a describer, the answer first describes both
images with the describer's texts ("Image A: <description>\\nImage B: <description>\\n") and
then concludes; those tokens are trained with the cross-entropy. At scoring the reasoning slot
holds the describer's descriptions of the two images (not generated text).

Differences from DepictQA: a native transformers MLLM (paper preset Qwen2.5-VL) instead of a
frozen CLIP + Vicuna with a trained projector; soft preference targets from MOS and std instead
of text answers; no reference image; the score is the win rate against training anchors (DepictQA
votes against same-reference images); a monotone fit on held-out data maps it to the scale.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from agiqa.data.manifest import Dimension
from agiqa.errors import ConfigError
from agiqa.models.base import MODELS, PartData, RunDataset
from agiqa.models.mllm.backbone import Turn
from agiqa.models.mllm.common import (
    MllmModel,
    PlanDataset,
    Sample,
    rows_mean,
    spread,
    token_mean,
    training_part,
)
from agiqa.models.mllm.losses import soft_kl, thurstone_probability

log = logging.getLogger(__name__)

DEFAULT_QUESTIONS = {
    "quality": "Which image has better quality, Image A or Image B?",
    "alignment": (
        'Image A was generated from the prompt "{prompt_a}" and Image B from the prompt '
        '"{prompt_b}". Which image matches its prompt better, Image A or Image B?'
    ),
    "overall": (
        'Image A was generated from the prompt "{prompt_a}" and Image B from the prompt '
        '"{prompt_b}". Which image is better overall, for its quality and for how well it '
        "matches its prompt, Image A or Image B?"
    ),
}
#: DepictQA's LoRA (r 16, alpha 16, dropout 0.1 on the attention projections; here on every
#: linear layer of the language model, like deqa).
DEFAULT_LORA = {"r": 16, "alpha": 16, "dropout": 0.1}
#: Knots of the stored monotone map from score to the normalised scale.
CALIBRATION_KNOTS = 32
#: Weight of the raw score's unit value in the calibrated prediction: breaks the ties of the
#: isotonic step function (so the map is strictly increasing) and moves a prediction by at most
#: this fraction of the scale.
TIE_BREAK = 1e-3
#: Per-image scores from the pairwise outcomes (``DepictqaCompare``).
SCORES = ("win_rate", "thurstone")
#: Where the monotone map to the scale is fitted.
CALIBRATIONS = ("validation", "quantile")
#: Outcomes are clipped to [P_CLIP, 1 - P_CLIP] before Phi^-1.
P_CLIP = 1e-4
#: Bytes kept per anchor prompt or description (UTF-8, NUL-padded in a uint8 buffer).
TEXT_BYTES = 1024


def quantile_anchors(mos: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` rows, one drawn at random from each equal-size stratum of MOS order."""
    if len(mos) < count:
        raise ConfigError(f"{count} anchors need at least {count} training images; got {len(mos)}")
    order = np.argsort(mos, kind="stable")
    rng = np.random.default_rng(seed)
    return np.array([int(rng.choice(stratum)) for stratum in np.array_split(order, count)])


def _encode_text(text: str) -> torch.Tensor:
    raw = text.encode("utf-8")[:TEXT_BYTES]
    return torch.tensor(list(raw) + [0] * (TEXT_BYTES - len(raw)), dtype=torch.uint8)


def _decode_text(raw: torch.Tensor) -> str:
    data = bytes(raw.tolist()).rstrip(b"\0")
    return data.decode("utf-8", errors="ignore")


def monotone_knots(score: np.ndarray, target: np.ndarray, knots: int) -> tuple[np.ndarray, ...]:
    """Isotonic fit of ``target`` on ``score``, sampled at ``knots`` evenly spaced scores."""
    from scipy.optimize import isotonic_regression

    values, inverse = np.unique(score, return_inverse=True)
    sums = np.bincount(inverse, weights=target)
    counts = np.bincount(inverse)
    fitted = isotonic_regression(sums / counts, weights=counts, increasing=True).x
    if len(values) == 1:
        return np.linspace(values[0] - 0.5, values[0] + 0.5, knots), np.full(knots, fitted[0])
    x = np.linspace(values[0], values[-1], knots)
    return x, np.interp(x, values, fitted)


def quantile_knots(unit_target: np.ndarray, knots: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit score u in [0, 1] -> the u-quantile of the (training) targets, at ``knots`` points."""
    x = np.linspace(0.0, 1.0, knots)
    return x, np.quantile(unit_target, x)


def thurstone_outcomes(win: np.ndarray) -> np.ndarray:
    """Per-comparison Thurstone scale differences ``Phi^-1(p)`` (NaN stays NaN)."""
    from scipy.special import ndtri

    return ndtri(np.clip(win, P_CLIP, 1 - P_CLIP))


def calibrated(score: np.ndarray, unit: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The monotone map at ``score`` with ties broken by the raw ``unit`` value (in [0, 1]).

    ``(1 - TIE_BREAK) * interp(score) + TIE_BREAK * unit``: strictly increasing in the score, so
    the predictions rank exactly as the raw scores do, and within [0, 1] when both parts are.
    """
    return (1 - TIE_BREAK) * np.interp(score, x, y) + TIE_BREAK * unit


@MODELS.register("depictqa_compare")
class DepictqaCompare(MllmModel):
    """Pairwise A/B preference of a LoRA-tuned MLLM, scored against training anchors.

    Args:
        dimensions: The dataset's rated dimensions.
        backbone: ``BackboneSpec`` keys.
        lora: ``{r, alpha, dropout}`` (default DepictQA's 16, 16, 0.1).
        train_vision: Also train the vision tower.
        questions: ``{kind: question}`` over ``DEFAULT_QUESTIONS`` (``{prompt_a}``,
            ``{prompt_b}`` quote the generation prompts).
        stem: The assistant's answer up to the A/B token.
        answers: The two answer words (each one token after the stem).
        tags: The text before each image.
        anchors: K, anchors per dimension.
        anchor_seed: Seed of the anchor draw.
        symmetric: Score both orders (image first, anchor first) and average.
        score: ``win_rate`` (mean win probability) or ``thurstone`` (mean ``Phi^-1`` of the
            win probabilities: Mosteller's least-squares Thurstone Case V fit).
        calibration: ``validation`` (isotonic fit on the validation part; the quantile map
            where a split has none) or ``quantile`` (the score's unit value -> that quantile of
            the training MOS).
        calibration_rows: Validation images the isotonic fit uses at most (a seeded sample;
            None: all).
        token_weight: Weight of the cross-entropy on the non-A/B answer tokens (averaged over
            all those tokens of the batch).
    """

    uses_descriptions = True

    def __init__(
        self,
        dimensions: Sequence[Dimension],
        backbone: Mapping[str, Any] | None = None,
        lora: Mapping[str, Any] | None = None,
        train_vision: bool = False,
        questions: Mapping[str, str] | None = None,
        stem: str = "The better one is Image",
        answers: Sequence[str] = ("A", "B"),
        tags: Sequence[str] = ("Image A:", "Image B:"),
        anchors: int = 8,
        anchor_seed: int = 0,
        symmetric: bool = True,
        score: str = "win_rate",
        calibration: str = "validation",
        calibration_rows: int | None = None,
        token_weight: float = 1.0,
    ) -> None:
        lora = {**DEFAULT_LORA, **dict(lora or {})}
        super().__init__(dimensions, backbone, lora, train_vision)
        self.questions = self._questions(questions)
        if isinstance(answers, str) or len(answers) != 2 or len(tags) != 2:
            raise ConfigError("answers and tags must each be two strings (for A and B)")
        if not isinstance(anchors, int) or anchors < 1:
            raise ConfigError(f"anchors must be a positive integer; got {anchors!r}")
        self.stem, self.tags = stem, (str(tags[0]), str(tags[1]))
        self.answers = (str(answers[0]), str(answers[1]))
        self.answer_ids = self.choice_ids(stem, self.answers)
        self.anchor_count, self.anchor_seed = anchors, int(anchor_seed)
        self.symmetric = bool(symmetric)
        if score not in SCORES:
            raise ConfigError(f"score must be one of {SCORES}; got {score!r}")
        if calibration not in CALIBRATIONS:
            raise ConfigError(f"calibration must be one of {CALIBRATIONS}; got {calibration!r}")
        self.score, self.calibration = score, calibration
        self.calibration_rows = calibration_rows
        self.token_weight = float(token_weight)
        n_dims, size = len(self.dimensions), self.spec.image_size
        self.register_buffer(
            "anchor_images", torch.zeros(n_dims, anchors, size, size, 3, dtype=torch.uint8)
        )
        self.register_buffer(
            "anchor_texts", torch.zeros(n_dims, anchors, 2, TEXT_BYTES, dtype=torch.uint8)
        )
        self.register_buffer("anchor_rows", torch.full((n_dims, anchors), -1, dtype=torch.long))
        self.register_buffer("anchor_mos", torch.zeros(n_dims, anchors, dtype=torch.float64))
        knots = torch.linspace(0, 1, CALIBRATION_KNOTS, dtype=torch.float64).repeat(n_dims, 1)
        self.register_buffer("calibration_x", knots.clone())
        self.register_buffer("calibration_y", knots.clone())
        self.register_buffer("calibrated", torch.zeros((), dtype=torch.bool))

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any]) -> None:
        super().check_settings(settings)
        cls._questions(settings.get("questions"))
        answers, tags, anchors = settings["answers"], settings["tags"], settings["anchors"]
        if isinstance(answers, str) or len(answers) != 2 or len(tags) != 2:
            raise ConfigError("answers and tags must each be two strings (for A and B)")
        if isinstance(anchors, bool) or not isinstance(anchors, int) or anchors < 1:
            raise ConfigError(f"anchors must be a positive integer; got {anchors!r}")

    @staticmethod
    def _questions(questions: Mapping[str, str] | None) -> dict[str, str]:
        given = dict(questions or {})
        unknown = sorted(set(given) - set(DEFAULT_QUESTIONS))
        if unknown:
            raise ConfigError(
                f"questions: unknown kinds {unknown} (known: {list(DEFAULT_QUESTIONS)})"
            )
        return {**DEFAULT_QUESTIONS, **{k: str(v) for k, v in given.items()}}

    # --- turns -----------------------------------------------------------------------------

    def turn(
        self,
        column: int,
        first: tuple[Image.Image, str, str],
        second: tuple[Image.Image, str, str],
        answer: int | None = None,
    ) -> Turn:
        """A/B question about (image, prompt, description) pairs; reasoning when both have one."""
        question = self.questions[self.dimensions[column].kind]
        question = question.replace("{prompt_a}", first[1]).replace("{prompt_b}", second[1])
        stem = self.stem
        if first[2] and second[2]:
            stem = f"{self.tags[0]} {first[2]}\n{self.tags[1]} {second[2]}\n{self.stem}"
        text = None if answer is None else f" {self.answers[answer]}."
        return Turn((first[0], second[0]), question, stem, self.tags, text)

    # --- anchors ---------------------------------------------------------------------------

    def set_anchors(self, part: PartData) -> None:
        """Draw the anchors of every dimension from the training part and keep them in buffers."""
        images = self.images_of(part)
        descriptions = part.descriptions or [""] * len(part.frame)
        prompts = part.frame["prompt"].astype(str).tolist()
        for column, dim in enumerate(self.dimensions):
            mos = part.frame[dim.mos_column].to_numpy(float)
            rows = quantile_anchors(mos, self.anchor_count, self.anchor_seed + column)
            if bool((self.anchor_rows[column] == torch.from_numpy(rows)).all()):
                continue  # the same part again (val, test, calibration): already stored
            for k, row in enumerate(rows):
                pixels = np.asarray(images[int(row)].convert("RGB"), dtype=np.uint8)
                self.anchor_images[column, k] = torch.from_numpy(pixels.copy())
                self.anchor_texts[column, k, 0] = _encode_text(prompts[row])
                self.anchor_texts[column, k, 1] = _encode_text(descriptions[row])
            self.anchor_rows[column] = torch.from_numpy(rows)
            self.anchor_mos[column] = torch.from_numpy(mos[rows])

    def anchor(self, column: int, k: int) -> tuple[Image.Image, str, str]:
        pixels = self.anchor_images[column, k].cpu().numpy()
        texts = self.anchor_texts[column, k].cpu()
        return Image.fromarray(pixels), _decode_text(texts[0]), _decode_text(texts[1])

    # --- data ------------------------------------------------------------------------------

    def make_dataset(self, data: PartData, train: bool) -> Dataset:
        part = training_part(data)
        if part is not None:
            self.set_anchors(part)
        if train:
            return self.pair_dataset(data)
        return self.anchor_dataset(data, range(len(data.frame)))

    def _items(self, data: PartData) -> tuple[Any, list[str], list[str]]:
        prompts = data.frame["prompt"].astype(str).tolist()
        return self.images_of(data), prompts, data.descriptions or [""] * len(prompts)

    def pair_dataset(self, data: PartData) -> Dataset:
        """One item per (row, dimension) with a random partner of the training part."""
        n_rows = len(data.frame)
        if n_rows == 1:  # an empty part (a protocol without validation) has no plans
            raise ConfigError("depictqa_compare trains on pairs: it needs at least 2 images")
        images, prompts, descriptions = self._items(data)
        mos = [data.frame[dim.mos_column].to_numpy(float) for dim in self.dimensions]
        std = [
            data.frame[dim.std_column].fillna(0.0).to_numpy(float)
            if dim.std_column in data.frame
            else np.zeros(n_rows)
            for dim in self.dimensions
        ]

        def build(plan: tuple[int, int]) -> Sample:
            row, column = plan
            partner = int(torch.randint(n_rows - 1, ()).item())
            partner += partner >= row
            first, second = (row, partner) if torch.rand(()) < 0.5 else (partner, row)
            preference = thurstone_probability(
                mos[column][first], mos[column][second], std[column][first], std[column][second]
            )
            answer = 0 if preference >= 0.5 else 1
            turn = self.turn(
                column,
                (images[first], prompts[first], descriptions[first]),
                (images[second], prompts[second], descriptions[second]),
                answer,
            )
            target = {"preference": preference, "partner": float(partner)}
            return Sample(row, column, turn, self.answer_ids, answer, target)

        plans = [(row, column) for row in range(n_rows) for column in range(len(self.dimensions))]
        return PlanDataset(plans, build)

    def anchor_dataset(self, data: PartData, rows: Sequence[int]) -> Dataset:
        """Samples (row, dimension, anchor, order) comparing each row with the stored anchors."""
        if bool((self.anchor_rows < 0).any()):
            raise ConfigError(
                "depictqa_compare has no anchors: build its datasets from a split (the training "
                "part draws them) or load a trained checkpoint"
            )
        images, prompts, descriptions = self._items(data)
        anchors = {
            (c, k): self.anchor(c, k)
            for c in range(len(self.dimensions))
            for k in range(self.anchor_count)
        }
        orders = (0, 1) if self.symmetric else (0,)
        plans = [
            (row, column, k, order)
            for row in rows
            for column in range(len(self.dimensions))
            for k in range(self.anchor_count)
            for order in orders
        ]

        def build(plan: tuple[int, int, int, int]) -> Sample:
            row, column, k, order = plan
            own = (images[row], prompts[row], descriptions[row])
            pair = (own, anchors[column, k]) if order == 0 else (anchors[column, k], own)
            sample = Sample(row, column, self.turn(column, *pair), self.answer_ids)
            sample.target = {"order": float(order)}
            return sample

        return PlanDataset(plans, build)

    def collate(self, samples: list[Sample]) -> tuple[dict[str, Any], Any, torch.Tensor]:
        inputs, targets, rows = super().collate(samples)
        if samples[0].answer is None:
            # Evaluation: which side the evaluated image is on travels with the inputs.
            inputs["orders"] = targets["order"].long()
        return inputs, targets, rows

    # --- forward, loss ---------------------------------------------------------------------

    def forward_batch(self, inputs: dict[str, Any]) -> torch.Tensor:
        """Training: [B, 4] (log p(A), log p(B), summed CE, CE tokens); evaluation: the
        evaluated image's win probability at its sample's column, NaN elsewhere ([B, n_dims])."""
        if "labels" in inputs:
            return self.answer_outputs(inputs)
        probabilities = self.choice_probabilities(inputs)
        batch = torch.arange(len(probabilities), device=probabilities.device)
        win = probabilities[batch, inputs["orders"]]
        return spread(win[:, None], inputs["columns"], len(self.dimensions))

    def loss(self, predictions: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        """Soft cross-entropy (KL) to the Thurstone preference + token_weight x CE, the CE
        averaged over every other answer token of the batch (as a causal LM's loss is)."""
        preference = targets["preference"]
        soft = torch.stack([preference, 1 - preference], dim=1)
        kl = soft_kl(predictions[:, :2], soft)
        return kl.mean() + self.token_weight * token_mean(predictions[:, 2], predictions[:, 3])

    # --- scale -----------------------------------------------------------------------------

    def scores(self, outputs: np.ndarray, rows: np.ndarray, n_rows: int) -> np.ndarray:
        """Per row and dimension: the mean win rate, or the mean Thurstone difference."""
        if self.score == "thurstone":
            outputs = thurstone_outcomes(outputs)
        return rows_mean(outputs, rows, n_rows, 1)[..., 0]

    def unit(self, score: np.ndarray) -> np.ndarray:
        """The score as a value in [0, 1]: the win rate itself, ``Phi`` of a Thurstone score."""
        if self.score == "thurstone":
            from scipy.special import ndtr

            return ndtr(score)
        return score

    def reduce_predictions(self, outputs: np.ndarray, rows: np.ndarray, n_rows: int) -> np.ndarray:
        """Per row and dimension: the score through the calibrated monotone map (float64, so
        the tie-breaking term survives)."""
        score = self.scores(outputs, rows, n_rows)
        if not bool(self.calibrated):  # epochs are selected on the raw score
            return self.unit(score)
        predictions = np.empty_like(score)
        for column in range(len(self.dimensions)):
            x = self.calibration_x[column].cpu().numpy()
            y = self.calibration_y[column].cpu().numpy()
            predictions[:, column] = calibrated(score[:, column], self.unit(score[:, column]), x, y)
        return predictions

    def calibrate(
        self, training: PartData, run: RunDataset, validation: PartData | None = None
    ) -> None:
        """Fit score -> normalised MOS per dimension, never on images the comparator trained on.

        ``validation`` given and ``calibration: validation``: an isotonic fit on the validation
        part (``calibration_rows`` of it at most). Otherwise the quantile map to the training
        part's MOS, which reads no comparison of a training image.
        """
        if self.calibration == "validation" and validation is not None:
            self._fit_isotonic(validation, run)
        else:
            if self.calibration == "validation":
                log.info("no validation part: calibrating by the training MOS quantiles")
            for column in range(len(self.dimensions)):
                x, y = quantile_knots(training.targets[:, column], CALIBRATION_KNOTS)
                if self.score == "thurstone":
                    x = thurstone_outcomes(x)
                self.calibration_x[column] = torch.from_numpy(x)
                self.calibration_y[column] = torch.from_numpy(y)
        self.calibrated.fill_(True)

    def _fit_isotonic(self, validation: PartData, run: RunDataset) -> None:
        n_rows = len(validation.frame)
        rows = np.arange(n_rows)
        if self.calibration_rows is not None and self.calibration_rows < n_rows:
            pick = np.random.default_rng(self.anchor_seed).choice(
                n_rows, self.calibration_rows, replace=False
            )
            rows = np.sort(pick)
        outputs, out_rows = run(self.anchor_dataset(validation, rows))
        score = self.scores(outputs, out_rows, n_rows)
        for column in range(len(self.dimensions)):
            known = np.isfinite(score[rows, column])
            x, y = monotone_knots(
                score[rows, column][known],
                validation.targets[rows, column][known],
                CALIBRATION_KNOTS,
            )
            self.calibration_x[column] = torch.from_numpy(x)
            self.calibration_y[column] = torch.from_numpy(y)
        log.info("calibrated score -> scale on %d validation images", len(rows))
