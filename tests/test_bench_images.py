"""`agiqa bench --data`: the image path against a plain PIL loop, on the same images.

No timing is asserted (shared machines are noisy): the test checks the three paths ran on the
same images and that the ratio is printed last.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from agiqa.bench import bench_images, image_transform
from agiqa.cli import app
from agiqa.data.synthetic import generate
from agiqa.errors import ConfigError


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bench-images") / "images"
    generate(root, n_prompts=4, images_per_prompt=4, image_size=96)
    return root


def test_every_path_sees_the_same_images(dataset: Path) -> None:
    results = bench_images(dataset, size=32, epochs=2, threads=1, repeats=1)
    assert [r.name for r in results] == [
        "plain PIL loop",
        "agiqa (cold cache)",
        "agiqa (warm cache)",
    ]
    assert {r.images for r in results} == {2 * 16}


def test_cli_prints_the_ratio_last(dataset: Path) -> None:
    args = ["bench", "--data", str(dataset), "--size", "32", "--epochs", "1", "--repeats", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("ratio ") and lines[-2].startswith("warm-cache ratio ")
    assert float(lines[-1].split()[-1]) > 0


def test_bench_needs_exactly_one_of_model_and_data(dataset: Path) -> None:
    assert CliRunner().invoke(app, ["bench"]).exit_code == 2
    both = ["bench", "--model", "dcmpln", "--data", str(dataset)]
    assert CliRunner().invoke(app, both).exit_code == 2


def test_transforms_give_model_ready_tensors() -> None:
    image = Image.new("RGB", (48, 32), (200, 100, 50))
    clip = image_transform("clip", 16)(image)
    raw = image_transform("uint8", 16)(image)
    assert clip.shape == raw.shape == (3, 16, 16)
    assert clip.dtype == torch.float32 and raw.dtype == torch.uint8
    with pytest.raises(ConfigError):
        image_transform("bogus", 16)


def test_model_bench_looks_for_stand_ins_where_the_workflow_writes_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = Path("config/config.yaml").resolve()  # experiment: demo
    monkeypatch.chdir(tmp_path)  # no stand-in trained here
    args = ["bench", "--model", "dcmpln", "--tiny", "--configfile", str(config)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2  # a configuration error
    assert "results/demo/backbones/tiny-clip-synthetic.pt is missing" in result.output
