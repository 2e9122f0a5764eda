"""`agiqa ablations`: each `<model>_<switch>` row against its base, from the report's own tables."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from agiqa.cli import app
from agiqa.errors import DataError
from agiqa.report.ablations import ablation_pairs, ablation_rows


def test_each_variant_pairs_with_its_longest_base() -> None:
    models = ["scva", "scva_dropout", "dcmpln", "dcmpln_one_set", "dcmpln_one", "clip"]
    assert ablation_pairs(models) == [
        ("dcmpln", "dcmpln_one"),
        ("dcmpln_one", "dcmpln_one_set"),
        ("scva", "scva_dropout"),
    ]


def _tables(folder: Path, *, backward: bool) -> Path:
    folder.mkdir()
    main = [
        ("kfold_grouped", "scva", "quality", 0.50, 0.10),
        ("kfold_grouped", "scva_dropout", "quality", 0.40, 0.05),
        ("kfold_grouped", "scva", "align", 0.90, 0.01),
        ("kfold_grouped", "scva_dropout", "align", 0.10, 0.01),
    ]
    pd.DataFrame(main, columns=["protocol", "model", "dimension", "srcc_mean", "srcc_std"]).to_csv(
        folder / "main.csv", index=False
    )
    a, b, diff = ("scva_dropout", "scva", -0.1) if backward else ("scva", "scva_dropout", 0.1)
    tests = [
        ("kfold_grouped", "quality", "test", "srcc", a, b, diff, 0.02, 0.3),
        ("kfold_grouped", "quality", "val", "srcc", a, b, 0.5, 0.5, 0.5),
        ("kfold_grouped", "quality", "test", "plcc", a, b, 0.7, 0.7, 0.7),
    ]
    columns = ["protocol", "dimension", "part", "metric", "model_a", "model_b", "diff"]
    pd.DataFrame(tests, columns=[*columns, "p_bootstrap", "p_corrected_t"]).to_csv(
        folder / "significance.csv", index=False
    )
    return folder


@pytest.mark.parametrize("backward", [False, True])
def test_the_row_reads_means_and_the_test_parts_paired_tests(
    tmp_path: Path, backward: bool
) -> None:
    (row,) = ablation_rows(_tables(tmp_path / "t", backward=backward), "kfold_grouped", "quality")
    assert (row.base, row.variant) == ("scva", "scva_dropout")
    assert (row.base_mean, row.variant_mean, row.base_std) == (0.50, 0.40, 0.10)
    assert row.difference == pytest.approx(0.1)  # base minus variant, whichever order was tested
    assert (row.p_bootstrap, row.p_corrected_t) == (0.02, 0.3)


def test_the_command_prints_markdown_and_names_a_missing_file(tmp_path: Path) -> None:
    tables = _tables(tmp_path / "t", backward=False)
    done = CliRunner().invoke(app, ["ablations", "--tables", str(tables)])
    assert done.exit_code == 0, done.output
    row = "| `scva` | 0.500 ± 0.100 | `scva_dropout` | 0.400 ± 0.050 | +0.100 | 0.020 | 0.300 |"
    assert row in done.output
    (tables / "significance.csv").unlink()
    with pytest.raises(DataError, match=r"significance\.csv is missing"):
        ablation_rows(tables, "kfold_grouped", "quality")
