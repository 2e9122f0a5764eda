"""The paper's outputs: per-dataset and combined tables, figures, and the compiled PDF."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agiqa.data.manifest import Dimension, Manifest
from agiqa.report.aggregate import aggregate
from agiqa.report.compare import BEST, TIE
from agiqa.report.files import figure_files
from agiqa.report.names import DisplayNames
from agiqa.report.paper import (
    PaperError,
    breakable,
    build_paper,
    compile_pdf,
    layout_problems,
    overfull_boxes,
)
from agiqa.report.paper_tables import (
    combined_table,
    cross_dataset_frame,
    dataset_tables,
    to_html,
    to_latex,
    to_markdown,
)
from agiqa.report.results import ReportSettings
from pdf_layout import small_text, sparse_pages
from run_factory import noisy, write_run
from test_tables import summary_row

GENERATORS = ("gen_a", "gen&b")
NAMES = DisplayNames(
    models={"m1": "Model_1 & co", "m2": "Model 2 with a name far too long for one column"},
    datasets={"synthetic": "Synthetic 50%", "other": "Other"},
    dimensions={"quality": "Quality"},
    protocols={"kfold_grouped": "Grouped"},
    protocol_settings={"kfold_grouped": {"type": "kfold_grouped", "folds": 3}},
)
TYPES = {"kfold_grouped": "kfold_grouped", "literature_replica": "literature_replica"}


def _summary() -> pd.DataFrame:
    rows = [
        summary_row("m1", "quality", srcc=(0.91, 0.01), plcc=(-0.25, 0.1)),
        summary_row("m2", "quality", srcc=(0.80, 0.02)),
        summary_row("m1", "quality", protocol="literature_replica", srcc=(0.95, 0.01)),
        summary_row("m1", "align", srcc=(0.4, 0.05)),
        summary_row("m2", "align", srcc=(0.3, 0.05)),
    ]
    return pd.DataFrame(rows)


def _marks() -> dict:
    return {
        ("kfold_grouped", "synthetic", "quality", "test", "srcc", "m1"): BEST,
        ("kfold_grouped", "synthetic", "align", "test", "srcc", "m1"): TIE,
        ("kfold_grouped", "synthetic", "align", "test", "srcc", "m2"): TIE,
    }


def test_dataset_table_layout_escaping_and_minus_signs() -> None:
    (table,) = dataset_tables(_summary(), _marks(), ReportSettings(), TYPES, NAMES).values()
    tex = to_latex(table)
    assert "\\label{tab:dataset-synthetic}" in tex and "Synthetic 50\\%." in tex
    assert "Model\\_1 \\& co" in tex and "Model_1" not in tex  # display names, escaped
    # Wider than the text (a long model name): one block per dimension, never shrunk.
    assert table.wide and tex.count("\\toprule") == 2 and "\\resizebox" not in tex
    assert "& \\multicolumn{3}{c}{Quality}" in tex and "& \\multicolumn{3}{c}{Align" in tex
    assert "\\ensuremath{-}0.250" in tex and "\\textminus" not in tex
    assert "\\textbf{0.910}" in tex and "\\underline{0.400}" in tex
    # Protocols are spanning rows, named in words; the test-selected one says so.
    assert "\\multicolumn{4}{l}{\\textit{Grouped (prompt-grouped 3-fold)}}" in tex
    assert "\\textit{literature\\_replica (test-selected)}" in tex
    assert "Grouped (prompt-grouped 3-fold): 3 splits, prompt-grouped K-fold, selection" in tex
    html = to_html(table)
    assert html == to_html(table)  # fixed element ids: reruns write identical files
    assert "Model_1 &amp; co" in html and "<b>0.910</b> ± 0.010" in html
    assert "\u22120.250" in html and "<u>0.400</u>" in html
    md = to_markdown(table)
    assert "| Grouped (prompt-grouped 3-fold) | Model_1 & co | **0.910** ± 0.010" in md


def test_combined_table_is_means_only_and_knows_when_it_fits() -> None:
    summary = _summary()
    table = combined_table(summary, _marks(), ReportSettings(), TYPES, NAMES, "kfold_grouped")
    tex = to_latex(table)
    assert "\\label{tab:combined}" in tex and "$\\pm$0.010" not in tex
    assert "literature" not in tex.split("\\toprule")[1]  # one protocol
    assert table.fits_page
    wide = pd.concat([summary.assign(dataset=f"dataset{k}", dimension=f"d{k}") for k in range(12)])
    too_wide = combined_table(wide, {}, ReportSettings(), TYPES, NAMES, "kfold_grouped")
    assert too_wide.wide and not too_wide.fits_page


def test_cross_dataset_hook_renders_a_table() -> None:
    frame = pd.DataFrame(
        {
            "train_dataset": ["synthetic", "synthetic"],
            "test_dataset": ["other", "synthetic"],
            "model": ["m1", "m1"],
            "dimension": ["quality", "quality"],
            "srcc": [0.5, -0.2],
            "srcc_ci_low": [0.41, float("nan")],
            "srcc_ci_high": [0.58, float("nan")],
            "plcc": [0.1, 0.1],  # raw: not what the table shows
            "plcc_logistic": [0.6, float("nan")],
        }
    )
    table = cross_dataset_frame(frame, NAMES, 3)
    assert table.loc[("Model_1 & co", "Synthetic 50%"), ("Other", "Quality")] == (
        "0.500 [0.41, 0.58] / 0.600"
    )
    assert table.loc[("Model_1 & co", "Synthetic 50%"), ("Synthetic 50%", "Quality")] == (
        "\u22120.200 / –"
    )
    with pytest.raises(ValueError, match="lack columns"):
        cross_dataset_frame(frame.drop(columns="plcc_logistic"), NAMES, 3)


def _manifest(root: Path, images: list[str], targets: np.ndarray) -> Path:
    frame = pd.DataFrame(
        {
            "image": images,
            "prompt": [f"prompt {i}" for i in range(len(images))],
            "prompt_group": [str(i // 2) for i in range(len(images))],
            "generator": [GENERATORS[i % 2] for i in range(len(images))],
            "subset": "all",
            "labelled": True,
            "mos_quality": targets,
        }
    )
    path = root / "manifests" / "synthetic.csv"
    Manifest("synthetic", frame, (Dimension("quality", "quality", 0, 5),)).save(path)
    return path


def _runs(root: Path) -> list[Path]:
    """Two models x 3 splits x 2 protocols, with a manifest that names two generators."""
    rng = np.random.default_rng(1)
    images = [f"img_{i:03d}.jpg" for i in range(90)]
    targets = rng.uniform(0, 5, size=90)
    manifest = _manifest(root, images, targets)
    config = f"dataset:\n  name: synthetic\n  manifest: {manifest}\nmodel:\n  type: x\n"
    dirs = []
    for protocol in ("kfold_grouped", "literature_replica"):
        for split in range(3):
            part = slice(30 * split, 30 * (split + 1))
            for i, model in enumerate(("m1", "m2")):
                pred = noisy(targets[part], 0.4 + i, rng)
                test = {"quality": (pred, targets[part])}
                val = {"quality": (noisy(targets[:10], 0.5, rng), targets[:10])}
                dirs.append(
                    write_run(
                        root,
                        model,
                        split,
                        test,
                        val=val if protocol == "kfold_grouped" else None,
                        images=images[part],
                        protocol=protocol,
                        folds=3,
                        config=config,
                    )
                )
    return dirs


@pytest.fixture(scope="module")
def aggregated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("paper")
    uri = f"sqlite:///{root / 'mlflow' / 'mlflow.db'}"
    settings = ReportSettings(resamples=200, display_names={"quality": "Quality"})
    paths = aggregate(
        _runs(root),
        root / "tables",
        uri,
        "paper-test",
        settings,
        names=NAMES,
        figures_dir=root / "figures",
        cross_dataset=_cross_dataset(),
    )
    return root, paths


def _cross_dataset() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "train_dataset": ["synthetic", "synthetic"],
            "test_dataset": ["other", "synthetic"],
            "model": ["m1", "m1"],
            "dimension": ["quality", "quality"],
            "srcc": [0.5, -0.2],
            "plcc_logistic": [0.6, float("nan")],
        }
    )


def test_aggregate_writes_paper_tables_figures_and_paper_info(
    aggregated: tuple[Path, dict[str, Path]],
) -> None:
    root, paths = aggregated
    for name in figure_files(["synthetic"]):
        assert (root / "figures" / name).stat().st_size > 1000, name
    for name in ("dataset-synthetic", "combined"):
        for ext in ("tex", "html", "md"):
            assert paths[f"{name}.{ext}"].stat().st_size > 0
    for name in ("sensitivity.tex", "datasets.tex", "significance-synthetic.tex", "main.md"):
        assert paths[name].stat().st_size > 0, name
    # The cross-dataset hook: its table and figure join the outputs.
    assert "Trained on" in paths["cross_dataset.html"].read_text()
    assert (root / "figures" / "cross_dataset.png").stat().st_size > 1000
    generators = pd.read_csv(paths["generators.csv"])
    assert set(generators["generator"]) == set(GENERATORS)
    assert (generators.groupby("model")["n_images"].sum() == 90).all()
    overview = paths["datasets.tex"].read_text()
    assert "Synthetic 50\\%" in overview and "Quality (0--5)" in overview
    info = json.loads(paths["paper.json"].read_text())
    assert info["reference"] == "kfold_grouped"
    assert info["protocols"]["literature_replica"]["selection"] == "test"
    assert info["models"] == {"m1": "Model_1 & co", "m2": NAMES.models["m2"]}
    assert info["provenance"]["versions"] == {"torch": ["2.14.1"]}
    # Reruns give identical figure files (no timestamps inside).
    before = (root / "figures" / "protocols.pdf").read_bytes()
    uri = f"sqlite:///{root / 'mlflow' / 'mlflow.db'}"
    runs = sorted(root.glob("runs/*/*/*/split*"))
    aggregate(
        runs,
        root / "tables2",
        uri,
        "paper-test",
        ReportSettings(resamples=200),
        names=NAMES,
        figures_dir=root / "figures",
    )
    assert (root / "figures" / "protocols.pdf").read_bytes() == before


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not on PATH")
def test_paper_compiles_to_a_layout_a_reviewer_accepts(
    aggregated: tuple[Path, dict[str, Path]],
) -> None:
    root, _ = aggregated
    pdf = build_paper(
        root / "tables", root / "figures", root / "paper", "paper-test", built="2026-01-01"
    )
    assert pdf == root / "paper" / "paper.pdf" and pdf.stat().st_size > 10_000
    log = (root / "paper" / "paper.log").read_text(errors="replace")
    assert layout_problems(log) == []  # no overfull box, no line stretched to badness 10000
    assert "undefined" not in log.lower()
    # No text under 8 pt (tables are never shrunk, figures are placed at their natural size),
    # and no page left mostly empty by a lone float or a stranded heading.
    assert small_text(pdf) == []
    assert sparse_pages(pdf) == []
    tex = (root / "paper" / "paper.tex").read_text()
    for piece in (
        "\\input{tables/dataset-synthetic}",
        "figures/scatter-synthetic.pdf",
        "\\section{Provenance}",
        "prompt-grouped K-fold",
        "\\input{tables/sensitivity}",
        "\\section{Cross-dataset generalisation}",
    ):
        assert piece in tex, piece
    assert (root / "paper" / "figures" / "splits-synthetic.pdf").is_file()  # self-contained


def test_paper_without_latex_says_what_to_install(
    aggregated: tuple[Path, dict[str, Path]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, _ = aggregated
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(PaperError, match="texlive-latex-base texlive-latex-recommended"):
        build_paper(root / "tables", root / "figures", tmp_path / "paper", "x")
    tex = build_paper(root / "tables", root / "figures", tmp_path / "p2", "x", compile_it=False)
    assert tex.suffix == ".tex" and "\\begin{document}" in tex.read_text()


def test_layout_problems_are_found() -> None:
    log = (
        "Overfull \\hbox (0.5pt too wide) in x\n"
        "Underfull \\hbox (badness 1552) in paragraph at lines 3--4\n"
        "Underfull \\hbox (badness 10000) in paragraph at lines 9--9\n"
        "Underfull \\vbox (badness 10000) has occurred while \\output is active"
    )
    assert overfull_boxes(log) == ["Overfull \\hbox (0.5pt too wide) in x"]
    assert layout_problems(log) == [
        "Overfull \\hbox (0.5pt too wide) in x",
        "Underfull \\hbox (badness 10000) in paragraph at lines 9--9",
    ]


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not on PATH")
def test_an_overfull_box_fails_the_build_and_a_hash_can_break(tmp_path: Path) -> None:
    body = "\\noindent\\hbox to 2in{" + "x" * 80 + "}\n"
    tex = tmp_path / "bad.tex"
    tex.write_text("\\documentclass{article}\\begin{document}\n" + body + "\\end{document}\n")
    with pytest.raises(PaperError, match=r"layout defect.*Overfull \\hbox"):
        compile_pdf(tex)
    commit = "0123456789abcdef" * 2 + "01234567"
    text = "Cite this as code commit " + breakable(commit) + ", built today. " * 3
    tex.write_text(
        "\\documentclass{article}\\usepackage[margin=2.5in]{geometry}\\begin{document}\n"
        + text
        + "\n\\end{document}\n"
    )
    compile_pdf(tex)  # a 40-character hash in a narrow column: neither overfull nor stretched


def test_figure_numbers_have_real_minus_signs() -> None:
    from agiqa.report.figures import _signed

    assert (_signed(-0.25), _signed(-0.001), _signed(0.5)) == ("\u22120.25", "0.00", "0.50")


def test_runs_of_several_commits_still_build_without_layout_defects(
    aggregated: tuple[Path, dict[str, Path]], tmp_path: Path
) -> None:
    """The paper rehearsal, resumed after fixes: its runs came from three commits, and the
    justified line of hash pieces stretched to badness 10000, which the build refuses."""
    root, _ = aggregated
    tables = tmp_path / "tables"
    shutil.copytree(root / "tables", tables)
    info = json.loads((tables / "paper.json").read_text())
    info["provenance"]["commits"] = [f"{k:x}" * 40 for k in (7, 9, 11, 12)]
    (tables / "paper.json").write_text(json.dumps(info))
    build_paper(tables, root / "figures", tmp_path / "paper", "paper-test", built="2026-01-01")
    log = (tmp_path / "paper" / "paper.log").read_text(errors="replace")
    assert layout_problems(log) == []
