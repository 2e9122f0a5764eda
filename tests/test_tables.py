"""Run collection, summaries and the rendered LaTeX / Markdown / CSV tables."""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agiqa.evaluate.metrics import METRICS
from agiqa.report.aggregate import aggregate, collect_runs, summarize_runs
from agiqa.report.compare import BEST, TIE
from agiqa.report.results import ReportSettings, load_run, load_runs
from agiqa.report.tables import build_grid, latex_escape, render_tables, results_caption
from run_factory import noisy, write_run

NAN = math.nan


def summary_row(
    model: str,
    dim: str,
    protocol: str = "kfold_grouped",
    n_splits: int = 3,
    **metrics: tuple[float, float],
) -> dict:
    row = {"protocol": protocol, "dataset": "synthetic", "dimension": dim, "model": model}
    row.update({"part": "test", "n_splits": n_splits})
    for name in METRICS:
        mean, std = metrics.get(name, (0.5, 0.01))
        row[f"{name}_mean"], row[f"{name}_std"] = mean, std
        row[f"{name}_ci_low"], row[f"{name}_ci_high"] = mean - 2 * std, mean + 2 * std
    return row


@pytest.fixture
def summary() -> pd.DataFrame:
    return pd.DataFrame(
        [
            summary_row("clip_residual", "quality", srcc=(0.9121, 0.01), plcc=(-0.25, 0.1)),
            summary_row("baseline", "quality", srcc=(0.9124, 0.02)),
            summary_row("zeroshot", "quality", srcc=(0.8000, 0.03)),
            summary_row("weak", "quality", srcc=(NAN, NAN)),
        ]
    )


def _mark(model: str, metric: str, mark: str, protocol: str = "kfold_grouped") -> dict:
    return {(protocol, "synthetic", "quality", "test", metric, model): mark}


def _md_cells(text: str, model: str) -> list[str]:
    line = next(line for line in text.splitlines() if f"| {model} |" in line)
    return [cell.strip() for cell in line.strip("|").split("|")][1:]


def test_marks_come_from_significance_not_from_the_order(
    summary: pd.DataFrame, tmp_path: Path
) -> None:
    # baseline has the highest mean, but it is only tied with clip_residual; nothing is bold.
    marks = _mark("baseline", "srcc", TIE) | _mark("clip_residual", "srcc", TIE)
    text = render_tables(summary, tmp_path, ("srcc",), marks=marks)["md"].read_text()
    assert _md_cells(text, "clip_residual") == ["<u>0.912</u> ± 0.010 [0.89, 0.93]"]
    assert _md_cells(text, "baseline") == ["<u>0.912</u> ± 0.020 [0.87, 0.95]"]
    assert _md_cells(text, "zeroshot") == ["0.800 ± 0.030 [0.74, 0.86]"]
    assert _md_cells(text, "weak") == ["–"]
    best = render_tables(summary, tmp_path, ("srcc",), marks=_mark("baseline", "srcc", BEST))
    assert _md_cells(best["md"].read_text(), "baseline")[0].startswith("**0.912**")


def test_latex_fragment(summary: pd.DataFrame, tmp_path: Path) -> None:
    marks = _mark("clip_residual", "srcc", BEST) | _mark("zeroshot", "plcc", TIE)
    tex = render_tables(summary, tmp_path, ("srcc", "plcc", "plcc_logistic"), marks=marks)
    tex = tex["tex"].read_text()
    assert tex.startswith("\\begin{table}")
    assert "\\documentclass" not in tex
    for piece in ("\\centering", "\\toprule", "\\midrule", "\\bottomrule", "\\label{tab:test}"):
        assert piece in tex
    assert "|" not in tex.split("\\begin{tabular}")[1].split("}")[0]  # no vertical rules
    assert "clip\\_residual & \\textbf{0.912}{\\scriptsize$\\pm$0.010}" in tex
    assert "\\textminus{}0.250" in tex  # a proper minus sign
    assert "weak & -- &" in tex
    assert "\\multicolumn{3}{c}{synthetic} \\\\" in tex
    assert "Model & SRCC & PLCC & PLCC$_\\mathrm{log}$ \\\\" in tex
    assert "clip_residual" not in tex


def test_single_split_hides_std_and_interval(tmp_path: Path) -> None:
    frame = pd.DataFrame([summary_row("solo", "quality", n_splits=1, srcc=(0.7, 0.0))])
    text = render_tables(frame, tmp_path, ("srcc",))["md"].read_text()
    assert _md_cells(text, "solo") == ["0.700"]


