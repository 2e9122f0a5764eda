"""A reduced real-data study: the ImageNet MobileNetV2 probe on the real AGIQA-3K images.

It reads a subset of the real dataset in place through per-file symbolic links (the way DVC's
symlink cache lays a dataset out), trains the frozen-feature probe on one prompt-grouped fold
and asserts a held-out quality SRCC well above chance. CI has the dataset and the weights
package: there this test fails instead of skipping when either is missing.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from agiqa.data.readers import read_dataset
from agiqa.data.splits import Protocol, make_splits, write_splits
from agiqa.train.fold import FoldJob, run_fold
from shared_data import AGIQA_3K, need
from test_weights import hub, packaged, seeded  # noqa: F401

pytestmark = pytest.mark.usefixtures("no_network")

#: The first prompts of data.csv (about 10 images each, from the 6 generators): 1,489 images,
#: half of the dataset.
N_PROMPTS = 150
PROBE = {
    "type": "imagenet_probe",
    "backbone": {"source": "torchvision", "name": "mobilenet_v2", "weights": "IMAGENET1K_V1"},
    "freeze": True,
    "hidden": 256,
    "dropout": 0.1,
    "dimensions": ["quality"],
    "train": {"epochs": 25, "batch_size": 32, "lr": 1.0e-3, "patience": 8},
}


def linked_subset(root: Path, n_prompts: int) -> Path:
    """data.csv rows of the first prompts (every generator's image of each), each image a
    symbolic link to the real file."""
    with (AGIQA_3K / "data.csv").open(newline="", encoding="utf-8-sig") as handle:
        every = list(csv.DictReader(handle))
    kept = set(list(dict.fromkeys(row["prompt"] for row in every))[:n_prompts])
    rows = [row for row in every if row["prompt"] in kept]
    root.mkdir()
    with (root / "data.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for row in rows:
        (root / row["name"]).symlink_to(AGIQA_3K / row["name"])
    return root


@pytest.mark.slow
def test_mobilenet_probe_learns_quality_on_real_agiqa3k(
    tmp_path: Path,
    seeded: Path,  # noqa: F811 - the real weights, in a temporary torch hub cache
) -> None:
    need(AGIQA_3K.is_dir(), f"the real AGIQA-3K is not at {AGIQA_3K}")
    root = linked_subset(tmp_path / "agiqa-3k", N_PROMPTS)
    manifest = read_dataset("agiqa-3k", root, dataset="agiqa-3k")
    assert manifest.frame["prompt_group"].nunique() == N_PROMPTS
    manifest.save(tmp_path / "manifest.csv")
    protocol = Protocol(type="kfold_grouped", folds=2, val_fraction=0.1)
    write_splits(make_splits(manifest.labelled(), protocol), tmp_path / "splits.csv")
    metrics = run_fold(
        FoldJob(
            dataset="agiqa-3k",
            root=str(root),
            manifest=str(tmp_path / "manifest.csv"),
            splits=str(tmp_path / "splits.csv"),
            split=0,
            protocol=protocol.type,
            protocol_settings=protocol.settings(),
            model_name="mobilenet_probe",
            model_config=PROBE,
            out_dir=str(tmp_path / "run"),
            threads=2,
            device="cpu",
            feature_cache_dir=str(tmp_path / "features"),
            # the links point into the shared dataset, outside the temporary root
            allowed_link_roots=(str(AGIQA_3K),),
        )
    )
    assert metrics["n_test"] > 700
    assert metrics["test"]["quality"]["srcc"] > THRESHOLD


#: Measured held-out quality SRCC of this setting (split seeds 0, 1, 2 x folds 0, 1): 0.680,
#: 0.661, 0.702, 0.684, 0.692, 0.715; chance is 0 +- 0.04 on ~745 test images. The test runs seed
#: 0 fold 0 (0.680) and asserts 0.55: 0.11 below the lowest measured value, 15 standard
#: deviations above chance.
THRESHOLD = 0.55
