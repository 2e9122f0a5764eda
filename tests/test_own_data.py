"""One's own data without friction: the csv reader, the images option, symlinked images, a short
missing-images report, canonical image paths, and the real AGIQA-3K read as it is."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from agiqa.data.check import summarize, verify_images
from agiqa.data.manifest import Dimension, Manifest, resolve_image
from agiqa.data.readers import read_dataset
from agiqa.errors import ConfigError, DataError
from agiqa.train.data import ManifestImages
from shared_data import AGIQA_3K, FIXTURES, need
from test_data_errors import build_2023, write_xlsx

HEADER_3K = "name,prompt,adj1,adj2,style,mos_quality,std_quality,mos_align,std_align"


def image(path: Path, colour: tuple[int, int, int] = (200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path, format="PNG")  # cache files have no suffix
    return path


# --- canonical image paths (one image, one name) -------------------------------------------------


def write_3k(root: Path, names: list[str]) -> Path:
    rows = [f"{n},prompt {i},,,,1.5,0.2,2.5,0.3" for i, n in enumerate(names)]
    path = root / "data.csv"
    path.write_text("\n".join([HEADER_3K, *rows]) + "\n")
    return path


def test_readers_write_canonical_paths(tmp_path: Path) -> None:
    write_3k(tmp_path, ["./a.jpg", "sub/../b.jpg", "sub\\c.jpg", "sub//./d.jpg"])
    manifest = read_dataset("agiqa-3k", tmp_path, dataset="tiny")
    assert list(manifest.frame["image"]) == ["a.jpg", "b.jpg", "sub/c.jpg", "sub/d.jpg"]


@pytest.mark.parametrize("spelling", ["./x.jpg", "a/../x.jpg", "a\\..\\x.jpg", ".\\x.jpg"])
def test_two_spellings_of_one_image_are_a_duplicate(tmp_path: Path, spelling: str) -> None:
    path = write_3k(tmp_path, ["x.jpg", "y.jpg", spelling])
    with pytest.raises(DataError) as caught:
        read_dataset("agiqa-3k", tmp_path)
    assert (caught.value.file, caught.value.row) == (str(path), 4)
    assert "'x.jpg' appears 2 times" in str(caught.value) and "row 2" in str(caught.value)


def test_agiqa1k_and_20k_compare_normalised_names(tmp_path: Path) -> None:
    rows = [["a_0.jpg", "cat, x, y, anime style", 1.0], ["./a_0.jpg", "cat, x, y, anime style", 2]]
    write_xlsx(tmp_path / "AIGC_MOS_Zscore.xlsx", [["Image", "Prompt", "MOS"], *rows])
    with pytest.raises(DataError, match="conflicting rows"):
        read_dataset("agiqa-1k", tmp_path, on_conflicting_duplicates="error")
    twenty = tmp_path / "20k"
    twenty.mkdir()
    (twenty / "info_train.csv").write_text("A_0000.png,a cat,3.0\n")
    (twenty / "info_val.csv").write_text("B_0001.png,a dog\n")
    (twenty / "info_test.csv").write_text("x/../A_0000.png,a cat\n")
    with pytest.raises(DataError) as caught:
        read_dataset("aigiqa-20k", twenty)
    assert (caught.value.file, caught.value.row) == (str(twenty / "info_test.csv"), 1)


def test_manifest_validation_refuses_a_non_canonical_path(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "image": ["x.jpg", "./y.jpg"],
            "prompt": ["a", "b"],
            "prompt_group": ["p0", "p1"],
            "generator": ["g", "g"],
            "subset": ["all", "all"],
            "labelled": [True, True],
            "mos_q": [1.0, 2.0],
        }
    )
    manifest = Manifest("edited", frame, (Dimension("q", "quality", 0, 5),), source="m.csv")
    with pytest.raises(DataError) as caught:
        manifest.validate()
    assert (caught.value.file, caught.value.row) == ("m.csv", 3)
    assert "not in canonical form" in str(caught.value) and "'y.jpg'" in str(caught.value)


# --- the images option ----------------------------------------------------------------------------


def test_agiqa3k_images_subfolder_is_part_of_the_manifest_path(tmp_path: Path) -> None:
    write_3k(tmp_path, ["g_0.jpg", "./g_1.jpg"])
    for name in ("g_0.jpg", "g_1.jpg"):
        image(tmp_path / "ACGIQA-3K" / name)
    manifest = read_dataset("agiqa-3k", tmp_path, images="ACGIQA-3K/")
    assert list(manifest.frame["image"]) == ["ACGIQA-3K/g_0.jpg", "ACGIQA-3K/g_1.jpg"]
    assert list(manifest.frame["generator"]) == ["g", "g"]
    verify_images(manifest, tmp_path)


@pytest.mark.parametrize("images", ["../elsewhere", "/abs", "a/../../b", 3])
def test_images_option_must_stay_under_the_root(tmp_path: Path, images: object) -> None:
    write_3k(tmp_path, ["g_0.jpg"])
    with pytest.raises(ConfigError, match="images"):
        read_dataset("agiqa-3k", tmp_path, images=images)


def test_image_names_cannot_climb_out_of_the_images_folder(tmp_path: Path) -> None:
    path = write_3k(tmp_path, ["g_0.jpg", "../g_1.jpg"])
    with pytest.raises(DataError) as caught:
        read_dataset("agiqa-3k", tmp_path, images="imgs")
    assert (caught.value.file, caught.value.row) == (str(path), 3)


def test_every_reader_takes_images(tmp_path: Path) -> None:
    onek = tmp_path / "1k"
    onek.mkdir()
    rows = [["deepai_0.jpg", "cat, x, y, anime style", 1.0]]
    write_xlsx(onek / "AIGC_MOS_Zscore.xlsx", [["Image", "Prompt", "MOS"], *rows])
    assert read_dataset("agiqa-1k", onek).frame["image"][0] == "file/deepai_0.jpg"
    assert read_dataset("agiqa-1k", onek, images="").frame["image"][0] == "deepai_0.jpg"
    assert (
        read_dataset("agiqa-1k", onek, images="x/file").frame["image"][0] == "x/file/deepai_0.jpg"
    )

    twenty = tmp_path / "20k"
    twenty.mkdir()
    (twenty / "info_train.csv").write_text("A_0000.png,a cat,3.0\n")
    (twenty / "info_val.csv").write_text("B_0001.png,a dog\n")
    (twenty / "info_test.csv").write_text("C_0002.png,a cow\n")
    frame = read_dataset("aigiqa-20k", twenty, images="AIGCQA-30K-Image").frame
    assert list(frame["image"]) == [
        "AIGCQA-30K-Image/train/A_0000.png",
        "AIGCQA-30K-Image/val/B_0001.png",
        "AIGCQA-30K-Image/test/C_0002.png",
    ]
    assert list(frame["generator"]) == ["A", "B", "C"]

    mm = build_2023(tmp_path / "2023")
    (mm / "pics" / "allimg").mkdir(parents=True)
    flat = read_dataset("aigciqa2023", mm, images="pics")
    assert flat.frame["image"].iloc[-1] == "pics/allimg/2399.png"
    assert read_dataset("aigciqa2023", mm).frame["image"][0] == "Image/Controlnet/000-1.png"


# --- missing images: a summary, not thousands of lines --------------------------------------------


def test_missing_images_are_summarised_with_a_hint(tmp_path: Path) -> None:
    names = [f"g_{i:03d}.jpg" for i in range(30)]
    write_3k(tmp_path, names)
    image(tmp_path / "g_000.jpg")
    (tmp_path / "g_001.jpg").write_bytes(b"not an image")
    manifest = read_dataset("agiqa-3k", tmp_path, dataset="tiny")
    with pytest.raises(DataError) as caught:
        verify_images(manifest, tmp_path)
    message = str(caught.value)
    lines = message.splitlines()
    assert "29 of 30 images" in lines[0] and "28 missing, 1 undecodable" in lines[0]
    listed = [line for line in lines if line.startswith("  manifest row")]
    assert len(listed) == 10
    assert listed[0].startswith("  manifest row 3: g_001.jpg: undecodable")
    assert listed[1] == "  manifest row 4: g_002.jpg: missing"
    assert "  ... and 19 more" in lines
    assert lines[-1] == (
        "hint: is `root` right? use `images:` if the images are in a sub-folder of it"
    )
    assert "g_029.jpg" not in message


def test_no_hint_when_nothing_is_missing(tmp_path: Path) -> None:
    write_3k(tmp_path, ["g_0.jpg"])
    (tmp_path / "g_0.jpg").write_bytes(b"garbage")
    with pytest.raises(DataError) as caught:
        verify_images(read_dataset("agiqa-3k", tmp_path), tmp_path)
    assert "hint:" not in str(caught.value) and "none is usable" in str(caught.value)


# --- symlinked images -----------------------------------------------------------------------------


def dvc_repo(base: Path) -> tuple[Path, Path]:
    """A repository with a DVC cache holding two images, and an empty dataset root in it."""
    repo = base / "repo"
    cache = repo / ".dvc" / "cache" / "files" / "md5"
    image(cache / "aa" / "11", (10, 20, 30))
    image(cache / "bb" / "22", (40, 50, 60))
    root = repo / "data" / "raw" / "own"
    root.mkdir(parents=True)
    return repo, root


def test_per_file_links_into_the_dvc_cache_are_images(tmp_path: Path) -> None:
    repo, root = dvc_repo(tmp_path)
    cache = repo / ".dvc" / "cache" / "files" / "md5"
    write_3k(root, ["g_0.jpg", "g_1.jpg"])
    (root / "g_0.jpg").symlink_to(cache / "aa" / "11")
    (root / "g_1.jpg").symlink_to(os.path.relpath(cache / "bb" / "22", root))
    manifest = read_dataset("agiqa-3k", root)
    verify_images(manifest, root)
    loaded = ManifestImages(manifest.frame, root, "m.csv")  # training resolves them too
    assert loaded.load(1).getpixel((0, 0)) == (40, 50, 60)


def test_a_moved_dvc_cache_is_read_from_the_dvc_config(tmp_path: Path) -> None:
    repo, root = dvc_repo(tmp_path)
    shared = image(tmp_path / "shared-cache" / "cc" / "33")
    (repo / ".dvc" / "config").write_text("[cache]\n    dir = ../../shared-cache\n")
    write_3k(root, ["g_0.jpg"])
    (root / "g_0.jpg").symlink_to(shared)
    verify_images(read_dataset("agiqa-3k", root), root)


def test_links_elsewhere_are_refused_unless_allowed(tmp_path: Path) -> None:
    _, root = dvc_repo(tmp_path)
    outside = image(tmp_path / "elsewhere" / "pic.jpg")
    write_3k(root, ["g_0.jpg", "imgs/g_1.jpg"])
    (root / "g_0.jpg").symlink_to(outside)
    (root / "imgs").symlink_to(tmp_path / "elsewhere")  # a linked folder: same rule
    image(tmp_path / "elsewhere" / "g_1.jpg", (1, 2, 3))
    manifest = read_dataset("agiqa-3k", root)
    with pytest.raises(DataError) as caught:
        verify_images(manifest, root)
    message = str(caught.value)
    assert "2 unsafe path" in message
    assert (
        "manifest row 2: g_0.jpg: unsafe path (image path 'g_0.jpg' is a symbolic link" in message
    )
    assert f"to '{outside.resolve()}'" in message and "allowed_link_roots" in message
    verify_images(manifest, root, allowed_link_roots=[tmp_path / "elsewhere"])
    with pytest.raises(ConfigError, match="not a folder"):
        verify_images(manifest, root, allowed_link_roots=[tmp_path / "nowhere"])


def test_resolve_image_names_the_manifest_row_of_a_refused_link(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "x.jpg").symlink_to(image(tmp_path / "out.jpg"))
    with pytest.raises(DataError) as caught:
        resolve_image(root, "x.jpg", file="m.csv", row=9)
    assert (caught.value.file, caught.value.row) == ("m.csv", 9)
    assert resolve_image(root, "x.jpg", file="m.csv", row=9, allowed_link_roots=[tmp_path])


@pytest.mark.parametrize("link", ["symbolic", "hard"])
def test_one_image_under_two_names_is_refused_naming_the_rows(tmp_path: Path, link: str) -> None:
    """Hardening II item 9: a link inside the root made one image two rows, which a split could
    put on both sides."""
    image(tmp_path / "a.jpg")
    image(tmp_path / "c.jpg", (1, 2, 3))
    make = os.symlink if link == "symbolic" else os.link
    make(tmp_path / "a.jpg", tmp_path / "b.jpg")
    write_3k(tmp_path, ["a.jpg", "c.jpg", "b.jpg"])
    manifest = read_dataset("agiqa-3k", tmp_path)
    with pytest.raises(DataError) as caught:
        verify_images(manifest, tmp_path)
    message = str(caught.value)
    assert caught.value.file == manifest.source
    assert "1 image file(s)" in message and "more than one name" in message
    assert "manifest row 2 (a.jpg) = manifest row 4 (b.jpg)" in message
    assert "c.jpg" not in message


def test_identical_files_in_a_dvc_cache_are_one_image(tmp_path: Path) -> None:
    repo, root = dvc_repo(tmp_path)
    cache = repo / ".dvc" / "cache" / "files" / "md5"
    write_3k(root, ["g_0.jpg", "g_1.jpg"])
    (root / "g_0.jpg").symlink_to(cache / "aa" / "11")
    (root / "g_1.jpg").symlink_to(cache / "aa" / "11")  # DVC stores identical content once
    with pytest.raises(DataError, match=r"row 2 \(g_0.jpg\) = manifest row 3 \(g_1.jpg\)"):
        verify_images(read_dataset("agiqa-3k", root), root)


def test_a_metadata_file_linked_from_outside_the_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    image(root / "a.jpg")
    (tmp_path / "elsewhere").mkdir()
    outside = write_3k(tmp_path / "elsewhere", ["a.jpg"])
    (root / "data.csv").symlink_to(outside)
    with pytest.raises(DataError) as caught:
        read_dataset("agiqa-3k", root)
    assert caught.value.file == str(root / "data.csv")
    assert f"symbolic link (or lies under one) to '{outside.resolve()}'" in str(caught.value)
    repo, dvc_root = dvc_repo(tmp_path / "dvc")  # a link into the DVC cache is DVC's checkout
    (repo / ".dvc" / "cache" / "files" / "md5" / "dd").mkdir()
    cached = write_3k(repo / ".dvc" / "cache" / "files" / "md5" / "dd", ["a.jpg"])
    image(dvc_root / "a.jpg")
    (dvc_root / "data.csv").symlink_to(cached)
    assert list(read_dataset("agiqa-3k", dvc_root).frame["image"]) == ["a.jpg"]


def test_verification_applies_the_size_limits_of_training_and_scoring(tmp_path: Path) -> None:
    image(tmp_path / "ok.jpg")
    Image.new("RGB", (2_000, 100)).save(tmp_path / "strip.png")
    write_3k(tmp_path, ["ok.jpg", "strip.png"])
    with pytest.raises(DataError) as caught:
        verify_images(read_dataset("agiqa-3k", tmp_path), tmp_path)
    message = str(caught.value)
    assert "1 unsupported size" in message
    assert "manifest row 3: strip.png: unsupported size (2000 x 100 pixels" in message


# --- the generic csv reader -----------------------------------------------------------------------

DIMENSIONS = {
    "quality": {"column": "MOS", "kind": "quality", "low": 1, "high": 5, "std": "SD"},
    "match": {"column": "align score", "kind": "alignment", "low": 0, "high": 100},
}
COLUMNS = {"image": "file", "prompt": "text", "generator": "model"}


def own_study(root: Path, rows: list[str] | None = None) -> Path:
    header = "file,text,model,MOS,SD,align score,notes"
    rows = rows or [
        "a/img_0.png,a red cube,sdxl,4.5,0.3,80,x",
        "a/img_1.png,a red cube,flux,2.0,0.4,55.5,",
        "img_2.png,a blue cone,sdxl,1.0,0.1,0,y",
    ]
    path = root / "study.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_csv_reader_reads_ones_own_study(tmp_path: Path) -> None:
    own_study(tmp_path)
    for name in ("a/img_0.png", "a/img_1.png", "img_2.png"):
        image(tmp_path / "pics" / name)
    manifest = read_dataset(
        "csv",
        tmp_path,
        dataset="mine",
        metadata="study.csv",
        columns=COLUMNS,
        dimensions=DIMENSIONS,
        images="pics",
    )
    frame = manifest.frame
    assert list(frame["image"]) == ["pics/a/img_0.png", "pics/a/img_1.png", "pics/img_2.png"]
    assert list(frame["generator"]) == ["sdxl", "flux", "sdxl"]
    assert list(frame["prompt_group"]) == ["p000", "p000", "p001"]
    assert list(frame["mos_quality"]) == [4.5, 2.0, 1.0]
    assert list(frame["std_quality"]) == [0.3, 0.4, 0.1]
    assert list(frame["mos_match"]) == [80.0, 55.5, 0.0]
    assert "std_match" not in frame
    assert [(d.name, d.kind, d.low, d.high, d.has_std) for d in manifest.dimensions] == [
        ("quality", "quality", 1.0, 5.0, True),
        ("match", "alignment", 0.0, 100.0, False),
    ]
    assert manifest.source == str(tmp_path / "study.csv") and frame["labelled"].all()
    verify_images(manifest, tmp_path)
    summary = summarize(manifest)
    assert summary["prompt_groups"] == 2 and summary["generators"] == 2


def test_csv_reader_defaults_and_xlsx(tmp_path: Path) -> None:
    rows = [
        ["image", "prompt", "group", "q"],
        ["x.png", "a cat", "g1", 3],
        ["y.png", "a dog", "g1", 4],
    ]
    write_xlsx(tmp_path / "own.xlsx", rows)
    manifest = read_dataset(
        "csv",
        tmp_path,
        metadata="own.xlsx",
        columns={"prompt_group": "group"},
        dimensions={"q": {"kind": "quality", "low": 0, "high": 5}},
    )
    assert manifest.dataset == "csv"
    assert list(manifest.frame["prompt_group"]) == ["g1", "g1"]
    assert list(manifest.frame["generator"]) == ["unknown", "unknown"]
    assert any("generator" in note for note in manifest.notes)


@pytest.mark.parametrize(
    ("position", "line", "words"),
    [
        (1, "./a/img_0.png,a red cube,flux,2.0,0.4,55.5,", ["'a/img_0.png' appears 2 times"]),
        (2, "img_2.png,a blue cone,sdxl,5.5,0.1,0,y", ["MOS 5.5 is outside the scale [1, 5]"]),
        (2, "img_2.png,a blue cone,sdxl,1.0,-0.1,0,y", ["SD -0.1 is negative"]),
        (2, "img_2.png,a blue cone,sdxl,1.0,0.1,,y", ["align score is empty"]),
        (2, "img_2.png,a blue cone,,1.0,0.1,0,y", ["empty 'model'"]),
        (2, "../img_2.png,a blue cone,sdxl,1.0,0.1,0,y", ["escapes"]),
    ],
)
def test_csv_reader_errors_name_file_and_row(
    tmp_path: Path, position: int, line: str, words: list[str]
) -> None:
    rows = [
        "a/img_0.png,a red cube,sdxl,4.5,0.3,80,x",
        "a/img_1.png,a red cube,flux,2.0,0.4,55.5,",
        "img_2.png,a blue cone,sdxl,1.0,0.1,0,y",
    ]
    rows[position] = line
    path = own_study(tmp_path, rows)
    with pytest.raises(DataError) as caught:
        read_dataset("csv", tmp_path, metadata="study.csv", columns=COLUMNS, dimensions=DIMENSIONS)
    assert (caught.value.file, caught.value.row) == (str(path), position + 2)
    for word in words:
        assert word in str(caught.value)


def test_csv_reader_missing_column_names_the_header(tmp_path: Path) -> None:
    path = own_study(tmp_path)
    dims = {"quality": {"column": "Mos", "kind": "quality", "low": 1, "high": 5}}
    with pytest.raises(DataError) as caught:
        read_dataset("csv", tmp_path, metadata="study.csv", columns=COLUMNS, dimensions=dims)
    assert (caught.value.file, caught.value.row) == (str(path), 1)
    assert "Mos" in str(caught.value)


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"dimensions": None}, ["needs dimensions"]),
        ({"dimensions": {"q": {"kind": "looks", "low": 0, "high": 5}}}, ["kind"]),
        ({"dimensions": {"q": {"kind": "quality", "low": 5, "high": 5}}}, ["empty"]),
        ({"dimensions": {"q": {"kind": "quality", "low": "0", "high": 5}}}, ["low"]),
        ({"dimensions": {"q": {"kind": "quality", "low": 0, "high": 5, "sd": "x"}}}, ["sd"]),
        ({"dimensions": {"bad name": {"kind": "quality", "low": 0, "high": 5}}}, ["name"]),
        ({"columns": {"picture": "x"}}, ["picture"]),
        ({"metadata": "../data.csv"}, ["metadata", "escapes"]),
        ({"metadata": "data.tsv"}, [".csv or .xlsx"]),
        ({"unknown_option": 1}, ["unknown_option"]),
    ],
)
def test_csv_reader_bad_options_are_config_errors(
    tmp_path: Path, options: dict, words: list[str]
) -> None:
    own_study(tmp_path)
    options = {"dimensions": DIMENSIONS, "metadata": "study.csv", "columns": COLUMNS} | options
    with pytest.raises(ConfigError) as caught:
        read_dataset("csv", tmp_path, **options)
    for word in words:
        assert word in str(caught.value)


def test_csv_reader_missing_metadata_file(tmp_path: Path) -> None:
    dims = {"q": {"kind": "quality", "low": 0, "high": 5}}
    with pytest.raises(DataError) as caught:
        read_dataset("csv", tmp_path, dimensions=dims)
    assert caught.value.file == str(tmp_path / "data.csv")
    assert "<root>/data.csv" in str(caught.value)


# --- published descriptions under an images sub-folder -------------------------------------------


@pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"metadata fixtures not found at {FIXTURES}")
def test_published_descriptions_map_through_the_images_subfolder(tmp_path: Path) -> None:
    from agiqa.describe.backends import BackendContext
    from agiqa.describe.backends.base import ImageItem
    from agiqa.describe.backends.published import SOURCES, PublishedBackend
    from agiqa.describe.templates import TEMPLATES

    shutil.copy(FIXTURES / "agiqa-3k" / "data.csv", tmp_path / "data.csv")
    manifest = read_dataset("agiqa-3k", tmp_path, images="ACGIQA-3K")
    entry = {
        "url": (FIXTURES / "agiqa-3k" / "scva-agiqa" / "data.csv").as_uri(),
        "sha256": SOURCES["agiqa-3k"].sha256,
        "download_dir": str(tmp_path / "downloads"),
    }
    backend = PublishedBackend.from_config(entry, BackendContext("agiqa-3k", "agiqa-3k"))
    first = manifest.frame["image"].iloc[0]
    assert first == "ACGIQA-3K/AttnGAN_normal_000.jpg"
    template = TEMPLATES["content_first"]
    reply = backend.describe(ImageItem(image=first), template)
    assert reply.text.startswith("A distorted, abstract - like figure")
    texts = {backend.describe(ImageItem(image=i), template).text for i in manifest.frame["image"]}
    assert len(texts) > 2900  # every image maps to its own description


# --- the real AGIQA-3K, read as it is -------------------------------------------------------------


@pytest.fixture(scope="module")
def real_3k() -> Path:
    need(AGIQA_3K.is_dir(), f"the real AGIQA-3K is not at {AGIQA_3K}")
    return AGIQA_3K


def test_real_agiqa3k_metadata(real_3k: Path) -> None:
    manifest = read_dataset("agiqa-3k", real_3k)
    frame = manifest.frame
    assert len(frame) == 2982 and frame["image"].is_unique
    assert frame["prompt_group"].nunique() == 300
    assert frame["generator"].value_counts().to_dict() == {
        "sd1.5": 1200,
        "midjourney": 592,
        "AttnGAN": 300,
        "glide": 300,
        "xl2.2": 300,
        "DALLE2": 290,
    }
    assert manifest.notes == []
    on_disk = {p.name for p in real_3k.glob("*.jpg")}
    assert set(frame["image"]) == on_disk


def test_real_agiqa3k_images_decode(real_3k: Path) -> None:
    manifest = read_dataset("agiqa-3k", real_3k)
    # a sample across all generators keeps this quick on 2 cores
    sample = manifest.frame.iloc[::50].reset_index(drop=True)
    assert sample["generator"].nunique() == 6
    verify_images(Manifest("sample", sample, manifest.dimensions, source="sample"), real_3k)
    decoded = ManifestImages(sample.iloc[:1], real_3k, "sample").load(0)
    assert decoded.mode == "RGB" and decoded.size == (512, 512)
    assert np.asarray(decoded).std() > 0


# --- the command line passes reader options and link roots ----------------------------------------


def test_cli_check_and_manifest_take_reader_options(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from agiqa.cli import app

    root = tmp_path / "own"
    root.mkdir()
    write_3k(root, ["g_0.jpg", "g_1.jpg"])
    image(root / "ACGIQA-3K" / "g_0.jpg")
    (root / "ACGIQA-3K" / "g_1.jpg").symlink_to(image(tmp_path / "store" / "g_1.jpg"))
    options = '{"images": "ACGIQA-3K"}'
    check = ["datasets", "check", "own", "--reader", "agiqa-3k", "--root", str(root)]
    out = tmp_path / "verified.json"
    refused = CliRunner().invoke(app, [*check, "--options", options])
    assert refused.exit_code == 2 and "symbolic link" in refused.output
    link = ["--allowed-link-root", str(tmp_path / "store")]
    result = CliRunner().invoke(app, [*check, "--options", options, *link, "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads(out.read_text())
    assert (summary["images"], summary["root"], summary["images_verified"]) == (2, str(root), True)

    csv = tmp_path / "m.csv"
    args = ["manifest", "own", "--reader", "agiqa-3k", "--root", str(root), "--out", str(csv)]
    made = CliRunner().invoke(app, [*args, "--options", options])
    assert made.exit_code == 0, made.output
    assert list(Manifest.load(csv).frame["image"]) == ["ACGIQA-3K/g_0.jpg", "ACGIQA-3K/g_1.jpg"]
    bad = CliRunner().invoke(app, [*check, "--options", "{images: x}"])
    assert bad.exit_code == 2 and "not valid JSON" in bad.output
