"""The embedded synthetic dataset: determinism, AGIQA-3K format and planted signal."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.stats import spearmanr

from agiqa.data.synthetic import DATA_HEADER, generate

N_PROMPTS = 30
PER_PROMPT = 4
Dataset = tuple[pd.DataFrame, pd.DataFrame, Path]


def _generate(out: Path, seed: int = 0, **kwargs: object) -> Path:
    return generate(out, n_prompts=N_PROMPTS, images_per_prompt=PER_PROMPT, seed=seed, **kwargs)


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    out = tmp_path_factory.mktemp("synthetic")
    data_csv = _generate(out)
    return pd.read_csv(data_csv), pd.read_csv(out / "planted.csv"), out


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    first = _generate(tmp_path / "a")
    second = _generate(tmp_path / "b")
    assert first.read_bytes() == second.read_bytes()
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")


def test_different_seed_differs(tmp_path: Path) -> None:
    first = _generate(tmp_path / "a", seed=0)
    second = _generate(tmp_path / "b", seed=1)
    assert first.read_bytes() != second.read_bytes()


def test_header_and_row_count(dataset: Dataset) -> None:
    data, planted, out = dataset
    header = (out / "data.csv").read_text().splitlines()[0]
    assert header == ",".join(DATA_HEADER)
    assert header == "name,prompt,adj1,adj2,style,mos_quality,std_quality,mos_align,std_align"
    assert len(data) == N_PROMPTS * PER_PROMPT
    assert list(planted["name"]) == list(data["name"])
    assert data["prompt"].nunique() == N_PROMPTS
    assert data[["adj1", "adj2", "style"]].isna().all().all()


def test_names_follow_generator_variant_index(dataset: Dataset) -> None:
    data = dataset[0]
    pattern = r"^[a-z]+_normal_\d{4}\.jpg$"
    assert data["name"].str.match(pattern).all()
    assert data["name"].str.split("_").str[0].nunique() >= 3


def test_scores_on_scale(dataset: Dataset) -> None:
    data = dataset[0]
    for column in ("mos_quality", "mos_align"):
        assert data[column].between(0.0, 5.0).all()
    for column in ("std_quality", "std_align"):
        assert (data[column] > 0).all()


def test_quality_follows_planted_severity(dataset: Dataset) -> None:
    data, planted, _ = dataset
    rho = spearmanr(planted["total_severity"], data["mos_quality"]).statistic
    assert rho < -0.8
    clean = data.loc[planted["total_severity"] == 0, "mos_quality"]
    heavy = data.loc[planted["total_severity"] > 1.0, "mos_quality"]
    assert len(clean) > 5 and len(heavy) > 5
    assert clean.mean() > heavy.mean() + 1.5


def test_alignment_follows_mismatches(dataset: Dataset) -> None:
    data, planted, _ = dataset
    by_count = data.groupby(planted["mismatches"])["mos_align"].mean()
    assert set(by_count.index) == {0, 1, 2}
    assert by_count[0] > by_count[1] > by_count[2]
    # A mismatch must really change what is drawn.
    mismatched = planted[planted["mismatches"] > 0]
    differs = (
        (mismatched["count_asked"] != mismatched["count_rendered"]).astype(int)
        + (mismatched["colour_asked"] != mismatched["colour_rendered"]).astype(int)
        + (mismatched["shape_asked"] != mismatched["shape_rendered"]).astype(int)
    )
    assert (differs == mismatched["mismatches"]).all()


def test_every_image_decodes_at_size(dataset: Dataset) -> None:
    data, _, out = dataset
    for name in data["name"]:
        with Image.open(out / name) as image:
            image.load()
            assert image.format == "JPEG"
            assert image.mode == "RGB"
            assert image.size == (64, 64)


def test_custom_size_and_no_mismatch(tmp_path: Path) -> None:
    data_csv = generate(tmp_path, n_prompts=3, images_per_prompt=2, image_size=32, mismatch_rate=0)
    planted = pd.read_csv(tmp_path / "planted.csv")
    assert (planted["mismatches"] == 0).all()
    for name in pd.read_csv(data_csv)["name"]:
        with Image.open(tmp_path / name) as image:
            assert image.size == (32, 32)


def test_generators_differ_in_quality(dataset: Dataset) -> None:
    data = dataset[0]
    means = data.groupby(data["name"].str.split("_").str[0])["mos_quality"].mean()
    assert means.max() - means.min() > 0.5


def test_default_size_renders_240_images(tmp_path: Path) -> None:
    generate(tmp_path)
    assert len(list(tmp_path.glob("*.jpg"))) == 240


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_prompts": 0}, "n_prompts"),
        ({"n_prompts": 10_000}, "n_prompts"),
        ({"mismatch_rate": 1.5}, "mismatch_rate"),
        ({"raters": 1}, "raters"),
    ],
)
def test_rejects_bad_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate(tmp_path, **kwargs)


def test_pixels_are_not_all_alike(dataset: Dataset) -> None:
    data, _, out = dataset
    first = np.asarray(Image.open(out / data["name"][0]))
    assert any(
        not np.array_equal(first, np.asarray(Image.open(out / name))) for name in data["name"][1:5]
    )
