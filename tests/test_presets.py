"""Per-dataset presets: a model entry's ``per_dataset`` settings reach that dataset's fold jobs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from agiqa.errors import ConfigError
from agiqa.pipeline import fold_job, model_entry

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def paper() -> dict:
    return yaml.safe_load((REPO / "config" / "paper.yaml").read_text())


def config_with(preset: dict) -> dict:
    return {
        "datasets": {
            "a": {"reader": "agiqa-3k", "root": "data/a"},
            "b": {"reader": "agiqa-1k", "root": "data/b"},
        },
        "protocols": {"kfold_grouped": {"type": "kfold_grouped"}},
        "models": {
            "m": {
                "type": "clip_residual",
                "dropout": 0.1,
                "train": {"epochs": 3, "batch_size": 8, "lr": 1e-3},
                "per_dataset": preset,
            }
        },
    }


def test_preset_merges_over_the_entry_key_by_key() -> None:
    config = config_with({"a": {"dropout": 0.3, "train": {"batch_size": 4}}})
    entry = model_entry(config, "m", "a")
    assert entry["dropout"] == 0.3
    assert entry["train"] == {"epochs": 3, "batch_size": 4, "lr": 1e-3}
    assert "per_dataset" not in entry
    # Another dataset, or no dataset, gets the entry as written.
    for other in (model_entry(config, "m", "b"), model_entry(config, "m")):
        assert other["dropout"] == 0.1 and other["train"]["batch_size"] == 8
    # The config itself is untouched.
    assert config["models"]["m"]["train"]["batch_size"] == 8


def test_fold_job_carries_the_dataset_preset() -> None:
    config = config_with({"b": {"train": {"lr": 5e-6}}})
    assert fold_job(config, "kfold_grouped", "b", "m", 0).model_config["train"]["lr"] == 5e-6
    assert fold_job(config, "kfold_grouped", "a", "m", 0).model_config["train"]["lr"] == 1e-3


@pytest.mark.parametrize("preset", [{"a": {"type": "dcmpln"}}, {"a": 3}, ["a"]])
def test_bad_presets_are_refused(preset: object) -> None:
    with pytest.raises(ConfigError, match="per_dataset"):
        model_entry(config_with(preset), "m", "a")  # type: ignore[arg-type]


def test_schema_accepts_presets_and_refuses_a_type_change() -> None:
    validate(config_with({"a": {"train": {"batch_size": 4}}}), str(SCHEMA))
    with pytest.raises(Exception, match=r"per_dataset|type"):
        validate(config_with({"a": {"type": "dcmpln"}}), str(SCHEMA))


def test_paper_scva_presets_are_the_published_settings() -> None:
    """methods.md 1.2/1.4: batch 4/8/12/32, lr 1e-5 (20K 5e-6), wd 0.05 (20K 0.001), crops."""
    config = paper()
    validate(config, str(SCHEMA))
    expected = {
        "agiqa-1k": (4, 1e-5, 0.05, 2, 12),
        "agiqa-3k": (8, 1e-5, 0.05, 3, 15),
        "aigciqa2023": (12, 1e-5, 0.05, 3, 15),
        "aigiqa-20k": (32, 5e-6, 0.001, 7, 15),
    }
    for dataset, (batch, lr, decay, train_crops, test_crops) in expected.items():
        entry = fold_job(config, "kfold_grouped", dataset, "scva", 0).model_config
        train = entry["train"]
        assert (train["batch_size"], train["lr"], train["weight_decay"]) == (batch, lr, decay)
        assert (entry["train_crops"], entry["test_crops"]) == (train_crops, test_crops)


def test_stand_in_backbone_names_resolve_to_their_checkpoint() -> None:
    config = config_with({"a": {"backbone": {"pretrained": "openai"}}})
    config["models"]["m"]["backbone"] = {"arch": "agiqa-tiny-clip", "pretrained": "toy"}
    config["pretrained_backbones"] = {
        "toy": {
            "arch": "agiqa-tiny-clip",
            "synthesize": {"n_prompts": 8, "images_per_prompt": 2, "image_size": 64, "seed": 9},
            "epochs": 1,
            "batch_size": 8,
            "lr": 1e-3,
        }
    }
    validate(config, str(SCHEMA))
    entry = fold_job(config, "kfold_grouped", "b", "m", 0).model_config
    assert entry["backbone"]["pretrained"] == "results/agiqa/backbones/toy.pt"
    # A real pretrained tag (here from dataset a's preset) is left for open_clip.
    entry = fold_job(config, "kfold_grouped", "a", "m", 0).model_config
    assert entry["backbone"]["pretrained"] == "openai"
