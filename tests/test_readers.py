"""Dataset readers on the real metadata fixtures (and official xlsx/.mat files built from them)."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import openpyxl
import pandas as pd
import pytest
import scipy.io
from PIL import Image

from agiqa.data.check import summarize, verify_images
from agiqa.data.manifest import Manifest
from agiqa.data.readers import READERS, read_dataset
from agiqa.errors import DataError
from shared_data import FIXTURES

needs_fixtures = pytest.mark.skipif(
    not FIXTURES.is_dir(),
    reason=f"metadata fixtures not found at {FIXTURES} (put shared/ beside the checkout)",
)


def write_xlsx(path: Path, rows: Sequence[Sequence[object]]) -> Path:
    """An official-style workbook: one sheet named Sheet1 holding ``rows`` from row 1."""
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Sheet1"
    for row in rows:
        sheet.append(list(row))
    book.save(path)
    return path


def test_registered_readers() -> None:
    assert READERS.names() == ["agiqa-1k", "agiqa-3k", "aigciqa2023", "aigiqa-20k", "csv"]


# --- AGIQA-3K ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def agiqa3k() -> Manifest:
    if not FIXTURES.is_dir():
        pytest.skip(f"metadata fixtures not found at {FIXTURES}")
    return read_dataset("agiqa-3k", FIXTURES / "agiqa-3k")


@needs_fixtures
def test_agiqa3k_fixture(agiqa3k: Manifest) -> None:
    frame = agiqa3k.frame
    assert agiqa3k.dataset == "agiqa-3k"
    assert agiqa3k.source == str(FIXTURES / "agiqa-3k" / "data.csv")
    assert len(frame) == 2982
    assert frame["prompt_group"].nunique() == 300
    assert frame["labelled"].all() and set(frame["subset"]) == {"all"}
    assert frame["image"].iloc[0] == "AttnGAN_normal_000.jpg"  # file order kept
    assert frame["generator"].value_counts().to_dict() == {
        "sd1.5": 1200,
        "midjourney": 592,
        "AttnGAN": 300,
        "glide": 300,
        "xl2.2": 300,
        "DALLE2": 290,
    }
    assert [(d.name, d.kind, d.low, d.high, d.has_std) for d in agiqa3k.dimensions] == [
        ("quality", "quality", 0.0, 5.0, True),
        ("align", "alignment", 0.0, 5.0, True),
    ]
    assert frame["mos_quality"].min() == pytest.approx(0.0)
    assert frame["mos_quality"].max() == pytest.approx(4.489, abs=1e-3)
    assert frame["mos_align"].min() == pytest.approx(0.022, abs=1e-3)
    assert frame["mos_align"].max() == pytest.approx(4.286, abs=1e-3)
    assert frame[["std_quality", "std_align"]].notna().all().all()


@needs_fixtures
def test_agiqa3k_prompt_groups_follow_prompt_strings(agiqa3k: Manifest) -> None:
    frame = agiqa3k.frame
    per_group = frame.groupby("prompt_group")["prompt"].nunique()
    assert (per_group == 1).all()
    assert frame["prompt_group"].iloc[0] == "p000"


@needs_fixtures
def test_agiqa3k_ignores_extra_columns(agiqa3k: Manifest, tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "agiqa-3k" / "scva-agiqa" / "data.csv", tmp_path / "data.csv")
    scva = read_dataset("agiqa-3k", tmp_path)
    pd.testing.assert_frame_equal(scva.frame, agiqa3k.frame)


def test_synthetic_dataset_uses_3k_reader(tmp_path: Path) -> None:
    lines = [
        "name,prompt,adj1,adj2,style,mos_quality,std_quality,mos_align,std_align",
        "images/alpha_0.png,a red cube,,,,1.5,0.2,2.5,0.3",
        "images/alpha_1.png,a blue sphere,,,,4.0,0.1,1.0,0.2",
        "images/beta_0.png,a red cube,,,,3.25,0.4,4.75,0.5",
    ]
    (tmp_path / "data.csv").write_text("\r\n".join(lines) + "\r\n")
    manifest = read_dataset("agiqa-3k", tmp_path, dataset="synthetic")
    frame = manifest.frame
    assert manifest.dataset == "synthetic"
    assert frame["image"].tolist() == [
        "images/alpha_0.png",
        "images/alpha_1.png",
        "images/beta_0.png",
    ]
    assert frame["generator"].tolist() == ["alpha", "alpha", "beta"]
    assert frame["prompt_group"].tolist() == ["p000", "p001", "p000"]
    assert frame["mos_align"].tolist() == [2.5, 1.0, 4.75]
    assert manifest.notes == []


# --- AGIQA-1K ----------------------------------------------------------------------------------

ONEK_TRAP = "dreamStudio_8_9_1_1.jpg"


@pytest.fixture
def agiqa1k_csv_root(tmp_path: Path) -> Path:
    if not FIXTURES.is_dir():
        pytest.skip(f"metadata fixtures not found at {FIXTURES}")
    shutil.copy(FIXTURES / "agiqa-1k" / "ipce" / "all.csv", tmp_path / "AIGC_MOS_Zscore.csv")
    return tmp_path


def _check_agiqa1k(manifest: Manifest) -> None:
    frame = manifest.frame
    assert len(frame) == 1078
    assert f"file/{ONEK_TRAP}" not in set(frame["image"])
    assert "file/dreamStudio_8_5_0_0.jpg" not in set(frame["image"])
    assert frame["image"].is_unique
    assert frame["image"].iloc[0] == "file/deepai_0_0_0_0.jpg"
    assert frame["prompt_group"].nunique() == 360
    assert frame["prompt"].nunique() == 720  # deepai_8_9_1_1.jpg keeps the dropped prompt
    assert frame["generator"].value_counts().to_dict() == {"deepai": 720, "dreamStudio": 358}
    assert [(d.name, d.kind, d.low, d.high, d.has_std) for d in manifest.dimensions] == [
        ("quality", "quality", 0.0, 5.0, False)
    ]
    assert frame["mos_quality"].min() == 0.0 and frame["mos_quality"].max() == 5.0
    note = " ".join(manifest.notes)
    assert ONEK_TRAP in note and "row 1080" in note and "row 1081" in note


@needs_fixtures
def test_agiqa1k_csv_drops_conflicting_duplicate(agiqa1k_csv_root: Path) -> None:
    manifest = read_dataset("agiqa-1k", agiqa1k_csv_root)
    _check_agiqa1k(manifest)
    assert manifest.source.endswith("AIGC_MOS_Zscore.csv")


@needs_fixtures
def test_agiqa1k_style_variants_share_a_group(agiqa1k_csv_root: Path) -> None:
    frame = read_dataset("agiqa-1k", agiqa1k_csv_root).frame.set_index("image")
    anime, realistic = "file/deepai_0_0_0_0.jpg", "file/deepai_0_0_0_1.jpg"
    assert frame.loc[anime, "prompt_group"] == frame.loc[realistic, "prompt_group"]
    assert frame.loc[anime, "prompt_group"] != frame.loc["file/deepai_0_0_1_0.jpg", "prompt_group"]


@needs_fixtures
def test_agiqa1k_official_xlsx(agiqa1k_csv_root: Path, tmp_path: Path) -> None:
    table = pd.read_csv(agiqa1k_csv_root / "AIGC_MOS_Zscore.csv")
    xlsx_root = tmp_path / "xlsx"
    xlsx_root.mkdir()
    write_xlsx(xlsx_root / "AIGC_MOS_Zscore.xlsx", [list(table.columns), *table.values.tolist()])
    from_xlsx = read_dataset("agiqa-1k", xlsx_root)
    _check_agiqa1k(from_xlsx)
    assert from_xlsx.source.endswith("AIGC_MOS_Zscore.xlsx")
    from_csv = read_dataset("agiqa-1k", agiqa1k_csv_root)
    pd.testing.assert_frame_equal(from_xlsx.frame, from_csv.frame)


@needs_fixtures
def test_agiqa1k_error_mode_names_rows(agiqa1k_csv_root: Path) -> None:
    with pytest.raises(DataError) as caught:
        read_dataset("agiqa-1k", agiqa1k_csv_root, on_conflicting_duplicates="error")
    error = caught.value
    assert error.file == str(agiqa1k_csv_root / "AIGC_MOS_Zscore.csv")
    assert error.row == 1081
    assert ONEK_TRAP in str(error) and "row 1080" in str(error) and "row 1081" in str(error)


def test_agiqa1k_exact_duplicates_collapse(tmp_path: Path) -> None:
    rows = [
        ["Image", "Prompt", "MOS"],
        ["deepai_0_0_0_0.jpg", "bird, driving aircraft, city, anime style", 2.5],
        ["deepai_0_0_0_0.jpg", "bird, driving aircraft, city, anime style", 2.5],
        ["deepai_0_0_0_1.jpg", "bird, driving aircraft, city, realistic style", 4.0],
    ]
    write_xlsx(tmp_path / "AIGC_MOS_Zscore.xlsx", rows)
    manifest = read_dataset("agiqa-1k", tmp_path, on_conflicting_duplicates="error")
    assert manifest.frame["image"].tolist() == [
        "file/deepai_0_0_0_0.jpg",
        "file/deepai_0_0_0_1.jpg",
    ]
    assert manifest.frame["prompt_group"].nunique() == 1
    assert "row 2" in manifest.notes[0] and "row 3" in manifest.notes[0]


# --- AIGCIQA2023 -------------------------------------------------------------------------------

MAT_ORDER = ("quality", "authenticity", "correspondence")


@pytest.fixture(scope="module")
def pr4() -> pd.DataFrame:
    if not FIXTURES.is_dir():
        pytest.skip(f"metadata fixtures not found at {FIXTURES}")
    return pd.read_csv(FIXTURES / "aigciqa2023" / "pr4-huskydoge" / "AIGCIQA2023.csv", index_col=0)


def build_aigciqa2023(root: Path, pr4: pd.DataFrame) -> Path:
    """The official .mat files and prompt sheet from the PR #4 CSV (same values, .mat order)."""
    for n, dim in enumerate(MAT_ORDER, start=1):
        for folder, stem, var, column in (
            ("MOS", "mosz", "MOSz", "mos"),
            ("STD", "SD", "SD", "std"),
        ):
            target = root / "DATA" / folder / f"{stem}{n}.mat"
            target.parent.mkdir(parents=True, exist_ok=True)
            values = pr4[f"{dim}_{column}"].to_numpy(dtype=float).reshape(-1, 1)
            scipy.io.savemat(target, {var: values})
    first_model = pr4.iloc[0:400:4]  # rows 4p of the first model hold prompt p
    write_xlsx(root / "AIGCIQA2023_Prompts.xlsx", first_model[["style", "class", "prompt"]].values)
    return root


