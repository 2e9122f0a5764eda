"""``agiqa weights fetch``: every pretrained backbone a config needs, fetched once, offline-tested.

The downloaders are replaced by recorders: nothing here touches the network (sockets are
blocked), and the real downloaders are one library call each.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from agiqa import weights
from agiqa.cli import app
from agiqa.weights import WeightsNeed, WeightsUnavailableError, fetch_weights, weights_needed

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()
OPEN_CLIP_CACHE = "resources/weights/open_clip"


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: socket.socket, address: object) -> None:
        raise OSError(f"network disabled in tests: {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


@pytest.fixture()
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[WeightsNeed]:
    """Every downloader records its need and reports a fake location."""
    calls: list[WeightsNeed] = []

    def record(need: WeightsNeed) -> str:
        calls.append(need)
        return f"/cache/{need.kind}"

    for kind in weights.DOWNLOADERS:
        monkeypatch.setitem(weights.DOWNLOADERS, kind, record)
    return calls


def config(name: str) -> dict:
    return yaml.safe_load((REPO / "config" / name).read_text())


def paper_needs() -> set[WeightsNeed]:
    return {
        WeightsNeed("open_clip", "ViT-L-14/openai", OPEN_CLIP_CACHE),
        WeightsNeed("open_clip", "ViT-B-32/openai", OPEN_CLIP_CACHE),
        WeightsNeed("timm", "vit_base_patch16_224.augreg_in21k_ft_in1k"),
        WeightsNeed(
            "imagereward",
            "THUDM/ImageReward/ImageReward.pt",
            "resources/weights/ImageReward/ImageReward.pt",
        ),
        WeightsNeed("bert_tokenizer", "bert-base-uncased", "resources/weights/bert-base-uncased"),
    }


def test_the_paper_config_needs_each_backbone_once() -> None:
    needs = weights_needed(config("paper.yaml"))
    # ViT-L-14 serves three entries (and scva's per-dataset presets add nothing new): one fetch.
    assert len(needs) == len(set(needs))
    assert {n for n in needs if n.kind in weights.DOWNLOADERS} >= paper_needs()
    paper_models = {"clip_residual", "clip_linear_probe", "dcmpln", "scva", "clip_zeroshot"}
    only_ours = {**config("paper.yaml"), "models": {}}
    only_ours["models"] = {
        k: v for k, v in config("paper.yaml")["models"].items() if k in paper_models
    }
    assert set(weights_needed(only_ours)) == paper_needs()
    # The multimodal LLMs: one snapshot per checkpoint, into the cache folder they load from.
    assert {n for n in needs if n.kind == "hf_model"} == {
        WeightsNeed("hf_model", f"Qwen/Qwen2.5-VL-{size}-Instruct", "resources/weights/hf")
        for size in ("7B", "3B")
    }


def test_stand_ins_local_files_and_random_inits_need_nothing(tmp_path: Path) -> None:
    assert weights_needed(config("config.yaml")) == []
    local = tmp_path / "ImageReward.pt"
    local.write_bytes(b"weights")
    tokenizer = tmp_path / "bert"
    tokenizer.mkdir()
    (tokenizer / "vocab.txt").write_text("[PAD]\n")
    entry = {
        "type": "scva",
        "blip": {"source": "imagereward", "checkpoint": str(local), "tokenizer": str(tokenizer)},
        "vit": {"name": "vit_base_patch16_224", "pretrained": False},
    }
    clip = {"type": "clip_residual", "backbone": {"arch": "ViT-B-32", "pretrained": str(local)}}
    # ImageReward.pt already there is still recorded by the fetch (its downloader skips the
    # download), so that loads can check it; the stand-in file and the tokenizer need nothing.
    assert weights_needed({"models": {"scva": entry, "clip": clip}}) == [
        WeightsNeed("imagereward", "THUDM/ImageReward/ImageReward.pt", str(local))
    ]


def test_an_imagereward_file_already_there_is_recorded_not_downloaded(tmp_path: Path) -> None:
    import torch

    from agiqa.models.scva_imagereward import read_checkpoint
    from agiqa.weights_record import WeightsNotRecordedError

    local = tmp_path / "ImageReward.pt"
    torch.save({"blip.text_encoder.embeddings.word_embeddings.weight": torch.ones(3, 2)}, local)
    with pytest.raises(WeightsNotRecordedError, match="agiqa weights fetch"):
        read_checkpoint(local)
    need = WeightsNeed("imagereward", "THUDM/ImageReward/ImageReward.pt", str(local))
    assert weights.DOWNLOADERS["imagereward"](need) == str(local)  # sockets are blocked
    assert set(read_checkpoint(local)) == {"blip.text_encoder.embeddings.word_embeddings.weight"}


def test_fetch_calls_each_downloader_once(recorded: list[WeightsNeed]) -> None:
    done = fetch_weights(config("paper.yaml"))
    assert set(recorded) >= paper_needs() and len(recorded) == len(set(recorded))
    assert all(location == f"/cache/{need.kind}" for need, location in done)


def test_fetch_tries_everything_then_names_every_failure(
    monkeypatch: pytest.MonkeyPatch, recorded: list[WeightsNeed]
) -> None:
    def offline(need: WeightsNeed) -> str:
        raise OSError(f"cannot reach the hub for {need.name}")

    monkeypatch.setitem(weights.DOWNLOADERS, "open_clip", offline)
    with pytest.raises(WeightsUnavailableError) as raised:
        fetch_weights(config("paper.yaml"))
    message = str(raised.value)
    assert "needs network access" in message
    assert "ViT-L-14/openai" in message and "ViT-B-32/openai" in message
    assert {need.kind for need in recorded} >= {"timm", "imagereward", "bert_tokenizer"}


def test_cli_lists_fetches_and_fails_with_exit_2(
    monkeypatch: pytest.MonkeyPatch, recorded: list[WeightsNeed]
) -> None:
    paper = str(REPO / "config" / "paper.yaml")
    listed = runner.invoke(app, ["weights", "fetch", "--configfile", paper, "--dry-run"])
    assert listed.exit_code == 0, listed.output
    assert "needed: open_clip ViT-B-32/openai -> resources/weights/open_clip" in listed.output
    assert recorded == []
    fetched = runner.invoke(app, ["weights", "fetch", "--configfile", paper])
    assert fetched.exit_code == 0, fetched.output
    assert (
        "fetched: timm vit_base_patch16_224.augreg_in21k_ft_in1k -> /cache/timm" in fetched.output
    )

    def offline(need: WeightsNeed) -> str:
        raise OSError("no route to host")

    monkeypatch.setitem(weights.DOWNLOADERS, "timm", offline)
    failed = runner.invoke(app, ["weights", "fetch", "--configfile", paper])
    assert failed.exit_code == 2 and "no route to host" in failed.output
