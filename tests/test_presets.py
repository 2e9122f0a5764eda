"""Per-dataset presets: a model entry's ``per_dataset`` settings reach that dataset's fold jobs."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from agiqa.errors import ConfigError
from agiqa.models.scva import Scva
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
        # methods.md 9.1: quality only (AIGIQA-20K's single score), AdamW without decay on
        # biases and 1-D parameters, 3 warmup epochs, x0.1 every 3 epochs, fp16, no clipping.
        assert entry["dimensions"] == (["overall"] if dataset == "aigiqa-20k" else ["quality"])
        assert entry.get("resize_below") == (500 if dataset == "aigiqa-20k" else None)
        assert (train["optimizer"], train["no_decay"], train["warmup_epochs"]) == ("adamw", True, 3)
        assert (train["schedule"], train["gamma"], train["milestones"][:3]) == (
            "step",
            0.1,
            [3, 6, 9],
        )
        assert (train["grad_clip"], train["amp"]) == (0.0, "fp16")
        assert entry["crop_training"] == "per_crop" and entry["csf_pooling"] == "published"
        assert entry["loss_beta"] == 1.0
        # The published backbones: ImageReward-v1.0's BLIP and timm's pinned ViT-B/16 weights.
        assert entry["blip"]["source"] == "imagereward"
        assert entry["vit"]["name"] == "vit_base_patch16_224.augreg_in21k_ft_in1k"


def test_paper_dcmpln_preset_is_the_proxys_recipe() -> None:
    """methods.md 9.2: Adam, constant lr 1e-4, batch 64, 50 epochs, patience 15, native crops."""
    config = paper()
    entry = fold_job(config, "kfold_grouped", "agiqa-3k", "dcmpln", 0).model_config
    train = entry["train"]
    assert (train["optimizer"], train["schedule"], train["lr"]) == ("adam", "constant", 1e-4)
    assert (train["batch_size"], train["epochs"], train["patience"]) == (64, 50, 15)
    assert (train["weight_decay"], train["warmup_ratio"], train["grad_clip"]) == (0.0, 0.0, 0.0)
    assert "decode_cache_short_side" in train and train["decode_cache_short_side"] is None
    assert (entry["visual_prompt_sets"], entry["input_transform"]) == (2, "native_crops")
    assert (entry["test_stride"], entry["normalisation"]) == (64, "imagenet")
    assert entry["alignment_classes"] == ["aligned photo", "misaligned photo"]
    aigciqa = fold_job(config, "kfold_grouped", "aigciqa2023", "dcmpln", 0).model_config
    assert aigciqa["dimensions"] == ["quality", "correspondence"]


def test_paper_qiyan_presets_are_the_published_script_defaults() -> None:
    """methods.md 3.4: AdamW on all parameters, lr 3e-5, cosine 5% warmup, clip 1, fp32."""
    for name, freeze in (("clip_residual", "partial"), ("clip_linear_probe", "full")):
        entry = model_entry(paper(), name)
        train = entry["train"]
        assert entry["freeze"]["mode"] == freeze
        assert (train["optimizer"], train["lr"], train["weight_decay"]) == ("adamw", 3e-5, 1e-4)
        assert (train["no_decay"], train["schedule"], train["warmup_ratio"]) == (
            False,
            "cosine",
            0.05,
        )
        assert (train["grad_clip"], train["amp"], train["epochs"], train["batch_size"]) == (
            1.0,
            "off",
            20,
            32,
        )
        assert train["patience"] >= train["epochs"]  # the best of all 20 epochs is kept


def test_paper_backbones_load_offline() -> None:
    """No fold job retries the hub: every backbone fails at once when its weights are missing."""
    models = paper()["models"]
    for name in ("clip_residual", "clip_linear_probe", "dcmpln", "clip_zeroshot"):
        assert models[name]["backbone"]["offline"] is True, name
    assert models["scva"]["vit"]["offline"] is True
    blip = models["scva"]["blip"]  # local files only: a checkpoint and a tokenizer folder
    assert blip["checkpoint"].endswith("ImageReward.pt") and Path(blip["tokenizer"]).name


def test_ablation_config_validates_and_toggles_the_fidelity_switches() -> None:
    config = yaml.safe_load((REPO / "config" / "ablations.yaml").read_text())
    validate(config, str(SCHEMA))
    models = config["models"]
    settings = {
        (m["type"], key, str(m.get(key)))
        for m in models.values()
        for key in ("crop_training", "csf_pooling", "visual_prompt_sets")
        if key in m
    }
    assert {
        ("scva", "crop_training", "per_crop"),
        ("scva", "crop_training", "averaged"),
    } <= settings
    assert {
        ("scva", "csf_pooling", "published"),
        ("scva", "csf_pooling", "weighted_mean"),
    } <= settings
    assert {
        ("dcmpln", "visual_prompt_sets", "1"),
        ("dcmpln", "visual_prompt_sets", "2"),
    } <= settings
    assert set(config["datasets"]) == {"synthetic"}  # runs on the demo data


# Each SCVA head difference from the published code: (setting, published, earlier variant).
SCVA_HEAD_SWITCHES = [
    ("normalisation", "swapped", "matched"),
    ("token_alignment", "hungarian", "soft"),
    ("consistency_pooling", "linear", "attention"),
    ("description_attention", "published", "masked"),
    ("fusion", "published", "offset"),
    ("shared_attention", "cross", "self"),
    ("dropout", 0.0, 0.1),
]


def test_ablations_switch_each_scva_head_difference_alone() -> None:
    models = yaml.safe_load((REPO / "config" / "ablations.yaml").read_text())["models"]
    published = models["scva"]
    for key, value, _ in SCVA_HEAD_SWITCHES:
        assert published[key] == value, key
    for key, _, variant in SCVA_HEAD_SWITCHES:
        single = [
            m for m in models.values()
            if m["type"] == "scva" and m.get(key) == variant
            and all(m.get(k) == v for k, v, _ in SCVA_HEAD_SWITCHES if k != key)
        ]  # fmt: skip
        assert single, f"no ablation entry switches only {key} to {variant!r}"
        differing = {k for k in published if single[0].get(k) != published[k]}
        assert differing == {key}, (key, differing)


def test_paper_scva_is_the_published_head() -> None:
    entry = model_entry(paper(), "scva", "agiqa-3k")
    for key, value, _ in SCVA_HEAD_SWITCHES:
        assert entry[key] == value, key
    assert model_entry(paper(), "scva", "aigiqa-20k")["normalisation"] == "imagenet"
    # The model's own defaults are the published head too.
    defaults = inspect.signature(Scva).parameters
    for key, value, _ in SCVA_HEAD_SWITCHES:
        assert defaults[key].default == value, key


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
