"""agiqa: a reproducible benchmark pipeline for AI-generated image quality assessment."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agiqa.scoring import Scorer

__version__ = "0.1.0"


def load(
    checkpoint: str | Path,
    device: str = "auto",
    weights_dir: str | Path | None = None,
    batch_size: int | None = None,
) -> Scorer:
    """A scorer for new images, used like a pyiqa metric.

    ``scorer = agiqa.load(path)``; ``scorer(images, prompts)`` gives a tensor of scores, one
    column per dimension (``scorer.dimension_names``, ranges in ``scorer.score_range``, direction
    in ``scorer.lower_better``); ``scorer.score(images, prompts)`` gives a table with the image
    names. Images are paths, PIL images, tensors or numpy arrays, one or a batch.

    ``checkpoint`` is a fold's ``checkpoint.pt``, its run folder, or a protocol's model folder
    (``results/<experiment>/runs/<protocol>/<dataset>/<model>``), whose folds are averaged.
    ``device="auto"`` takes a GPU when torch sees one. See agiqa.scoring.load for the
    arguments; torch is imported on first use only, so ``import agiqa`` stays light.
    """
    from agiqa.scoring import load as load_scorer

    return load_scorer(checkpoint, device=device, weights_dir=weights_dir, batch_size=batch_size)


__all__ = ["__version__", "load"]