@pytest.fixture(scope="module")
def aigciqa2023(pr4: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    root = build_aigciqa2023(tmp_path_factory.mktemp("aigciqa2023"), pr4)
    return read_dataset("aigciqa2023", root)


@needs_fixtures
def test_aigciqa2023_counts_and_dimensions(aigciqa2023: Manifest) -> None:
    frame = aigciqa2023.frame
    assert len(frame) == 2400 and frame["labelled"].all()
    assert frame["generator"].value_counts().to_dict() == {
        m: 400
        for m in ("Controlnet", "DALLE", "Glide", "Lafite", "stable-diffusion", "Unidiffuser")
    }
    assert frame["prompt_group"].nunique() == 100
    assert (frame.groupby("prompt_group").size() == 24).all()
    assert [(d.name, d.kind, d.low, d.high, d.has_std) for d in aigciqa2023.dimensions] == [
        ("quality", "quality", 0.0, 100.0, True),
        ("authenticity", "quality", 0.0, 100.0, True),
        ("correspondence", "alignment", 0.0, 100.0, True),
    ]
    assert aigciqa2023.source.endswith("DATA/MOS/mosz1.mat")


@needs_fixtures
def test_aigciqa2023_row_to_file_mapping(aigciqa2023: Manifest) -> None:
    frame = aigciqa2023.frame
    ipce = pd.read_csv(FIXTURES / "aigciqa2023" / "ipce" / "all.csv")
    assert frame["image"].tolist() == [
        f"Image/{m}/{name}" for m, name in zip(ipce["model"], ipce["image_name"], strict=True)
    ]
    assert frame["generator"].tolist() == ipce["model"].tolist()
    scva = pd.read_csv(FIXTURES / "aigciqa2023" / "scva-agiqa" / "merged_output_aigciqa2023.csv")
    assert frame["image"].tolist() == [f"Image/{n.replace(chr(92), '/')}" for n in scva["name"]]


@needs_fixtures
def test_aigciqa2023_values_equal_mat_rows(aigciqa2023: Manifest, pr4: pd.DataFrame) -> None:
    frame = aigciqa2023.frame
    for dim in MAT_ORDER:
        np.testing.assert_array_equal(frame[f"mos_{dim}"], pr4[f"{dim}_mos"])
        np.testing.assert_array_equal(frame[f"std_{dim}"], pr4[f"{dim}_std"])
    # the reader strips the stray trailing spaces of a few prompts
    assert frame["prompt"].tolist() == pr4["prompt"].str.strip().tolist()


@needs_fixtures
def test_aigciqa2023_flat_image_folder(pr4: pd.DataFrame, tmp_path: Path) -> None:
    root = build_aigciqa2023(tmp_path, pr4)
    (root / "Image" / "allimg").mkdir(parents=True)
    flat = read_dataset("aigciqa2023", root)
    assert flat.frame["image"].iloc[[0, 2399]].tolist() == [
        "Image/allimg/0.png",
        "Image/allimg/2399.png",
    ]
    assert any("allimg" in note for note in flat.notes)
    (root / "Image" / "Glide").mkdir()
    per_model = read_dataset("aigciqa2023", root)
    assert per_model.frame["image"].iloc[0] == "Image/Controlnet/000-1.png"


# --- AIGIQA-20K --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def aigiqa20k() -> Manifest:
    if not FIXTURES.is_dir():
        pytest.skip(f"metadata fixtures not found at {FIXTURES}")
    return read_dataset("aigiqa-20k", FIXTURES / "aigiqa-20k")


@needs_fixtures
def test_aigiqa20k_csv_fixture(aigiqa20k: Manifest) -> None:
    frame = aigiqa20k.frame
    assert len(frame) == 20000
    assert frame["subset"].value_counts().to_dict() == {"train": 14000, "test": 4000, "val": 2000}
    assert (frame["labelled"] == frame["subset"].eq("train")).all()
    assert frame.loc[frame["labelled"], "mos_overall"].notna().all()
    assert frame.loc[~frame["labelled"], "mos_overall"].isna().all()
    assert frame["image"].iloc[0] == "train/DALLE2_0000.png"  # the header-less first row is data
    assert frame["prompt_group"].nunique() == 19259
    assert frame["generator"].nunique() == 15
    assert {"LCM_SDXL", "SDXL_Turbo", "DALLE2", "SD1.5"} <= set(frame["generator"])
    [dim] = aigiqa20k.dimensions
    assert (dim.name, dim.kind, dim.low, dim.high, dim.has_std) == (
        "overall",
        "overall",
        0,
        5,
        False,
    )
    labelled = aigiqa20k.labelled()["mos_overall"]
    assert labelled.min() == pytest.approx(0.1223, abs=1e-4)
    assert labelled.max() == pytest.approx(4.9814, abs=1e-4)


@needs_fixtures
def test_aigiqa20k_official_xlsx(tmp_path: Path) -> None:
    expected = []
    for split, header, size in (
        ("train", ["name", "prompt", "mos"], 300),
        ("val", ["name", "prompt"], 50),
        ("test", ["name", "prompt"], 50),
    ):
        table = pd.read_csv(FIXTURES / "aigiqa-20k" / f"info_{split}.csv", header=None, nrows=size)
        write_xlsx(tmp_path / f"info_{split}.xlsx", [header, *table.values.tolist()])
        expected += [f"{split}/{name}" for name in table[0]]
    manifest = read_dataset("aigiqa-20k", tmp_path)
    assert manifest.frame["image"].tolist() == expected
    assert int(manifest.frame["labelled"].sum()) == 300
    assert manifest.frame["mos_overall"].iloc[0] == pytest.approx(3.6638868235)
    assert manifest.source == str(tmp_path / "info_train.xlsx")


def test_aigiqa20k_csv_with_header_row_keeps_every_data_row(tmp_path: Path) -> None:
    (tmp_path / "info_train.csv").write_text("name,prompt,mos\nA_0000.png,a cat,3.5\n")
    (tmp_path / "info_val.csv").write_text("A_0001.png,a dog\n")
    (tmp_path / "info_test.csv").write_text("name,prompt\nA_0002.png,a cow\n")
    manifest = read_dataset("aigiqa-20k", tmp_path)
    assert manifest.frame["image"].tolist() == [
        "train/A_0000.png",
        "val/A_0001.png",
        "test/A_0002.png",
    ]
    assert sum("header row" in note for note in manifest.notes) == 2


def test_aigiqa20k_subset_selection(tmp_path: Path) -> None:
    (tmp_path / "info_train.csv").write_text("A_0000.png,a cat,3.5\n")
    manifest = read_dataset("aigiqa-20k", tmp_path, subsets=["train"])
    assert manifest.frame["image"].tolist() == ["train/A_0000.png"]


# --- summarize / verify_images -----------------------------------------------------------------


@needs_fixtures
def test_summarize_agiqa3k(agiqa3k: Manifest) -> None:
    summary = summarize(agiqa3k)
    assert json.loads(json.dumps(summary)) == summary
    assert set(summary) == {
        "dataset",
        "rows",
        "labelled_rows",
        "unlabelled_rows",
        "prompt_groups",
        "generators",
        "dimensions",
        "notes",
    }
    assert (summary["dataset"], summary["rows"], summary["labelled_rows"]) == (
        "agiqa-3k",
        2982,
        2982,
    )
    assert (summary["unlabelled_rows"], summary["prompt_groups"], summary["generators"]) == (
        0,
        300,
        6,
    )
    quality = summary["dimensions"]["quality"]
    assert set(quality) == {"kind", "scale", "min", "max", "mean", "has_std"}
    assert quality["kind"] == "quality" and quality["scale"] == [0.0, 5.0] and quality["has_std"]
    assert quality["min"] == pytest.approx(0.0) and quality["max"] == pytest.approx(4.489, abs=1e-3)
    assert quality["mean"] == pytest.approx(2.5, abs=1e-2)
    assert summary["dimensions"]["align"]["kind"] == "alignment"
    assert summary["notes"] == []


@needs_fixtures
def test_summarize_counts_only_labelled_scores(aigiqa20k: Manifest) -> None:
    summary = summarize(aigiqa20k)
    assert (summary["labelled_rows"], summary["unlabelled_rows"]) == (14000, 6000)
    assert summary["prompt_groups"] == 19259 and summary["generators"] == 15
    overall = summary["dimensions"]["overall"]
    assert overall["mean"] == pytest.approx(3.864, abs=1e-3) and not overall["has_std"]
    assert not any(math.isnan(overall[k]) for k in ("min", "max", "mean"))


def test_verify_images_accepts_decodable_images(tmp_path: Path) -> None:
    lines = ["name,prompt,mos_quality,std_quality,mos_align,std_align"]
    for i, suffix in enumerate(("png", "jpg")):
        Image.new("RGB", (8, 8), (40 * i, 90, 200)).save(tmp_path / f"gen_{i}.{suffix}")
        lines.append(f"gen_{i}.{suffix},a prompt {i},2.0,0.1,3.0,0.2")
    (tmp_path / "data.csv").write_text("\n".join(lines) + "\n")
    manifest = read_dataset("agiqa-3k", tmp_path, dataset="synthetic")
    verify_images(manifest, tmp_path)
    verify_images(manifest, tmp_path, progress=True)
