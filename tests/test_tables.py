"""Run collection, summaries and the rendered LaTeX / Markdown / CSV tables."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from agiqa.evaluate.metrics import METRICS
from agiqa.report.aggregate import aggregate, collect_runs, load_run, summarize_runs
from agiqa.report.tables import build_grid, latex_escape, rank_marks, render_tables

NAN = math.nan


def write_run(
    root: Path,
    model: str,
    split: int,
    scores: dict[str, dict[str, float]],
    *,
    protocol: str = "random",
    dataset: str = "synthetic",
) -> Path:
    """A fake run directory with the files a training job leaves behind."""
    run_dir = root / "runs" / protocol / dataset / model / f"split{split}"
    run_dir.mkdir(parents=True)
    test = {dim: {m: values.get(m, 0.5) for m in METRICS} for dim, values in scores.items()}
    info = {"dataset": dataset, "model": model, "protocol": protocol, "split": split}
    info.update({"n_train": 10, "n_val": 2, "n_test": 3, "best_epoch": None, "epochs_run": 1})
    info.update({"seconds": 1.0, "config_hash": "abc123", "test": test, "val": {}})
    (run_dir / "metrics.json").write_text(json.dumps(info))
    (run_dir / "config.yaml").write_text(f"model:\n  type: {model}\nseed: 0\n")
    return run_dir


def summary_row(
    model: str,
    dim: str,
    protocol: str = "random",
    n_splits: int = 3,
    **metrics: tuple[float, float],
) -> dict:
    row = {"protocol": protocol, "dataset": "synthetic", "dimension": dim, "model": model}
    row["n_splits"] = n_splits
    for name in METRICS:
        mean, std = metrics.get(name, (0.5, 0.01))
        row[f"{name}_mean"], row[f"{name}_std"] = mean, std
    return row


@pytest.fixture
def summary() -> pd.DataFrame:
    return pd.DataFrame(
        [
            summary_row("clip_residual", "quality", srcc=(0.9121, 0.01), rmse=(0.40, 0.02)),
            summary_row("baseline", "quality", srcc=(0.9124, 0.02), rmse=(0.30, 0.01)),
            summary_row("zeroshot", "quality", srcc=(0.8000, 0.03), rmse=(0.35, 0.05)),
            summary_row("weak", "quality", srcc=(NAN, NAN), rmse=(0.90, 0.10)),
        ]
    )


def _md_cells(text: str, model: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(f"| {model} |"))
    return [cell.strip() for cell in line.strip("|").split("|")][1:]


def test_rank_marks_dense_with_ties() -> None:
    assert rank_marks(["0.912", "0.912", "0.800", None], True) == ["best", "best", "second", None]
    assert rank_marks(["0.300", "0.400", "0.350"], False) == ["best", None, "second"]
    assert rank_marks(["0.500"], True) == ["best"]
    assert rank_marks([None, None], True) == [None, None]


def test_markdown_marks_ties_direction_and_nan(summary: pd.DataFrame, tmp_path: Path) -> None:
    paths = render_tables(summary, tmp_path, metrics=("srcc", "rmse"))
    text = paths["md"].read_text()
    # SRCC: 0.9121 and 0.9124 both display as 0.912 -> both bold; 0.800 is second.
    # RMSE: lower is better -> baseline (0.300) bold, zeroshot (0.350) underlined.
    assert _md_cells(text, "clip_residual") == ["**0.912** ± 0.010", "0.400 ± 0.020"]
    assert _md_cells(text, "baseline") == ["**0.912** ± 0.020", "**0.300** ± 0.010"]
    assert _md_cells(text, "zeroshot") == ["<u>0.800</u> ± 0.030", "<u>0.350</u> ± 0.050"]
    assert _md_cells(text, "weak") == ["–", "0.900 ± 0.100"]
    assert "| Model | synthetic / quality / SRCC | synthetic / quality / RMSE |" in text


def test_latex_fragment(summary: pd.DataFrame, tmp_path: Path) -> None:
    tex = render_tables(summary, tmp_path, metrics=("srcc", "plcc_logistic"))["tex"].read_text()
    assert tex.startswith("\\begin{table}")
    assert "\\documentclass" not in tex
    for piece in ("\\centering", "\\toprule", "\\midrule", "\\bottomrule", "\\label{tab:main}"):
        assert piece in tex
    assert "|" not in tex.split("\\begin{tabular}")[1].split("}")[0]  # no vertical rules
    assert "clip\\_residual & \\textbf{0.912}{\\scriptsize$\\pm$0.010} &" in tex
    assert "zeroshot & \\underline{0.800}{\\scriptsize$\\pm$0.030} &" in tex
    assert "weak & -- &" in tex
    assert "\\multicolumn{2}{c}{synthetic} \\\\" in tex
    assert "\\cmidrule(lr){2-3}" in tex
    assert "Model & SRCC & PLCC$_\\mathrm{log}$ \\\\" in tex
    assert "(ddof=1) over 3 splits of the random protocol" in tex
    assert "clip_residual" not in tex


def test_single_model_column_gets_bold_only(tmp_path: Path) -> None:
    frame = pd.DataFrame([summary_row("solo", "quality", srcc=(0.7, 0.1))])
    text = render_tables(frame, tmp_path, metrics=("srcc",))["md"].read_text()
    assert _md_cells(text, "solo") == ["**0.700** ± 0.100"]


def test_single_split_hides_std(tmp_path: Path) -> None:
    frame = pd.DataFrame([summary_row("solo", "quality", n_splits=1, srcc=(0.7, 0.0))])
    text = render_tables(frame, tmp_path, metrics=("srcc",))["md"].read_text()
    assert _md_cells(text, "solo") == ["**0.700**"]
    assert "over 1 split of the random protocol" in text


def test_protocols_ranked_separately(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        [
            summary_row("a", "quality", protocol="random", srcc=(0.9, 0.0)),
            summary_row("a", "quality", protocol="cross_gen", srcc=(0.5, 0.0)),
            summary_row("b", "quality", protocol="random", srcc=(0.8, 0.0)),
            summary_row("b", "quality", protocol="cross_gen", srcc=(0.6, 0.0)),
        ]
    )
    paths = render_tables(frame, tmp_path, metrics=("srcc",))
    md = paths["md"].read_text()
    assert "| Protocol | Model | synthetic / quality / SRCC |" in md
    assert "| random | a | **0.900** ± 0.000 |" in md
    assert "| cross_gen | a | <u>0.500</u> ± 0.000 |" in md
    assert "| cross_gen | b | **0.600** ± 0.000 |" in md
    tex = paths["tex"].read_text()
    assert "Protocol & Model & SRCC" in tex
    assert "cross\\_gen & a & \\underline{0.500}" in tex
    assert " & b & \\textbf{0.600}" in tex  # protocol named once per block
    assert tex.count("\\midrule") == 2  # header rule + one between the two protocol blocks
    assert md.index("| random | b |") < md.index("| cross_gen | a |")


def test_columns_grouped_by_dataset_and_dimension(tmp_path: Path) -> None:
    rows = [
        summary_row(m, dim) | {"dataset": ds}
        for ds in ("agiqa3k", "synthetic")
        for dim in ("quality", "alignment")
        for m in ("a", "b")
    ]
    grid = build_grid(pd.DataFrame(rows), ("srcc", "rmse"), 3)
    assert grid.columns[:3] == [
        ("agiqa3k", "quality", "srcc"),
        ("agiqa3k", "quality", "rmse"),
        ("agiqa3k", "alignment", "srcc"),
    ]
    tex = render_tables(pd.DataFrame(rows), tmp_path, metrics=("srcc", "rmse"))["tex"].read_text()
    assert "\\multicolumn{4}{c}{agiqa3k} & \\multicolumn{4}{c}{synthetic}" in tex
    assert "\\cmidrule(lr){2-5} \\cmidrule(lr){6-9}" in tex
    assert "\\cmidrule(lr){2-3} \\cmidrule(lr){4-5} \\cmidrule(lr){6-7} \\cmidrule(lr){8-9}" in tex


def test_csv_is_numeric_and_complete(summary: pd.DataFrame, tmp_path: Path) -> None:
    csv = pd.read_csv(render_tables(summary, tmp_path)["csv"])
    assert list(csv.columns[:5]) == ["protocol", "model", "dataset", "dimension", "n_splits"]
    assert len(csv) == len(summary)
    assert csv.loc[csv["model"] == "clip_residual", "srcc_mean"].item() == 0.9121
    assert csv.loc[csv["model"] == "baseline", "rmse_std"].item() == 0.01
    assert math.isnan(csv.loc[csv["model"] == "weak", "srcc_mean"].item())
    assert all(f"{m}_mean" in csv.columns for m in METRICS)


def test_latex_escape() -> None:
    assert latex_escape("clip_residual") == "clip\\_residual"
    assert latex_escape("a&b 50% $x$ #1") == "a\\&b 50\\% \\$x\\$ \\#1"


def test_unknown_metric_rejected(summary: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown metrics"):
        render_tables(summary, tmp_path, metrics=("accuracy",))


def test_collect_and_summarize(tmp_path: Path) -> None:
    dirs = [
        write_run(tmp_path, "m1", k, {"quality": {"srcc": v}, "alignment": {"srcc": 0.1}})
        for k, v in enumerate((0.8, 0.9, 1.0))
    ]
    dirs.append(write_run(tmp_path, "m2", 0, {"quality": {"srcc": 0.5, "rmse": None}}))
    runs = collect_runs(dirs)
    assert len(runs) == 7
    assert list(runs.columns[:5]) == ["protocol", "dataset", "model", "split", "dimension"]
    summary = summarize_runs(runs)
    m1 = summary[(summary["model"] == "m1") & (summary["dimension"] == "quality")].iloc[0]
    assert m1["n_splits"] == 3
    assert m1["srcc_mean"] == pytest.approx(0.9)
    assert m1["srcc_std"] == pytest.approx(0.1)  # ddof=1
    m2 = summary[summary["model"] == "m2"].iloc[0]
    assert m2["srcc_std"] == 0.0 and math.isnan(m2["rmse_mean"])
    assert list(summary["model"]) == ["m1", "m1", "m2"]  # input order kept


def test_duplicate_split_rejected(tmp_path: Path) -> None:
    first = write_run(tmp_path / "a", "m1", 0, {"quality": {}})
    second = write_run(tmp_path / "b", "m1", 0, {"quality": {}})
    with pytest.raises(ValueError, match="more than one run directory"):
        collect_runs([first, second])


def test_missing_metrics_json_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"metrics\.json: missing"):
        load_run(tmp_path)


def test_aggregate_prints_markdown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dirs = [
        write_run(tmp_path, "clip_residual", k, {"quality": {"srcc": 0.5 + k / 10}}) for k in (0, 1)
    ]
    uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    aggregate(dirs, tmp_path / "tables", uri, "test")
    out = capsys.readouterr().out
    assert "| clip_residual | **0.550** ± 0.071 |" in out
    assert (tmp_path / "tables" / "main.tex").exists()
    assert (tmp_path / "mlflow" / "artifacts").is_dir()


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not on PATH")
def test_latex_compiles(summary: pd.DataFrame, tmp_path: Path) -> None:
    render_tables(summary, tmp_path, metrics=("srcc", "plcc_logistic", "rmse"))
    document = (
        "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
        "\\input{main.tex}\n\\end{document}\n"
    )
    (tmp_path / "doc.tex").write_text(document)
    result = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-2000:]