def test_protocols_form_blocks_and_test_selection_is_labelled(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        [
            summary_row("a", "quality", protocol="kfold_grouped", srcc=(0.9, 0.0)),
            summary_row("a", "quality", protocol="literature_replica", srcc=(0.5, 0.0)),
            summary_row("b", "quality", protocol="kfold_grouped", srcc=(0.8, 0.0)),
        ]
    )
    paths = render_tables(frame, tmp_path, ("srcc",))
    md = paths["md"].read_text()
    assert "| Protocol | Model | synthetic / quality / SRCC |" in md
    assert "| literature_replica (test-selected) | a |" in md
    assert md.index("| kfold_grouped | b |") < md.index("| literature_replica (test-selected)")
    tex = paths["tex"].read_text()
    assert "literature\\_replica (test-selected) & a &" in tex
    assert tex.count("\\midrule") == 2  # header rule + one between the two protocol blocks


def test_columns_grouped_by_dataset_and_dimension(tmp_path: Path) -> None:
    rows = [
        summary_row(m, dim) | {"dataset": ds}
        for ds in ("agiqa3k", "synthetic")
        for dim in ("quality", "alignment")
        for m in ("a", "b")
    ]
    grid = build_grid(pd.DataFrame(rows), ("srcc", "plcc"), 3)
    assert grid.columns[:3] == [
        ("agiqa3k", "quality", "srcc"),
        ("agiqa3k", "quality", "plcc"),
        ("agiqa3k", "alignment", "srcc"),
    ]
    tex = render_tables(pd.DataFrame(rows), tmp_path, ("srcc", "plcc"))["tex"].read_text()
    assert "\\multicolumn{4}{c}{agiqa3k} & \\multicolumn{4}{c}{synthetic}" in tex
    assert "\\cmidrule(lr){2-5} \\cmidrule(lr){6-9}" in tex


def test_csv_is_numeric_and_complete(summary: pd.DataFrame, tmp_path: Path) -> None:
    csv = pd.read_csv(render_tables(summary, tmp_path)["csv"])
    assert list(csv.columns[:5]) == ["protocol", "model", "dataset", "dimension", "n_splits"]
    assert len(csv) == len(summary)
    assert csv.loc[csv["model"] == "clip_residual", "srcc_mean"].item() == 0.9121
    assert math.isnan(csv.loc[csv["model"] == "weak", "srcc_mean"].item())
    for metric in METRICS:  # raw and mapped RMSE sit beside each other
        for stat in ("mean", "std", "ci_low", "ci_high"):
            assert f"{metric}_{stat}" in csv.columns


def test_latex_escape() -> None:
    assert latex_escape("clip_residual") == "clip\\_residual"
    assert latex_escape("a&b 50% $x$ #1") == "a\\&b 50\\% \\$x\\$ \\#1"


def test_unknown_metric_rejected(summary: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown metrics"):
        render_tables(summary, tmp_path, metrics=("accuracy",))


def _runs(tmp_path: Path, models: tuple[str, ...] = ("m1", "m2")) -> list[Path]:
    rng = np.random.default_rng(0)
    dirs = []
    for split in range(3):
        target = rng.uniform(0, 5, size=30)
        for i, model in enumerate(models):
            pred = noisy(target, 0.5 + i, rng)
            align = rng.uniform(0, 5, size=30)
            dirs.append(
                write_run(
                    tmp_path,
                    model,
                    split,
                    {"quality": (pred, target), "align": (noisy(align, 1.0, rng), align)},
                    val={
                        "quality": (noisy(target[:10], 0.5, rng), target[:10]),
                        "align": (noisy(align[:10], 1.0, rng), align[:10]),
                    },
                )
            )
    return dirs


def test_collect_recomputes_metrics_from_predictions_and_summarizes(tmp_path: Path) -> None:
    runs = load_runs(_runs(tmp_path))
    per_split = collect_runs(runs)
    assert list(per_split.columns[:6]) == [
        "protocol",
        "dataset",
        "model",
        "split",
        "dimension",
        "part",
    ]
    # 3 splits x 2 models x 2 dimensions x 2 parts
    assert len(per_split) == 24
    one = per_split[(per_split["model"] == "m1") & (per_split["split"] == 0)]
    run = runs[0]
    scores = run.scores("test", "quality")
    expected = float(pd.Series(scores.pred).corr(pd.Series(scores.target), method="spearman"))
    got = one[(one["dimension"] == "quality") & (one["part"] == "test")]["srcc"].item()
    assert got == pytest.approx(expected)
    summary = summarize_runs(per_split)
    m1 = summary[
        (summary["model"] == "m1")
        & (summary["dimension"] == "quality")
        & (summary["part"] == "test")
    ].iloc[0]
    values = per_split[
        (per_split["model"] == "m1")
        & (per_split["dimension"] == "quality")
        & (per_split["part"] == "test")
    ]["srcc"]
    assert m1["n_splits"] == 3
    assert m1["srcc_mean"] == pytest.approx(values.mean())
    assert m1["srcc_std"] == pytest.approx(values.std(ddof=1))
    assert m1["srcc_ci_low"] < m1["srcc_mean"] < m1["srcc_ci_high"]
    assert list(dict.fromkeys(summary["model"])) == ["m1", "m2"]  # input order kept


def test_duplicate_split_rejected(tmp_path: Path) -> None:
    first = _runs(tmp_path / "a", ("m1",))[0]
    second = _runs(tmp_path / "b", ("m1",))[0]
    with pytest.raises(ValueError, match="more than one run directory"):
        load_runs([first, second])


def test_missing_metrics_json_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"metrics\.json: missing"):
        load_run(tmp_path)


