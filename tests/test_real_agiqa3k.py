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
from agiqa.weights import WeightsUnavailableError, packaged_model_folder
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
PROTOCOL = Protocol(type="kfold_grouped", folds=2, val_fraction=0.1)


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


@pytest.fixture(scope="module")
def subset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The linked subset, its manifest and 2-fold grouped splits (seed 0); features are cached
    under it, so the second model reuses the first one's MobileNetV2 features."""
    need(AGIQA_3K.is_dir(), f"the real AGIQA-3K is not at {AGIQA_3K}")
    base = tmp_path_factory.mktemp("real")
    root = linked_subset(base / "agiqa-3k", N_PROMPTS)
    manifest = read_dataset("agiqa-3k", root, dataset="agiqa-3k")
    assert manifest.frame["prompt_group"].nunique() == N_PROMPTS
    manifest.save(base / "manifest.csv")
    write_splits(make_splits(manifest.labelled(), PROTOCOL), base / "splits.csv")
    return base


def run_on_subset(base: Path, name: str, config: dict) -> dict:
    return run_fold(
        FoldJob(
            dataset="agiqa-3k",
            root=str(base / "agiqa-3k"),
            manifest=str(base / "manifest.csv"),
            splits=str(base / "splits.csv"),
            split=0,
            protocol=PROTOCOL.type,
            protocol_settings=PROTOCOL.settings(),
            model_name=name,
            model_config=config,
            out_dir=str(base / name),
            threads=2,
            device="cpu",
            feature_cache_dir=str(base / "features"),
            # the links point into the shared dataset, outside the temporary root
            allowed_link_roots=(str(AGIQA_3K),),
        )
    )


@pytest.mark.slow
def test_mobilenet_probe_learns_quality_on_real_agiqa3k(
    subset: Path,
    seeded: Path,  # noqa: F811 - the real weights, in a temporary torch hub cache
) -> None:
    metrics = run_on_subset(subset, "mobilenet_probe", PROBE)
    assert metrics["n_test"] > 700
    assert metrics["test"]["quality"]["srcc"] > THRESHOLD


#: Measured held-out quality SRCC of this setting (split seeds 0, 1, 2 x folds 0, 1): 0.680,
#: 0.661, 0.702, 0.684, 0.692, 0.715; chance is 0 +- 0.04 on ~745 test images. The test runs seed
#: 0 fold 0 (0.680) and asserts 0.55: 0.11 below the lowest measured value, 15 standard
#: deviations above chance.
THRESHOLD = 0.55

#: The study's mobilenet_minilm: the ridge probe on MobileNetV2 features and the real
#: all-MiniLM-L6-v2 embedding of the prompt.
MINILM_RIDGE = {
    "type": "imagenet_probe",
    "backbone": {"source": "torchvision", "name": "mobilenet_v2", "weights": "IMAGENET1K_V1"},
    "freeze": True,
    "prompt_encoder": {"type": "sentence", "model": "all-MiniLM-L6-v2"},
    "head": "ridge",
}
#: Measured held-out SRCC of MINILM_RIDGE (split seeds 0, 1, 2 x folds 0, 1): alignment 0.557,
#: 0.530, 0.539, 0.547, 0.577, 0.527; quality 0.707, 0.676, 0.698, 0.707, 0.725, 0.709. The test
#: runs seed 0 fold 0 and asserts 0.45 (alignment) and 0.55 (quality), 0.08 and 0.13 below the
#: lowest of each; chance is 0 +- 0.04.
ALIGN_THRESHOLD = 0.45
QUALITY_THRESHOLD = 0.55


@pytest.mark.slow
def test_ridge_probe_with_minilm_learns_alignment_on_real_agiqa3k(
    subset: Path,
    seeded: Path,  # noqa: F811
) -> None:
    try:
        packaged_model_folder()
    except WeightsUnavailableError as error:
        need(False, str(error))
    metrics = run_on_subset(subset, "mobilenet_minilm", MINILM_RIDGE)
    assert metrics["epochs_run"] == 0  # closed form
    assert metrics["test"]["align"]["srcc"] > ALIGN_THRESHOLD
    assert metrics["test"]["quality"]["srcc"] > QUALITY_THRESHOLD
