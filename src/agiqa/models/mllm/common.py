"""What the three multimodal-LLM models share: samples, batching, answer-token forward passes.

A *sample* is one chat turn (images, question, answer stem) about one row of a part and one
rated dimension (its *column*), plus the token ids read after the stem (the *choices*: the five
level words, or A/B). ``collate`` renders the turns with the processor's chat template, lets the
processor pack images and text (left padding), and for training marks the answer tokens:

- the choice token gets the model's own loss (KL to a soft label, soft cross-entropy to a
  preference), computed from the full-vocabulary log-probabilities ``forward_batch`` returns;
- every other token of the assistant message (stem, closing text, end-of-turn) gets next-token
  cross-entropy, returned per sample as the last output column.

Only the logits the loss needs are computed (``logits_to_keep``): at evaluation the last position
only, which keeps scoring memory independent of the vocabulary times the sequence length.

Evaluation outputs are one row per sample with the sample's column filled and NaN elsewhere;
``rows_mean`` averages them per part row, so a model can score one row with several samples
(dimensions, anchors, orders).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from agiqa.data.manifest import Dimension
from agiqa.errors import ConfigError
from agiqa.models.base import AgiqaModel, PartData
from agiqa.models.mllm.backbone import (
    TINY_NAME,
    BackboneSpec,
    LoraSpec,
    Prompter,
    TinySpec,
    Turn,
    add_lora,
    freeze,
    load_backbone,
    square,
    trainable_dtype_report,
    without_weights,
)

log = logging.getLogger(__name__)

IGNORE = -100


@dataclass(frozen=True)
class SquareResize:
    """Pad to a square with the processor's mean colour, then resize (bicubic)."""

    size: int
    fill: tuple[int, int, int]

    def __call__(self, image: Image.Image) -> Image.Image:
        return square(image, self.size, self.fill)


@dataclass
class Sample:
    """One chat turn about one row and one dimension column."""

    row: int
    column: int
    turn: Turn
    #: Token ids read after the stem (level words, or A/B).
    choices: tuple[int, ...]
    #: Training only: index into ``choices`` of the word ``turn.answer`` starts with.
    answer: int | None = None
    #: Training only: per-sample targets, stacked by ``collate`` (floats or float arrays).
    target: dict[str, Any] = field(default_factory=dict)


class PlanDataset(Dataset):
    """Samples built lazily from small plans (row and column indices), one per item."""

    def __init__(self, plans: Sequence[Any], build: Callable[[Any], Any]) -> None:
        self.plans = list(plans)
        self.build = build

    def __len__(self) -> int:
        return len(self.plans)

    def __getitem__(self, index: int) -> Any:
        return self.build(self.plans[index])


class PartImages:
    """A part's images, decoded once if the trainer cached them, through the model's transform."""

    def __init__(self, data: PartData, transform: Callable[[Image.Image], Image.Image]) -> None:
        self.data = data
        self.transform = transform

    def __getitem__(self, row: int) -> Image.Image:
        decoded = self.data.decoded
        image = decoded[row] if decoded is not None else self.data.images.load(row)
        return self.transform(image)


def training_part(data: PartData) -> PartData | None:
    """The split's training part: ``data.training``, or ``data`` when it is the train part."""
    if data.training is not None:
        return data.training
    return data if data.name == "train" else None


def spread(values: torch.Tensor, columns: torch.Tensor, n_columns: int) -> torch.Tensor:
    """[B, k] values into [B, n_columns * k], at each sample's column block, NaN elsewhere."""
    batch, width = values.shape
    out = values.new_full((batch, n_columns, width), float("nan"))
    out[torch.arange(batch, device=values.device), columns] = values
    return out.reshape(batch, n_columns * width)


def rows_mean(outputs: np.ndarray, rows: np.ndarray, n_rows: int, width: int) -> np.ndarray:
    """Mean of the non-NaN per-sample outputs of each row: [n_rows, n_columns, width]."""
    values = outputs.reshape(len(outputs), -1, width).astype(np.float64)
    present = np.isfinite(values)
    total = np.zeros((n_rows, *values.shape[1:]))
    count = np.zeros_like(total)
    np.add.at(total, rows, np.where(present, values, 0.0))
    np.add.at(count, rows, present)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / count


def format_question(template: str, prompt: str) -> str:
    # str.replace, not str.format: generation prompts may contain braces.
    return template.replace("{prompt}", prompt)


