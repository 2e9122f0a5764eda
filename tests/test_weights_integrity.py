"""No weights file is loaded before its sha256 is checked; no pickle from a cache runs code.

- the packaged MobileNetV2 name is checked against its pinned sha256 before every load: a pickle
  planted there never runs (``agiqa models list``, a probe build), zeroed tensors are refused;
- what ``agiqa weights fetch`` fetched (or found in the cache: a rehearsal's random weights
  under the real names) is recorded and loads; changed after the fetch, it is refused;
- the same for a Hugging Face cache (a multimodal LLM snapshot, through transformers).

Sockets are blocked; the real downloaders run on files already in the caches.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
import yaml
from torchvision.models import mobilenet_v2, resnet18
from typer.testing import CliRunner

from agiqa.cli import app
from agiqa.data.manifest import Dimension
from agiqa.models import build_model
from agiqa.weights import (
    MOBILENET_V2_IMAGENET1K_V1,
    WeightsHashError,
    WeightsNeed,
    fetch_weights,
)
from agiqa.weights_record import (
    RECORD_FILE,
    WeightsIntegrityError,
    WeightsNotRecordedError,
    record_weights,
)

pytestmark = pytest.mark.usefixtures("no_network")
runner = CliRunner()
DIMS = (Dimension("quality", "quality", 0, 5),)
RESNET18 = "resnet18-f37072fd.pth"  # torchvision's ResNet18_Weights.IMAGENET1K_V1 file name


class Payload:
    """Unpickling this creates the marker file: proof that code from the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.fixture()
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    folder.mkdir(parents=True)
    return folder


def plant_pickle(path: Path, marker: Path) -> None:
    torch.save({"features.0.0.weight": Payload(marker)}, path)
    assert not marker.exists()


def probe_entry(name: str = "mobilenet_v2") -> dict:
    return {
        "type": "imagenet_probe",
        "backbone": {"source": "torchvision", "name": name, "weights": "IMAGENET1K_V1"},
    }


def test_a_pickle_under_the_packaged_name_never_runs(hub: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    plant_pickle(hub / MOBILENET_V2_IMAGENET1K_V1.file_name, marker)
    with pytest.raises(WeightsHashError, match=r"pinned b0353104.*`agiqa weights seed`"):
        build_model(probe_entry(), DIMS)
    assert not marker.exists()
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"models": {"probe": probe_entry()}}))
    listed = runner.invoke(app, ["models", "list", "--configfile", str(config)])
    assert listed.exit_code == 0, listed.output
    assert "n/a (mobilenet_v2-b0353104.pth in torch's hub cache is not the pinned" in listed.output
    assert not marker.exists()


def test_zeroed_tensors_under_the_packaged_name_are_refused(hub: Path) -> None:
    zeros = {k: torch.zeros_like(v) for k, v in mobilenet_v2(weights=None).state_dict().items()}
    torch.save(zeros, hub / MOBILENET_V2_IMAGENET1K_V1.file_name)
    with pytest.raises(WeightsHashError, match="is not the pinned file"):
        build_model(probe_entry(), DIMS)


def test_fetched_weights_load_until_they_change(hub: Path, tmp_path: Path) -> None:
    """A rehearsal puts random weights under the real name; the fetch records, loads accept."""
    torch.save(resnet18(weights=None).state_dict(), hub / RESNET18)
    config = {"models": {"probe": probe_entry("resnet18")}}
    with pytest.raises(WeightsNotRecordedError, match="agiqa weights fetch"):
        build_model(probe_entry("resnet18"), DIMS)
    [(need, location)] = fetch_weights(config)  # the real downloader: the file is already there
    assert need == WeightsNeed("torchvision", "resnet18/IMAGENET1K_V1")
    assert location == str(hub / RESNET18)
    record = json.loads((hub.parent / RECORD_FILE).read_text())
    digest = hashlib.sha256((hub / RESNET18).read_bytes()).hexdigest()
    assert record["files"]["checkpoints/" + RESNET18]["sha256"] == digest
    model = build_model(probe_entry("resnet18"), DIMS)
    assert model.backbone_name == "torchvision resnet18 (IMAGENET1K_V1)"
    zeros = {k: torch.zeros_like(v) for k, v in resnet18(weights=None).state_dict().items()}
    torch.save(zeros, hub / RESNET18)  # changed after the fetch
    with pytest.raises(WeightsIntegrityError, match="recorded when it was fetched"):
        build_model(probe_entry("resnet18"), DIMS)
    with pytest.raises(Exception, match="changed since"):  # a second fetch does not bless it
        fetch_weights(config)


def test_a_recorded_pickle_is_loaded_weights_only(hub: Path, tmp_path: Path) -> None:
    """torchvision's builder asks torch.hub for weights_only=False; the load forces True."""
    marker = tmp_path / "pwned"
    plant_pickle(hub / RESNET18, marker)
    record_weights(hub.parent, [hub / RESNET18])  # as if recorded: the load must still refuse
    with pytest.raises(WeightsIntegrityError, match="weights_only=True"):
        build_model(probe_entry("resnet18"), DIMS)
    assert not marker.exists()
    with pytest.raises(Exception, match="weights_only=True"):  # and the fetch refuses it
        fetch_weights({"models": {"probe": probe_entry("resnet18")}})
    assert not marker.exists()


def hf_cache_repo(folder: Path, cache: Path, repo_id: str, commit: str = "0" * 40) -> Path:
    """The Hugging Face cache layout of ``folder``'s files: blobs named by sha256, snapshot
    links, refs/main (what a download writes)."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / path.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path("../" * len(link.relative_to(repo).parts[1:])) / "blobs" / blob.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return repo


def test_a_hugging_face_snapshot_is_recorded_and_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    from agiqa.models.mllm.backbone import TinySpec, build_tiny

    model, processor = build_tiny(TinySpec())
    model.save_pretrained(tmp_path / "tiny")
    processor.save_pretrained(tmp_path / "tiny")
    cache = tmp_path / "hf"
    repo = hf_cache_repo(tmp_path / "tiny", cache, "org/tiny-vlm")
    backbone = {"name": "org/tiny-vlm", "cache_dir": str(cache), "image_size": 64}
    entry = {"type": "mllm_zeroshot", "backbone": backbone}
    with pytest.raises(Exception, match="agiqa weights fetch"):
        build_model(entry, DIMS)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # the fetch finds it in the cache
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = {"models": {"vlm": entry}}
    [(need, _)] = fetch_weights(config)
    assert need == WeightsNeed("hf_model", "org/tiny-vlm", str(cache))
    assert build_model(entry, DIMS).backbone_name == "org/tiny-vlm"
    weights = next(repo.glob("snapshots/*/model.safetensors")).resolve()
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    with pytest.raises(WeightsIntegrityError, match="recorded when it was fetched"):
        build_model(entry, DIMS)
