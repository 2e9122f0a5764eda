"""Bad dataset input: every case is a DataError that names the file and the row at fault."""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import openpyxl
import pandas as pd
import pytest
import scipy.io
from PIL import Image

from agiqa.data.check import verify_images
from agiqa.data.manifest import Dimension, Manifest
from agiqa.data.readers import read_dataset
from agiqa.errors import ConfigError, DataError

HEADER_3K = "name,prompt,adj1,adj2,style,mos_quality,std_quality,mos_align,std_align"


def good_3k_rows() -> list[str]:
    return [
        "gen_000.jpg,a red cube,,,,1.5,0.2,2.5,0.3",
        "gen_001.jpg,a blue sphere,,,,4.0,0.1,1.0,0.2",
        "gen_002.jpg,a green cone,,,,3.0,0.4,4.5,0.5",
    ]


def write_3k(root: Path, rows: Sequence[str], header: str = HEADER_3K) -> Path:
    path = root / "data.csv"
    path.write_text("\r\n".join([header, *rows]) + "\r\n")
    return path


def write_xlsx(path: Path, rows: Sequence[Sequence[object]]) -> Path:
    book = openpyxl.Workbook()
    for row in rows:
        book.active.append(list(row))
    book.save(path)
    return path


def expect_error(
    reader: str, root: Path, file: Path, row: int | None, *words: str, **options: object
) -> DataError:
    """Run a reader that must fail and check where the error points."""
    with pytest.raises(DataError) as caught:
        read_dataset(reader, root, **options)
    error = caught.value
    assert error.file == str(file), str(error)
    assert error.row == row, str(error)
    where = str(file) if row is None else f"{file}, row {row}"
    assert str(error).startswith(where)
    for word in words:
        assert word in str(error)
    return error


# --- AGIQA-3K format ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("position", "line", "row", "words"),
    [
        (1, "gen_001.jpg,a blue sphere,,,,nan,0.1,1.0,0.2", 3, ["mos_quality", "finite"]),
        (1, "gen_001.jpg,a blue sphere,,,,,0.1,1.0,0.2", 3, ["mos_quality", "empty"]),
        (2, "gen_002.jpg,a green cone,,,,3.0,0.4,good,0.5", 4, ["mos_align", "not a number"]),
        (0, "gen_000.jpg,a red cube,,,,5.5,0.2,2.5,0.3", 2, ["outside the scale [0, 5]"]),
        (0, "gen_000.jpg,a red cube,,,,1.5,0.2,2.5,inf", 2, ["std_align", "finite"]),
        (2, "gen_002.jpg,a green cone,,,,3.0,-0.4,4.5,0.5", 4, ["std_quality", "negative"]),
        (2, "gen_000.jpg,a green cone,,,,3.0,0.4,4.5,0.5", 4, ["gen_000.jpg", "row 2", "row 4"]),
        (1, "/etc/gen_001.jpg,a blue sphere,,,,4.0,0.1,1.0,0.2", 3, ["escapes the dataset root"]),
        (1, "../gen_001.jpg,a blue sphere,,,,4.0,0.1,1.0,0.2", 3, ["escapes the dataset root"]),
        (1, "sub/../../gen_001.jpg,a blue sphere,,,,4.0,0.1,1.0,0.2", 3, ["escapes"]),
        (1, "C:\\gen_001.jpg,a blue sphere,,,,4.0,0.1,1.0,0.2", 3, ["escapes"]),
        # one image under two spellings is a duplicate (it could land on both sides of a split)
        (2, "./gen_000.jpg,a green cone,,,,3.0,0.4,4.5,0.5", 4, ["gen_000.jpg", "row 2"]),
        (2, "sub\\..\\gen_000.jpg,a green cone,,,,3.0,0.4,4.5,0.5", 4, ["gen_000.jpg"]),
        (2, "sub/./../gen_000.jpg,a green cone,,,,3.0,0.4,4.5,0.5", 4, ["gen_000.jpg"]),
        (1, ",a blue sphere,,,,4.0,0.1,1.0,0.2", 3, ["empty"]),
        (2, "gen_002.jpg,,,,,3.0,0.4,4.5,0.5", 4, ["empty 'prompt'"]),
        (1, "gen_001.jpg,a blue, sphere,,,,4.0,0.1,1.0,0.2", 3, ["10 cells", "header has 9"]),
        (1, "gen_001.jpg,a blue sphere,,,,4.0,0.1,1.0", 3, ["8 cells"]),
    ],
)
def test_agiqa3k_bad_rows(
    tmp_path: Path, position: int, line: str, row: int, words: list[str]
) -> None:
    rows = good_3k_rows()
    rows[position] = line
    path = write_3k(tmp_path, rows)
    expect_error("agiqa-3k", tmp_path, path, row, *words, dataset="synthetic")