def test_missing_predictions_are_named(tmp_path: Path) -> None:
    run = _runs(tmp_path, ("m1",))[0]
    (run / "predictions.csv").unlink()
    with pytest.raises(ValueError, match=r"predictions\.csv: missing"):
        collect_runs(load_runs([run]))


def test_aggregate_writes_every_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    # Three splits give the corrected t-test 2 degrees of freedom: the bootstrap marks here.
    settings = ReportSettings(resamples=300, significance_test="bootstrap")
    paths = aggregate(_runs(tmp_path), tmp_path / "tables", uri, "test", settings)
    out = capsys.readouterr().out
    assert "| m1 | **" in out  # m1 (less noise) is significantly better on quality
    for name in ("main", "val"):
        for ext in ("tex", "md", "csv"):
            assert paths[f"{name}.{ext}"].stat().st_size > 0
    main = paths["main.md"].read_text()
    assert "α = 0.05" in main and "paired cluster bootstrap over test prompt groups" in main
    assert "training variance is not counted" in main
    assert "PLCC (logistic)" in main and "synthetic / quality / PLCC |" in main
    significance = pd.read_csv(paths["significance.csv"])
    assert {"p_bootstrap", "p_corrected_t", "ci_low", "ci_high"} <= set(significance.columns)
    assert {"ci_low_corrected_t", "ci_high_corrected_t"} <= set(significance.columns)
    # No manifest beside these runs: the bootstrap says it resampled images, not prompt groups.
    assert set(significance["resampled"]) == {"images"}
    assert set(significance["part"]) == {"test", "val"}
    assert "\\label{tab:significance}" in paths["significance.tex"].read_text()
    assert "protocols.md" not in paths  # one protocol: nothing to compare with
    assert (tmp_path / "mlflow" / "artifacts").is_dir()


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not on PATH")
def test_latex_compiles(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    aggregate(_runs(tmp_path), tmp_path, uri, "test", ReportSettings(resamples=200))
    document = (
        "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
        "\\input{main.tex}\n\\input{val.tex}\n\\input{significance.tex}\n\\end{document}\n"
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


def test_markdown_uses_real_minus_signs(summary: pd.DataFrame, tmp_path: Path) -> None:
    text = render_tables(summary, tmp_path, ("plcc",))["md"].read_text()
    assert _md_cells(text, "clip_residual") == ["\u22120.250 ± 0.100 [\u22120.45, \u22120.05]"]


def test_caption_names_protocols_for_readers() -> None:
    from agiqa.report.names import DisplayNames

    frame = pd.DataFrame([summary_row("a", "quality", srcc=(0.9, 0.01))])
    names = DisplayNames(protocol_settings={"kfold_grouped": {"folds": 3}})
    types = {"kfold_grouped": "kfold_grouped"}
    caption = results_caption(frame, ReportSettings(), "test", types, names)
    assert "Prompt-grouped 3-fold: 3 splits, prompt-grouped K-fold, selection on a" in caption
    assert "[\u22121, 1]" in caption
    assert "kfold_grouped: 3 splits" in results_caption(frame, ReportSettings(), "test", types)
