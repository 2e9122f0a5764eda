"""The MLLM family in the pipeline: the stand-in kind, configs, models list, bench, real sizes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from snakemake.utils import validate
from typer.testing import CliRunner

from agiqa.cli import app
from agiqa.data.manifest import Dimension
from agiqa.data.synthetic import generate
from agiqa.errors import ConfigError
from agiqa.models import MODELS, build_model
from agiqa.models.mllm.backbone import REAL_SIZES, TINY_NAME, TinySpec, tiny_config, tiny_tokenizer
from agiqa.pipeline import fold_job, model_entry
from agiqa.train.stand_in import PretrainSettings, mllm_turns, pretrain_stand_in

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
MLLM_TYPES = ("mllm_zeroshot", "deqa", "depictqa_compare")
DIMS = (Dimension("quality", "quality", 0.0, 5.0, has_std=True),)
runner = CliRunner()


def load(name: str) -> dict:
    return yaml.safe_load((REPO / "config" / name).read_text())


def mllm_entries(config: dict) -> dict[str, dict]:
    return {n: e for n, e in config["models"].items() if e["type"] in MLLM_TYPES}


def test_demo_config_runs_the_three_on_the_stand_in() -> None:
    config = load("config.yaml")
    validate(config, str(SCHEMA))
    entries = mllm_entries(config)
    assert {e["type"] for e in entries.values()} == set(MLLM_TYPES)
    stand_in = config["pretrained_backbones"]["tiny-mllm-synthetic"]
    assert stand_in["kind"] == "mllm"
    for name, entry in entries.items():
        assert entry["backbone"]["tiny"] == stand_in["mllm"], name
        resolved = fold_job(config, "kfold_grouped", "synthetic", name, 0).model_config
        assert resolved["backbone"]["pretrained"] == "results/demo/backbones/tiny-mllm-synthetic.pt"


def test_paper_presets_are_the_published_recipes() -> None:
    config = load("paper.yaml")
    validate(config, str(SCHEMA))
    models = config["models"]
    deqa = model_entry(config, "deqa")
    assert deqa["backbone"]["name"] == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert deqa["backbone"]["local_files_only"] is True and deqa["backbone"]["cache_dir"]
    assert deqa["backbone"]["dtype"] == "bfloat16" and deqa["backbone"]["gradient_checkpointing"]
    assert deqa["lora"] == {"r": 128, "alpha": 256, "dropout": 0.05} and deqa["train_vision"]
    assert deqa["loss_weights"] == {"rank": 1.0, "next_token": 0.05, "softkl": 1.0}
    train = deqa["train"]
    assert (train["lr"], train["epochs"], train["schedule"], train["warmup_ratio"]) == (
        2.0e-5,
        3,
        "cosine",
        0.03,
    )
    assert train["amp"] == "bf16" and train["batch_size"] == 8 and train["weight_decay"] == 0.0
    small = model_entry(config, "deqa_3b")
    assert small["backbone"]["name"] == "Qwen/Qwen2.5-VL-3B-Instruct"
    assert {k: v for k, v in small.items() if k not in ("backbone", "display_name")} == {
        k: v for k, v in deqa.items() if k not in ("backbone", "display_name")
    }
    assert sorted({e["type"] for e in mllm_entries(config).values()}) == sorted(MLLM_TYPES)
    assert models["depictqa_compare"]["lora"] == {"r": 16, "alpha": 16, "dropout": 0.1}
    # DepictQA's DeepSpeed "Adam" runs in AdamW mode (decoupled decay), betas (0.9, 0.95).
    depictqa_train = models["depictqa_compare"]["train"]
    assert depictqa_train["optimizer"] == "adamw" and depictqa_train["betas"] == [0.9, 0.95]
    assert depictqa_train["weight_decay"] == 1.0e-3 and depictqa_train["lr"] == 2.0e-4
    assert models["depictqa_compare"]["calibration"] == "validation"
    for entry in mllm_entries(config).values():
        assert entry["backbone"]["name"] in REAL_SIZES


def test_models_list_shows_the_three(tmp_path: Path) -> None:
    tiny = {"image_size": 64}
    config = {
        "models": {
            "zs": {"type": "mllm_zeroshot", "backbone": tiny},
            "dq": {"type": "deqa", "backbone": tiny, "lora": {"r": 4, "alpha": 8}},
            "cmp": {"type": "depictqa_compare", "backbone": tiny, "lora": {"r": 4, "alpha": 8}},
        }
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = runner.invoke(app, ["models", "list", "--configfile", str(path)])
    assert result.exit_code == 0, result.output
    rows = {line.split("\t")[0]: line.split("\t") for line in result.output.splitlines()}
    assert rows["zs"][1:4] == ["mllm_zeroshot", f"{TINY_NAME} (random init)", "0"]
    assert int(rows["dq"][3]) > 0 and rows["cmp"][4] == "True"  # reads descriptions
    assert all(name in result.output for name in MLLM_TYPES)


def test_real_sizes_build_without_weights_and_match_the_checkpoints() -> None:
    entry = {
        "type": "deqa",
        "backbone": {"name": "Qwen/Qwen2.5-VL-7B-Instruct", "dtype": "bfloat16"},
    }
    random = MODELS.get("deqa").without_weights(entry)
    assert random["backbone"]["name"] == TINY_NAME and random["backbone"]["dtype"] == "bfloat16"
    config = tiny_config(TinySpec.from_dict(random["backbone"]["tiny"]), tiny_tokenizer())
    text, vision = config.text_config, config.vision_config
    assert (text.hidden_size, text.num_hidden_layers, text.vocab_size) == (3584, 28, 152064)
    assert text.rope_parameters["mrope_section"] == [16, 24, 24]
    assert (vision.depth, vision.hidden_size, vision.out_hidden_size) == (32, 1280, 3584)
    assert vision.window_size == 112 and vision.fullatt_block_indexes == [7, 15, 23, 31]
    with pytest.raises(ConfigError, match="no random-weight sizes"):
        MODELS.get("deqa").without_weights({"type": "deqa", "backbone": {"name": "org/other"}})


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("stand-in") / "tiny-mllm.pt"
    entry = {
        "kind": "mllm",
        "mllm": {},
        "image_size": 64,
        "tasks": ["caption", "quality", "alignment", "compare"],
        "synthesize": {"n_prompts": 4, "images_per_prompt": 2, "image_size": 64, "seed": 100},
        "epochs": 1,
        "batch_size": 8,
        "lr": 1e-3,
    }
    loss = pretrain_stand_in(entry, out)
    assert loss == loss  # finite, not NaN
    return out


def test_mllm_stand_in_loads_through_backbone_pretrained(stand_in: Path) -> None:
    saved = torch.load(stand_in, weights_only=True)
    model = build_model({"type": "mllm_zeroshot", "backbone": {"pretrained": str(stand_in)}}, DIMS)
    state = model.mllm.state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved["state_dict"].items())
    with pytest.raises(ConfigError, match="tiny sizes"):
        build_model(
            {
                "type": "mllm_zeroshot",
                "backbone": {"pretrained": str(stand_in), "tiny": {"layers": 3}},
            },
            DIMS,
        )


def test_mllm_stand_in_turns_name_degradations_levels_and_the_better_image(
    tmp_path: Path,
) -> None:
    generate(tmp_path, n_prompts=3, images_per_prompt=2, image_size=64, seed=100)
    tasks = ("caption", "quality", "compare")
    turns, shown, flags = mllm_turns(tmp_path, 64, (0, 0, 0), tasks, PretrainSettings())
    assert len(turns) == 6 and all(len(mine) == 3 for mine in turns) and flags.shape == (6, 6)
    captions = [mine[0].answer for mine in turns]
    assert all(c == "a clean photo" or c.startswith("a degraded ") for c in captions)
    levels = {mine[1].answer.strip(" .") for mine in turns}
    assert levels <= {"excellent", "good", "fair", "poor", "bad"}
    names = pd.read_csv(tmp_path / "planted.csv")["name"]
    mos = pd.read_csv(tmp_path / "data.csv").set_index("name").loc[names, "mos_quality"].to_numpy()
    for i, mine in enumerate(turns):
        first, second = shown[i][2]
        assert i in (first, second) and len(mine[2].images) == 2
        assert mine[2].answer == (" A." if mos[first] >= mos[second] else " B.")
    with pytest.raises(ConfigError, match="tasks"):
        mllm_turns(tmp_path, 64, (0, 0, 0), ("captions",), PretrainSettings())


def test_bench_runs_on_the_cpu(tmp_path: Path) -> None:
    config = {
        "models": {
            "deqa": {
                "type": "deqa",
                "backbone": {"image_size": 64},
                "lora": {"r": 4, "alpha": 8},
                "train": {"batch_size": 4, "eval_batch_size": 16},
            }
        }
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    args = [
        "bench",
        "--model",
        "deqa",
        "--configfile",
        str(path),
        "--images",
        "20",
        "--repeats",
        "1",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    names = ("train reference", "train ours", "score reference", "score ours (batch 16)")
    assert all(any(line.startswith(name) for line in lines) for name in names)
    assert "peak GPU memory n/a" in result.output
    assert lines[-2].startswith("train ratio") and lines[-1].startswith("score ratio")