def test_agiqa3k_row_numbers_count_lines_of_multiline_records(tmp_path: Path) -> None:
    rows = good_3k_rows()
    rows[0] = 'gen_000.jpg,"a red cube\r\non two lines",,,,1.5,0.2,2.5,0.3'
    rows[2] = "gen_002.jpg,a green cone,,,,3.0,0.4,n/a,0.5"
    path = write_3k(tmp_path, rows)
    expect_error("agiqa-3k", tmp_path, path, 5, "mos_align")


def test_agiqa3k_missing_metadata_file(tmp_path: Path) -> None:
    expect_error("agiqa-3k", tmp_path, tmp_path / "data.csv", None, "official layout", "<root>/")


def test_agiqa3k_missing_column(tmp_path: Path) -> None:
    header = HEADER_3K.replace(",mos_align", "")
    path = write_3k(tmp_path, [r.replace(",2.5,", ",") for r in good_3k_rows()[:1]], header)
    expect_error("agiqa-3k", tmp_path, path, 1, "missing required column", "mos_align")


def test_agiqa3k_header_only(tmp_path: Path) -> None:
    path = write_3k(tmp_path, [])
    expect_error("agiqa-3k", tmp_path, path, None, "no data rows")


@pytest.mark.parametrize(
    ("payload", "row", "words"),
    [
        (b"\r\ngen_000.jpg,a \xff\xfe cube,,,,1.5,0.2,2.5,0.3\r\n", 2, ["not a UTF-8"]),
        (b"\r\ngen_000.jpg,a\x00 cube,,,,1.5,0.2,2.5,0.3\r\n", 2, ["NUL byte"]),
        (b'\r\ngen_000.jpg,"a red cube,,,,1.5,0.2,2.5,0.3\r\n', 2, ["malformed CSV"]),
        (b'\r\ngen_000.jpg,"a red" cube,,,,1.5,0.2,2.5,0.3\r\n', 2, ["malformed CSV"]),
    ],
)
def test_agiqa3k_garbled_csv(tmp_path: Path, payload: bytes, row: int, words: list[str]) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(HEADER_3K.encode() + payload)
    expect_error("agiqa-3k", tmp_path, path, row, *words)


