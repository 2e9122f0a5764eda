"""The describe stage's table reaches a description-reading model through the fold job."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from agiqa.models.scva import Scva
from agiqa.train.fold import run_fold
from test_train import job, prepare

TINY_SCVA = {
    "type": "scva",
    "blip": {"source": "config"},
    "dim": 32,
    "neck_channels": 32,
    "expert_hidden": 32,
    "shared_dim": 16,
    "max_length": 16,
    "test_crops": 2,
    "train": {"epochs": 1, "batch_size": 8, "lr": 1e-3, "decode_cache_short_side": None},
}


def test_descriptions_table_feeds_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = prepare(tmp_path, n_prompts=8)
    manifest = pd.read_csv(paths[1])
    table = tmp_path / "descriptions.csv"
    texts = {image: f"described {i}" for i, image in enumerate(manifest["image"])}
    failed = manifest["image"].iloc[0]
    pd.DataFrame(
        {
            "image": list(texts),
            "description": ["" if image == failed else text for image, text in texts.items()],
            "status": ["failed" if image == failed else "described" for image in texts],
        }
    ).to_csv(table, index=False)
    seen: list[list[str]] = []
    original = Scva.tokenize

    def spy(self, prompts, descriptions=None):
        seen.append(list(descriptions))
        return original(self, prompts, descriptions)

    monkeypatch.setattr(Scva, "tokenize", spy)
    fold = job(tmp_path, paths, TINY_SCVA)
    object.__setattr__(fold, "descriptions", str(table))
    metrics = run_fold(fold)
    given = {text for texts_of_part in seen for text in texts_of_part}
    assert given - {""} <= set(texts.values()) and len(given - {""}) == len(texts) - 1
    assert "" in given  # the failed row falls back to no description
    assert set(metrics["test"]) == {"quality", "align"}
