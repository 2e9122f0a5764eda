"""The paper rehearsal's parts (tests/rehearsal/): the overlay rule, the official dataset layouts,
the local model hub's fetch -> cache -> offline load, and the no-network guard.

``make rehearse`` runs the whole thing (config/paper.yaml end to end); these tests keep its
parts honest in ``make test``.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image
from snakemake.utils import validate

from agiqa.config_checks import check_config
from agiqa.data.manifest import IMAGES_PER_GROUP, limit_images
from agiqa.data.readers import read_dataset
from agiqa.errors import ConfigError, DataError
from agiqa.steps import verify_dataset
from rehearsal import datasets, hub, overlay
from rehearsal.servers import static_server
from shared_data import FIXTURES, need

REPO = Path(__file__).resolve().parents[1]
PAPER = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
REHEARSAL = yaml.safe_load((REPO / "config" / "paper-rehearsal.yaml").read_text())
#: The rehearsal's images per dataset (its overlay's max_images).
LIMITS = {name: entry.get("max_images") for name, entry in REHEARSAL["datasets"].items()}
BIN = Path(sys.executable).parent


# --- the overlay: amounts and locations only ---------------------------------------------------


@pytest.mark.parametrize("name", ["paper-rehearsal.yaml", "paper-rehearsal-gpu.yaml"])
def test_the_shipped_overlays_change_only_amounts_and_locations(name: str) -> None:
    rehearsal = yaml.safe_load((REPO / "config" / name).read_text())
    assert overlay.problems(PAPER, rehearsal) == []
    merged = overlay.merged(PAPER, rehearsal)
    validated = copy.deepcopy(merged)  # validation fills in the schema's defaults
    validate(validated, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    check_config(validated)
    # every leaf that differs from the paper's is one of the rule's amounts or locations
    changed = _leaves(merged).items() ^ _leaves(PAPER).items()
    assert changed
    for path, _ in changed:
        assert any(overlay._matches(path, pattern) for pattern in overlay.ALLOWED), path


def _leaves(config: dict) -> dict[tuple[str, ...], str]:
    return {path: repr(_get(config, path)) for path in overlay.key_paths(config)}


def _get(config: dict, path: tuple[str, ...]) -> object:
    for key in path:
        config = config[key]
    return config


FORBIDDEN = {
    "a backbone": {"models": {"clip_residual": {"backbone": {"arch": "ViT-B-32"}}}},
    "offline": {"models": {"scva": {"vit": {"offline": False}}}},
    "an MLLM's weights": {"models": {"deqa": {"backbone": {"name": "tiny-qwen2.5-vl"}}}},
    "a recipe": {"models": {"dcmpln": {"train": {"lr": 1.0e-3}}}},
    "a method setting": {"models": {"deqa": {"lora": {"r": 8}}}},
    "a reader": {"datasets": {"agiqa-1k": {"reader": "csv"}}},
    "dvc": {"datasets": {"agiqa-3k": {"dvc": False}}},
    "a protocol's type": {"protocols": {"image_split": {"type": "kfold_grouped"}}},
    "a pinned checksum": {"describers": {"published": {"sha256": "0" * 64}}},
    "the models that cross": {"cross_dataset": {"models": ["resnet50_probe"]}},
    "a new model": {"models": {"tiny": {"train": {"epochs": 1}}}},
    "a new dataset": {"datasets": {"synthetic": {"max_images": 10}}},
    "a model left out of every protocol": {
        "protocols": {name: {"models": ["resnet50_probe"]} for name in PAPER["protocols"]}
    },
    "a protocol running no model": {"protocols": {"image_split": {"models": []}}},
    "a pair with an unknown dataset": {
        "cross_dataset": {"pairs": [{"train": "agiqa-3k", "test": "synthetic"}]}
    },
}


@pytest.mark.parametrize("change", FORBIDDEN.values(), ids=FORBIDDEN.keys())
def test_the_rule_refuses_every_other_change(change: dict) -> None:
    assert overlay.problems(PAPER, change)
    with pytest.raises(ValueError, match="not a rehearsal overlay"):
        overlay.check(PAPER, REHEARSAL, change)


def test_the_rule_is_not_a_frozen_copy_of_the_paper_config() -> None:
    """A model or protocol added to the paper later is covered by the same rule."""
    paper = copy.deepcopy(PAPER)
    paper["models"]["new_model"] = copy.deepcopy(paper["models"]["resnet50_probe"])
    paper["protocols"]["new_protocol"] = {"type": "kfold_grouped", "folds": 5}
    change = {
        "models": {"new_model": {"train": {"epochs": 1}}},
        "protocols": {"new_protocol": {"folds": 2, "models": ["new_model"]}},
    }
    assert overlay.problems(paper, change) == []
    assert overlay.problems(paper, REHEARSAL) == []


# --- datasets in their official layouts --------------------------------------------------------


@pytest.fixture(scope="module")
def official(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    need(FIXTURES.is_dir(), f"metadata fixtures not found at {FIXTURES}")
    root = tmp_path_factory.mktemp("raw")
    return {
        "agiqa-1k": datasets.build_agiqa1k(root / "agiqa-1k", FIXTURES, LIMITS["agiqa-1k"]),
        "aigciqa2023": datasets.build_aigciqa2023(
            root / "aigciqa2023", FIXTURES, LIMITS["aigciqa2023"]
        ),
        "aigiqa-20k": datasets.build_aigiqa20k(root / "aigiqa-20k", FIXTURES, LIMITS["aigiqa-20k"]),
    }


OFFICIAL_FILES = {
    "agiqa-1k": ["AIGC_MOS_Zscore.xlsx", "AIGC_all.csv"],
    "aigciqa2023": [
        *(f"DATA/MOS/mosz{n}.mat" for n in (1, 2, 3)),
        *(f"DATA/STD/SD{n}.mat" for n in (1, 2, 3)),
        "AIGCIQA2023_Prompts.xlsx",
        "pic-index.xlsx",
    ],
    "aigiqa-20k": ["info_train.xlsx", "info_val.xlsx", "info_test.xlsx"],
}
#: Rows the readers give on the complete official metadata, and the image format.
OFFICIAL_ROWS = {
    "agiqa-1k": (1078, "JPEG"),
    "aigciqa2023": (2400, "PNG"),
    "aigiqa-20k": (20000, "PNG"),
}


@pytest.mark.parametrize("name", OFFICIAL_FILES)
def test_the_rebuilt_datasets_are_read_from_their_official_files(
    official: dict[str, Path], name: str
) -> None:
    root = official[name]
    for relative in OFFICIAL_FILES[name]:
        assert (root / relative).is_file(), relative
    manifest = read_dataset(name, root)
    rows, image_format = OFFICIAL_ROWS[name]
    assert len(manifest.frame) == rows  # the readers see every official row, quirks included
    kept = limit_images(manifest, LIMITS[name])
    for image in kept.frame["image"]:
        with Image.open(root / image) as opened:
            assert opened.format == image_format
            assert opened.size in ((512, 512), (1024, 1024))
    # only the kept images exist: a full verification names the missing ones
    on_disk = {
        p.relative_to(root).as_posix() for p in root.rglob("*") if p.suffix in (".jpg", ".png")
    }
    assert set(kept.frame["image"]) <= on_disk
    assert len(on_disk) < rows


def test_verification_decodes_only_the_kept_images(
    official: dict[str, Path], tmp_path: Path
) -> None:
    root = str(official["aigiqa-20k"])
    summary = verify_dataset(
        "aigiqa-20k", "aigiqa-20k", root, {}, [], str(tmp_path / "v.json"), str(tmp_path / "log"),
        max_images=LIMITS["aigiqa-20k"],
    )  # fmt: skip
    assert summary["images"] == summary["rows"] == LIMITS["aigiqa-20k"]
    # the NTIRE val/test rows come along, unlabelled; 10 labelled ones make 2 splittable folds
    assert summary["unlabelled_rows"] > 0 and summary["labelled_rows"] >= 10
    assert any(f"max_images {LIMITS['aigiqa-20k']}" in note for note in summary["notes"])
    with pytest.raises(DataError, match="missing"):
        verify_dataset(
            "aigiqa-20k", "aigiqa-20k", root, {}, [], str(tmp_path / "w.json"),
            str(tmp_path / "log"),
        )  # fmt: skip


def test_max_images_keeps_one_per_group_in_a_fixed_order(official: dict[str, Path]) -> None:
    manifest = read_dataset("aigciqa2023", official["aigciqa2023"])
    kept = limit_images(manifest, 12)
    assert len(kept.frame) == 12
    assert kept.frame["prompt_group"].value_counts().max() == IMAGES_PER_GROUP == 1
    assert kept.frame["generator"].nunique() > 1
    assert kept.frame.equals(limit_images(manifest, 12).frame)
    assert limit_images(manifest, None) is manifest
    assert len(limit_images(manifest, 5000).frame) == 2400
    with pytest.raises(ConfigError, match="positive integer"):
        limit_images(manifest, 0)


# --- the local model hub: fetch -> cache -> offline load ---------------------------------------


def test_imagereward_layout_is_the_one_the_real_code_writes() -> None:
    """The hub's ImageReward.pt keys and shapes, at the fixture's tiny sizes, equal the
    ``state_dict()`` of the real ``image-reward`` code (tests/fixtures/imagereward_tiny_keys.json);
    at ImageReward-v1.0's sizes they make 1.79 GB, the published file's size."""
    fixture = json.loads((REPO / "tests" / "fixtures" / "imagereward_tiny_keys.json").read_text())
    tiny = {
        **hub.IMAGEREWARD_SIZES,
        "vision_width": 48,
        "vision_depth": 2,
        "vision_mlp": 192,
        "patch": 8,
        "image": 32,
        "text_width": 32,
        "text_depth": 2,
        "text_mlp": 64,
        "positions": 40,
        "vocab": 59,
    }
    shapes = hub.imagereward_shapes(tiny)
    assert list(shapes) == list(fixture)
    assert {k: list(v) for k, v in shapes.items()} == fixture
    real = hub.imagereward_shapes(hub.IMAGEREWARD_SIZES)
    parameters = sum(_numel(shape) for key, shape in real.items() if "position_ids" not in key)
    assert 1.75e9 < 4 * parameters < 1.85e9


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


FETCH_CONFIG = {
    "datasets": {"x": {"reader": "agiqa-3k", "root": "data/raw/x"}},
    "protocols": {"kfold_grouped": {"type": "kfold_grouped"}},
    "models": {
        "scva": {
            "type": "scva",
            "blip": {
                "source": "imagereward",
                "checkpoint": "weights/ImageReward/ImageReward.pt",
                "tokenizer": "weights/bert-base-uncased",
            },
            "vit": {"name": "vit_base_patch16_224", "pretrained": False},
        },
        "deqa": {
            "type": "deqa",
            "backbone": {"name": "Qwen/Qwen2.5-VL-3B-Instruct", "cache_dir": "weights/hf"},
        },
        "resnet50_probe": {
            "type": "imagenet_probe",
            "backbone": {"source": "torchvision", "name": "resnet50", "weights": "IMAGENET1K_V2"},
        },
    },
}
TINY_IMAGEREWARD = {
    **hub.IMAGEREWARD_SIZES,
    "vision_width": 32,
    "vision_depth": 1,
    "vision_mlp": 64,
    "patch": 16,
    "text_width": 32,
    "text_depth": 1,
    "text_mlp": 64,
    "positions": 40,
    "embed": 16,
}


@pytest.fixture(scope="module")
def fetched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``agiqa weights fetch`` (a subprocess, as a user runs it) against a hub on 127.0.0.1."""
    work = tmp_path_factory.mktemp("fetch")
    folder = work / "hub"
    hub.write_bert_tokenizer(folder / hub.BERT_REPO, ["a small corpus", "of prompts"])
    hub.write_qwen(folder / "Qwen" / "Qwen2.5-VL-3B-Instruct", tie_embeddings=True)
    hub.write_imagereward(folder / hub.IMAGEREWARD_REPO / hub.IMAGEREWARD_FILE, TINY_IMAGEREWARD)
    hub.write_index(folder)
    hub.seed_torchvision(work / "torch")
    (work / "config.yaml").write_text(yaml.safe_dump(FETCH_CONFIG))
    with hub.serve(folder) as (endpoint, requests):
        env = os.environ | {
            "HF_ENDPOINT": endpoint,
            "HF_HOME": str(work / "hf"),
            "TORCH_HOME": str(work / "torch"),
            "PYTHONPATH": os.pathsep.join(
                [str(REPO / "tests" / "rehearsal" / "offline"), *sys.path]
            ),
            "AGIQA_REHEARSAL_OFFLINE": "1",
            "AGIQA_REHEARSAL_ALLOW": endpoint.removeprefix("http://"),
        }
        done = subprocess.run(
            [str(BIN / "agiqa"), "weights", "fetch", "--configfile", "config.yaml"],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    for kind in ("imagereward", "bert_tokenizer", "hf_model", "torchvision"):
        assert f"fetched: {kind} " in done.stdout
    assert any("resolve" in request for request in requests)
    return work


@pytest.mark.slow
def test_the_fetched_bert_tokenizer_is_complete_and_loads_offline(
    fetched: Path, no_network: list[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    from agiqa.models.scva_imagereward import load_tokenizer
    from agiqa.weights import weights_needed

    monkeypatch.chdir(fetched)
    folder = fetched / "weights" / "bert-base-uncased"
    # transformers 5 saved tokenizer.json only; vocab.txt marks the folder as fetched
    assert (folder / "vocab.txt").read_bytes() == (
        fetched / "hub" / hub.BERT_REPO / "vocab.txt"
    ).read_bytes()
    assert not [n for n in weights_needed(FETCH_CONFIG) if n.kind == "bert_tokenizer"]
    tokenizer = load_tokenizer(str(folder), hub.BERT_VOCAB_SIZE + 2)
    assert tokenizer.convert_tokens_to_ids("[CLS]") == 101
    assert no_network == []


@pytest.mark.slow
def test_a_fetched_mllm_loads_offline_without_reaching_for_the_hub(
    fetched: Path, no_network: list[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    """local_files_only alone let transformers look for a PEFT adapter on the hub (and retry it
    for ~25 s on an offline node); the load now makes no connection attempt at all."""
    from agiqa.models.mllm.backbone import BackboneSpec, load_backbone

    monkeypatch.chdir(fetched)
    monkeypatch.setenv("HF_HOME", str(fetched / "hf"))
    spec = BackboneSpec(name="Qwen/Qwen2.5-VL-3B-Instruct", cache_dir="weights/hf")
    backbone = load_backbone(spec)
    assert type(backbone.model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert backbone.processor.image_processor.patch_size == 14
    assert no_network == []


@pytest.mark.slow
def test_imagereward_and_torchvision_weights_come_back_offline(
    fetched: Path, no_network: list[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from agiqa.data.manifest import Dimension
    from agiqa.models import build_model
    from agiqa.models.scva_imagereward import convert_state_dict, read_checkpoint

    monkeypatch.chdir(fetched)
    state = read_checkpoint(fetched / "weights" / "ImageReward" / "ImageReward.pt")
    converted = convert_state_dict(state)
    assert not converted.unexpected and converted.vision and converted.text
    monkeypatch.setenv("TORCH_HOME", str(fetched / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    model = build_model(
        FETCH_CONFIG["models"]["resnet50_probe"], (Dimension("q", "quality", 0, 5),)
    )
    assert model is not None
    assert no_network == []


# --- no network in the rehearsal's processes ---------------------------------------------------


def test_the_guard_refuses_every_connection_but_the_listed_stand_ins(tmp_path: Path) -> None:
    (tmp_path / "ok.txt").write_text("ok")
    probe = (
        "import sys, urllib.request\n"
        "for url in sys.argv[1:]:\n"
        "    try:\n"
        "        print(urllib.request.urlopen(url, timeout=5).read().decode())\n"
        "    except OSError as error:\n"
        "        print('refused' if 'no network' in str(error) else repr(error))\n"
    )
    with static_server(tmp_path) as allowed, static_server(tmp_path) as other:
        env = os.environ | {
            "PYTHONPATH": str(REPO / "tests" / "rehearsal" / "offline"),
            "AGIQA_REHEARSAL_OFFLINE": "1",
            "AGIQA_REHEARSAL_ALLOW": allowed.removeprefix("http://"),
        }
        done = subprocess.run(
            [sys.executable, "-c", probe, f"{allowed}/ok.txt", f"{other}/ok.txt"],
            env=env,
            capture_output=True,
            text=True,
        )
    assert done.stdout.split() == ["ok", "refused"], done.stderr


# --- --resume ----------------------------------------------------------------------------------


def test_resume_commits_the_checkouts_files_and_leaves_staged_pointers_staged(
    tmp_path: Path,
) -> None:
    """A stopped rehearsal's repository has DVC pointers staged by `dvc_track`; `--resume` must
    commit only the checkout's changed files, so the DVC round trip still finds them staged."""
    from rehearsal import checks
    from rehearsal.rehearse import GIT, Rehearsal

    rehearsal = Rehearsal(tmp_path / "workspace", tmp_path, cores=1)
    repo = rehearsal.repo
    repo.mkdir(parents=True)

    def git(*args: str) -> str:
        return subprocess.run(
            [*GIT, *args], cwd=repo, check=True, capture_output=True, text=True
        ).stdout

    git("init", "-q", "-b", "main")
    (repo / "README.md").write_text("the snapshot's older README\n")
    git("add", "README.md")
    git("commit", "-q", "-m", "snapshot")
    pointer = repo / "data" / "raw" / "agiqa-3k.dvc"
    pointer.parent.mkdir(parents=True)
    pointer.write_text("outs:\n- path: agiqa-3k\n")
    git("add", "data/raw/agiqa-3k.dvc")

    rehearsal.refresh()

    assert (repo / "README.md").read_bytes() == (REPO / "README.md").read_bytes()
    assert git("diff", "--cached", "--name-only").split() == ["data/raw/agiqa-3k.dvc"]
    assert "data/raw/agiqa-3k.dvc" not in git("show", "--name-only", "--format=", "HEAD")
    head, snapshot = git("rev-list", "HEAD").split()
    assert {head, snapshot} == checks._git_history(repo)