def test_agiqa3k_binary_file(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(b"\x89PNG" + bytes(range(128, 256)) * 4)
    expect_error("agiqa-3k", tmp_path, path, 1, "garbled")


# --- AGIQA-1K ----------------------------------------------------------------------------------

HEADER_1K = ["Image", "Prompt", "MOS"]
ROWS_1K = [
    ["deepai_0_0_0_0.jpg", "bird, driving aircraft, city, anime style", 2.79],
    ["deepai_0_0_0_1.jpg", "bird, driving aircraft, city, realistic style", 4.16],
    ["dreamStudio_0_0_0_0.jpg", "bird, driving aircraft, city, anime style", 1.2],
]


def test_agiqa1k_missing_metadata_names_both_candidates(tmp_path: Path) -> None:
    official = tmp_path / "AIGC_MOS_Zscore.xlsx"
    error = expect_error("agiqa-1k", tmp_path, official, None, "official layout", "Image | Prompt")
    assert str(tmp_path / "AIGC_MOS_Zscore.csv") in str(error)


def test_agiqa1k_empty_mos_cell(tmp_path: Path) -> None:
    rows = [list(r) for r in ROWS_1K]
    rows[2][2] = None
    path = write_xlsx(tmp_path / "AIGC_MOS_Zscore.xlsx", [HEADER_1K, *rows])
    expect_error("agiqa-1k", tmp_path, path, 4, "MOS is empty")


def test_agiqa1k_missing_column(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "AIGC_MOS_Zscore.xlsx", [["Image", "Prompt", "Score"], *ROWS_1K])
    expect_error("agiqa-1k", tmp_path, path, 1, "MOS")


def test_agiqa1k_escaping_path(tmp_path: Path) -> None:
    rows = [*ROWS_1K, ["../../secret.jpg", "x, y, z, anime style", 1.0]]
    path = write_xlsx(tmp_path / "AIGC_MOS_Zscore.xlsx", [HEADER_1K, *rows])
    expect_error("agiqa-1k", tmp_path, path, 5, "escapes")


def test_agiqa1k_conflict_error_mode(tmp_path: Path) -> None:
    rows = [*ROWS_1K, [ROWS_1K[0][0], ROWS_1K[0][1], 0.5]]
    path = write_xlsx(tmp_path / "AIGC_MOS_Zscore.xlsx", [HEADER_1K, *rows])
    expect_error(
        "agiqa-1k",
        tmp_path,
        path,
        5,
        "row 2",
        "row 5",
        ROWS_1K[0][0],
        on_conflicting_duplicates="error",
    )
    dropped = read_dataset("agiqa-1k", tmp_path)
    assert f"file/{ROWS_1K[0][0]}" not in set(dropped.frame["image"])


def test_agiqa1k_garbled_xlsx(tmp_path: Path) -> None:
    path = tmp_path / "AIGC_MOS_Zscore.xlsx"
    path.write_bytes(b"PK\x03\x04 not really a workbook")
    expect_error("agiqa-1k", tmp_path, path, None, "not a readable .xlsx")


def rewrite_sheet(path: Path, edit: Callable[[str], str]) -> Path:
    """Edit the first worksheet's XML inside an .xlsx (what a crafted or stale file holds)."""
    with zipfile.ZipFile(path) as archive:
        parts = {info.filename: archive.read(info) for info in archive.infolist()}
    sheet = "xl/worksheets/sheet1.xml"
    parts[sheet] = edit(parts[sheet].decode()).encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in parts.items():
            archive.writestr(name, data)
    return path


def forty_rows() -> list[list[object]]:
    return [[f"deepai_{i}_0_0_0.jpg", f"bird {i}, x, y, anime style", 2.0] for i in range(40)]


def test_a_stale_sheet_dimension_hides_no_row(tmp_path: Path) -> None:
    """Hardening II item 6: a <dimension> of A1:C21 read 20 of the 40 data rows."""
    path = write_xlsx(tmp_path / "AIGC_MOS_Zscore.xlsx", [HEADER_1K, *forty_rows()])
    rewrite_sheet(
        path, lambda xml: re.sub(r'<dimension ref="[^"]+"', '<dimension ref="A1:C21"', xml)
    )
    assert 'ref="A1:C21"' in zipfile.ZipFile(path).read("xl/worksheets/sheet1.xml").decode()
    assert len(read_dataset("agiqa-1k", tmp_path).frame) == 40


def test_a_sheet_declaring_a_million_wide_rows_is_refused_not_expanded(tmp_path: Path) -> None:
    """Item 6: 7 KB that declares A1:XFD1048576 and holds its last cell kept the reader busy for
    over 5 minutes (a million rows padded to 16,384 columns); now the row count stops it."""
    path = write_xlsx(tmp_path / "AIGC_MOS_Zscore.xlsx", [HEADER_1K, *ROWS_1K])
    far = '<row r="1048576"><c r="XFD1048576" t="n"><v>1</v></c></row></sheetData>'
    rewrite_sheet(
        path,
        lambda xml: re.sub(
            r'<dimension ref="[^"]+"', '<dimension ref="A1:XFD1048576"', xml
        ).replace("</sheetData>", far),
    )
    assert path.stat().st_size < 8_000
    expect_error("agiqa-1k", tmp_path, path, 500_001, "goes on past row 500,000")


def test_a_cell_far_right_of_the_table_is_refused(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "AIGC_MOS_Zscore.xlsx", [HEADER_1K, *ROWS_1K])
    wide = '<row r="3"><c r="A3" t="inlineStr"><is><t>x</t></is></c><c r="XFD3"><v>1</v></c></row>'
    rewrite_sheet(path, lambda xml: re.sub(r'<row r="3".*?</row>', wide, xml))
    expect_error("agiqa-1k", tmp_path, path, 3, "column 16,384", "beyond the 1,000 columns")


def test_a_workbook_that_unpacks_too_large_is_refused_before_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agiqa.data.readers import _common

    path = write_xlsx(tmp_path / "AIGC_MOS_Zscore.xlsx", [HEADER_1K, *ROWS_1K])
    unpacked = sum(i.file_size for i in zipfile.ZipFile(path).infolist())
    monkeypatch.setattr(_common, "XLSX_MAX_UNCOMPRESSED", unpacked - 1)
    expect_error("agiqa-1k", tmp_path, path, None, f"unpacks to {unpacked:,} bytes")


def test_agiqa1k_bad_option(tmp_path: Path) -> None:
    write_xlsx(tmp_path / "AIGC_MOS_Zscore.xlsx", [HEADER_1K, *ROWS_1K])
    with pytest.raises(ConfigError, match="on_conflicting_duplicates"):
        read_dataset("agiqa-1k", tmp_path, on_conflicting_duplicates="keep")


# --- AIGIQA-20K --------------------------------------------------------------------------------


def write_20k(root: Path, train: str, val: str = "B_0001.png,a dog\n", test: str = "") -> None:
    (root / "info_train.csv").write_text(train)
    (root / "info_val.csv").write_text(val)
    (root / "info_test.csv").write_text(test or "C_0002.png,a cow\n")


@pytest.mark.parametrize(
    ("train", "row", "words"),
    [
        ("A_0000.png,a cat,high\nA_0001.png,a cat,3.0\n", 1, ["'high' is not a number"]),
        ("A_0000.png,a cat,3.0\nA_0001.png,a cat,\n", 2, ["mos is empty"]),
        ("A_0000.png,a cat,3.0\nA_0001.png,a cat\n", 2, ["2 cells, expected 3"]),
        ("A_0000.png,a cat,3.0\nA_0001.png,a, cat,3.0\n", 2, ["4 cells, expected 3"]),
        ("A_0000.png,a cat,3.0\n../A_0001.png,a cat,3.0\n", 2, ["escapes"]),
        ("A_0000.png,a cat,3.0\nA_0000.png,a cat,3.5\n", 2, ["A_0000.png"]),
    ],
)
def test_aigiqa20k_bad_train_rows(tmp_path: Path, train: str, row: int, words: list[str]) -> None:
    write_20k(tmp_path, train)
    expect_error("aigiqa-20k", tmp_path, tmp_path / "info_train.csv", row, *words)


def test_aigiqa20k_duplicate_across_splits(tmp_path: Path) -> None:
    write_20k(tmp_path, "A_0000.png,a cat,3.0\n", val="B_0001.png,a dog\nA_0000.png,a cat\n")
    error = expect_error("aigiqa-20k", tmp_path, tmp_path / "info_val.csv", 2, "A_0000.png")
    assert f"{tmp_path / 'info_train.csv'} row 1" in str(error)


def test_aigiqa20k_missing_split_file(tmp_path: Path) -> None:
    write_20k(tmp_path, "A_0000.png,a cat,3.0\n")
    (tmp_path / "info_test.csv").unlink()
    error = expect_error("aigiqa-20k", tmp_path, tmp_path / "info_test.xlsx", None, "layout")
    assert str(tmp_path / "info_test.csv") in str(error)


def test_aigiqa20k_xlsx_missing_mos_column(tmp_path: Path) -> None:
    write_20k(tmp_path, "A_0000.png,a cat,3.0\n")
    path = write_xlsx(tmp_path / "info_train.xlsx", [["name", "prompt"], ["A_0000.png", "a cat"]])
    expect_error("aigiqa-20k", tmp_path, path, 1, "mos")


def test_aigiqa20k_bad_subsets(tmp_path: Path) -> None:
    write_20k(tmp_path, "A_0000.png,a cat,3.0\n")
    with pytest.raises(ConfigError, match="subsets"):
        read_dataset("aigiqa-20k", tmp_path, subsets=["train", "holdout"])


# --- AIGCIQA2023 -------------------------------------------------------------------------------

N_2023 = 2400


def build_2023(root: Path) -> Path:
    """A valid official layout with made-up scores; tests then break one file."""
    values = np.linspace(30.0, 70.0, N_2023).reshape(-1, 1)
    for n in (1, 2, 3):
        save_mat(root / "DATA" / "MOS" / f"mosz{n}.mat", {"MOSz": values})
        save_mat(root / "DATA" / "STD" / f"SD{n}.mat", {"SD": np.full((N_2023, 1), 1.0)})
    write_xlsx(root / "AIGCIQA2023_Prompts.xlsx", prompt_rows(100))
    return root


def save_mat(path: Path, content: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, content)
    return path


def prompt_rows(count: int) -> list[list[str]]:
    return [["Basic", "Animals", f"prompt {p}"] for p in range(count)]


def test_aigciqa2023_valid_build_reads(tmp_path: Path) -> None:
    assert len(read_dataset("aigciqa2023", build_2023(tmp_path)).frame) == N_2023


@pytest.mark.parametrize(
    ("relative", "content", "row", "words"),
    [
        ("DATA/MOS/mosz2.mat", {"MOSz": np.full((N_2023, 1), 50.0)}, None, []),  # control
        ("DATA/MOS/mosz2.mat", {"mosz": np.full((N_2023, 1), 50.0)}, None, ["no variable 'MOSz'"]),
        ("DATA/STD/SD1.mat", {"SD": np.full((N_2023 - 1, 1), 1.0)}, None, ["shape (2399, 1)"]),
        ("DATA/STD/SD1.mat", {"SD": np.full((N_2023, 2), 1.0)}, None, ["shape (2400, 2)"]),
        ("DATA/MOS/mosz1.mat", {"MOSz": np.array([["x"]] * N_2023)}, None, ["not numbers"]),
    ],
)
def test_aigciqa2023_bad_mat_structure(
    tmp_path: Path, relative: str, content: dict, row: int | None, words: list[str]
) -> None:
    build_2023(tmp_path)
    path = save_mat(tmp_path / relative, content)
    if not words:
        read_dataset("aigciqa2023", tmp_path)
        return
    expect_error("aigciqa2023", tmp_path, path, row, *words)


@pytest.mark.parametrize(
    ("relative", "variable", "index", "value", "words"),
    [
        ("DATA/STD/SD3.mat", "SD", 7, np.nan, ["finite"]),
        ("DATA/MOS/mosz3.mat", "MOSz", 0, np.nan, ["MOSz (correspondence)", "finite"]),
        ("DATA/MOS/mosz2.mat", "MOSz", 2399, 150.0, ["outside the scale [0, 100]"]),
        ("DATA/STD/SD2.mat", "SD", 400, -1.0, ["negative"]),
    ],
)
def test_aigciqa2023_bad_mat_value(
    tmp_path: Path, relative: str, variable: str, index: int, value: float, words: list[str]
) -> None:
    build_2023(tmp_path)
    path = tmp_path / relative
    values = scipy.io.loadmat(path)[variable].astype(float)
    values[index, 0] = value
    save_mat(path, {variable: values})
    expect_error("aigciqa2023", tmp_path, path, index + 1, *words)


def test_aigciqa2023_garbage_mat(tmp_path: Path) -> None:
    build_2023(tmp_path)
    path = tmp_path / "DATA" / "MOS" / "mosz1.mat"
    path.write_bytes(b"this is not a MATLAB file at all" * 10)
    expect_error("aigciqa2023", tmp_path, path, None, "not a readable MATLAB")


def test_aigciqa2023_missing_mat(tmp_path: Path) -> None:
    build_2023(tmp_path)
    path = tmp_path / "DATA" / "STD" / "SD2.mat"
    path.unlink()
    expect_error("aigciqa2023", tmp_path, path, None, "official layout", "DATA/STD/SD")


@pytest.mark.parametrize(
    ("rows", "row", "words"),
    [
        (prompt_rows(99), None, ["expected 100 prompt rows, found 99"]),
        (prompt_rows(101), 101, ["found 101"]),
        ([*prompt_rows(41), ["Basic", "Animals", None], *prompt_rows(58)], 42, ["empty 'prompt'"]),
    ],
)
def test_aigciqa2023_bad_prompt_sheet(
    tmp_path: Path, rows: list[list[object]], row: int | None, words: list[str]
) -> None:
    build_2023(tmp_path)
    path = write_xlsx(tmp_path / "AIGCIQA2023_Prompts.xlsx", rows)
    expect_error("aigciqa2023", tmp_path, path, row, *words)


# --- read_dataset ------------------------------------------------------------------------------


def test_unknown_reader_and_option(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="agiqa-3k"):
        read_dataset("agiqa3k", tmp_path)
    write_3k(tmp_path, good_3k_rows())
    with pytest.raises(ConfigError, match="unexpected keyword"):
        read_dataset("agiqa-3k", tmp_path, on_conflicting_duplicates="drop")


# --- verify_images -----------------------------------------------------------------------------


def jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_verify_images_lists_every_bad_image(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / "good_0.png")
    (tmp_path / "noise_0.jpg").write_bytes(np.random.default_rng(0).bytes(2048))
    (tmp_path / "cut_0.jpg").write_bytes(jpeg_bytes()[:300])
    names = ["good_0.png", "gone_0.jpg", "noise_0.jpg", "cut_0.jpg"]
    lines = [f"{n},prompt {i},2.0,0.1,3.0,0.2" for i, n in enumerate(names)]
    write_3k(tmp_path, lines, "name,prompt,mos_quality,std_quality,mos_align,std_align")
    manifest = read_dataset("agiqa-3k", tmp_path, dataset="synthetic")
    with pytest.raises(DataError) as caught:
        verify_images(manifest, tmp_path)
    error = caught.value
    message = str(error)
    assert error.file == manifest.source
    assert "3 of 4 images" in message
    assert "row 3: gone_0.jpg: missing" in message
    assert "row 4: noise_0.jpg: undecodable" in message
    assert "row 5: cut_0.jpg: undecodable" in message
    assert "good_0.png" not in message


def test_verify_images_checks_unlabelled_rows_and_unsafe_paths(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "image": ["test/x_0001.png", "../outside.png"],
            "prompt": ["a", "b"],
            "prompt_group": ["p0", "p1"],
            "generator": ["x", "x"],
            "subset": ["test", "test"],
            "labelled": [False, False],
            "mos_overall": [np.nan, np.nan],
        }
    )
    manifest = Manifest("tiny", frame, (Dimension("overall", "alignment", 0, 5),))
    with pytest.raises(DataError) as caught:
        verify_images(manifest, tmp_path)
    assert caught.value.file == "tiny"
    assert "row 2: test/x_0001.png: missing" in str(caught.value)
    assert "row 3: ../outside.png: unsafe path" in str(caught.value)
    assert "is `root` right? use `images:`" in str(caught.value)