class MllmModel(AgiqaModel):
    """A native transformers MLLM, optionally with LoRA adapters, asked one question per sample.

    Args:
        dimensions: The dataset's rated dimensions.
        backbone: ``BackboneSpec`` keys (``name``, ``cache_dir``, ``local_files_only``, ...).
        lora: ``{r, alpha, dropout}`` to add LoRA adapters to the language model's linear
            layers; None freezes the whole model.
        train_vision: With LoRA, also train the vision tower (and a separate projector).
    """

    uses_gpu = True
    #: The default backbone (``agiqa models list`` shows it when an entry names none).
    backbone_name = TINY_NAME

    def __init__(
        self,
        dimensions: Sequence[Dimension],
        backbone: Mapping[str, Any] | None = None,
        lora: Mapping[str, Any] | None = None,
        train_vision: bool = False,
    ) -> None:
        super().__init__(dimensions)
        spec = BackboneSpec.from_dict(backbone)
        loaded = load_backbone(spec)
        self.spec = spec
        self.processor = loaded.processor
        self.prompter = Prompter(loaded.processor, spec.chat_template_kwargs)
        self.transform = SquareResize(spec.image_size, loaded.fill_colour)
        self.backbone_name = spec.description
        if lora is None:
            if train_vision:
                raise ConfigError("train_vision needs lora: the model trains adapters or nothing")
            freeze(loaded.model)
            self.mllm = loaded.model
        else:
            self.mllm = add_lora(loaded.model, LoraSpec.from_dict(lora), bool(train_vision))
            log.info("trainable parameters by dtype: %s", trainable_dtype_report(self.mllm))

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any]) -> None:
        super().check_settings(settings)
        spec = BackboneSpec.from_dict(settings.get("backbone"))
        if spec.is_tiny:
            TinySpec.from_dict(spec.tiny)
        if settings.get("lora") is not None:
            LoraSpec.from_dict(settings["lora"])
        if not isinstance(settings.get("train_vision", False), bool):
            raise ConfigError(
                f"train_vision must be true or false; got {settings['train_vision']!r}"
            )
        if settings.get("train_vision") and settings.get("lora") is None:
            raise ConfigError("train_vision needs lora: the model trains adapters or nothing")

    @classmethod
    def without_weights(cls, entry: dict[str, Any]) -> dict[str, Any]:
        """The entry built with random weights at the same size (``models list --no-weights``,
        ``bench-gpu``): see ``backbone.without_weights``."""
        return {**entry, "backbone": without_weights(entry.get("backbone"))}

    # --- the AgiqaModel contract ---------------------------------------------------------------

    def image_transform(self, train: bool) -> Callable[[Image.Image], Image.Image]:
        # DeQA-Score and Q-Align pad and resize, with no augmentation in training.
        return self.transform

    def tokenize(
        self, prompts: Sequence[str], descriptions: Sequence[str] | None = None
    ) -> torch.Tensor:
        raise NotImplementedError(
            f"{type(self).__name__} renders chat turns in collate; it has no prompt tokens"
        )

    def images_of(self, data: PartData) -> PartImages:
        return PartImages(data, self.transform)

    def choice_ids(self, stem: str, words: Sequence[str]) -> tuple[int, ...]:
        """Token ids of ``words`` after ``stem``; ConfigError if one is not a single token."""
        ids = tuple(self.prompter.continuation_id(stem, word) for word in words)
        if len(set(ids)) != len(ids):
            raise ConfigError(f"answer words {list(words)} share a token after {stem!r}")
        return ids

    # --- batches -------------------------------------------------------------------------------

    def encode(self, turns: Sequence[Turn], with_answers: bool) -> dict[str, torch.Tensor]:
        return encode_turns(self.processor, self.prompter, turns, with_answers)

    def collate(self, samples: list[Sample]) -> tuple[dict[str, Any], Any, torch.Tensor]:
        """Samples -> (inputs, targets, rows); training samples (with answers) get labels."""
        training = samples[0].answer is not None
        inputs: dict[str, Any] = {
            "model": self.encode([s.turn for s in samples], with_answers=training),
            "columns": torch.tensor([s.column for s in samples]),
            "choices": torch.tensor([s.choices for s in samples]),
        }
        if training:
            inputs.update(self.answer_labels(samples, inputs["model"]["input_ids"]))
        targets = stack_targets(samples)
        return inputs, targets, torch.tensor([s.row for s in samples])

    def answer_labels(
        self, samples: Sequence[Sample], input_ids: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Next-token labels of the assistant messages, the choice positions, logits to keep."""
        labels, starts = message_labels(self.prompter, [s.turn for s in samples], input_ids)
        positions = []
        for row, sample in enumerate(samples):
            assert sample.answer is not None
            position = int(starts[row]) + len(self.prompter.ids(sample.turn.stem))
            if int(input_ids[row, position]) != sample.choices[sample.answer]:
                raise ConfigError(
                    f"the answer word of {sample.turn.answer!r} is not one token right after the "
                    f"stem {sample.turn.stem!r} inside the chat turn"
                )
            labels[row, position] = IGNORE  # the choice token gets the model's own loss
            positions.append(position)
        longest = labels.shape[1] - int(starts.min())
        return {
            "labels": labels,
            "choice_positions": torch.tensor(positions),
            "keep": torch.tensor(longest + 1),
        }

    # --- forward passes ------------------------------------------------------------------------

    def choice_probabilities(self, inputs: Mapping[str, Any]) -> torch.Tensor:
        """[B, n_choices]: softmax over the choice tokens only, at the position after the stem."""
        out = self.mllm(**inputs["model"], use_cache=False, logits_to_keep=1)
        logits = out.logits[:, -1].float()
        return logits.gather(1, inputs["choices"]).softmax(dim=-1)

    def answer_outputs(self, inputs: Mapping[str, Any]) -> torch.Tensor:
        """[B, n_choices + 2]: full-vocabulary log-probabilities of the choices at the choice
        position, then the summed cross-entropy of the message's other tokens and their count
        (``token_mean`` averages over all of a batch's tokens)."""
        labels = inputs["labels"]
        keep = int(inputs["keep"])
        start = labels.shape[1] - keep
        out = self.mllm(**inputs["model"], use_cache=False, logits_to_keep=keep)
        logits = out.logits.float()  # positions start .. L-1
        predicted = labels[:, start + 1 :]
        per_token = F.cross_entropy(
            logits[:, :-1].transpose(1, 2), predicted, ignore_index=IGNORE, reduction="none"
        )
        counted = (predicted != IGNORE).sum(dim=1).to(per_token.dtype)
        batch = torch.arange(len(labels), device=labels.device)
        at_choice = logits[batch, inputs["choice_positions"] - 1 - start].log_softmax(dim=-1)
        chosen = at_choice.gather(1, inputs["choices"])
        return torch.cat([chosen, per_token.sum(dim=1)[:, None], counted[:, None]], dim=1)


def token_mean(summed: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over every counted token of a batch, not per sample first.

    A causal LM's loss (DeQA-Score's and DepictQA's ``CrossEntropyLoss`` over the shifted
    labels) weighs each answer token equally, so a longer answer weighs more; the mean of
    per-sample means is the same only when every answer has the same length.
    """
    return summed.sum() / counts.sum().clamp(min=1)


def encode_turns(
    processor: Any, prompter: Prompter, turns: Sequence[Turn], with_answers: bool
) -> dict[str, torch.Tensor]:
    """Processor outputs for the turns (left-padded), with or without their answers."""
    render = prompter.full if with_answers else prompter.prefix
    encoded = processor(
        text=[render(turn) for turn in turns],
        images=[list(turn.images) for turn in turns],
        return_tensors="pt",
        padding=True,
    )
    return dict(encoded)


def message_labels(
    prompter: Prompter, turns: Sequence[Turn], input_ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token labels of each assistant message (stem, answer, end of turn) and its start.

    With left padding every message ends in the last column, so its tokens are the tail of the
    row; the tail is checked against the message tokenised on its own.
    """
    length = input_ids.shape[1]
    labels = torch.full_like(input_ids, IGNORE)
    starts = []
    for row, turn in enumerate(turns):
        message = prompter.ids(turn.stem + (turn.answer or "") + prompter.end_of_turn)
        start = length - len(message)
        if input_ids[row, start:].tolist() != message:
            raise ConfigError(
                "the answer does not tokenize the same inside the chat turn as on its own "
                f"({turn.stem + (turn.answer or '')!r}); use a stem and answer words that split "
                "at spaces for this tokenizer"
            )
        labels[row, start:] = torch.tensor(message)
        starts.append(start)
    return labels, torch.tensor(starts)


def stack_targets(samples: Sequence[Sample]) -> dict[str, torch.Tensor] | torch.Tensor:
    """Per-sample targets stacked into tensors (a zero vector when samples carry none)."""
    if not samples[0].target:
        return torch.zeros(len(samples))
    return {
        key: torch.tensor(np.array([s.target[key] for s in samples]), dtype=torch.float32)
        for key in samples[0].target
    }
