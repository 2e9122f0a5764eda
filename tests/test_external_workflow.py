"""Compare your own model, end to end on a small demo: the README's worked example, agiqa evaluate
on a demo model's own predictions, and a config's `external:` rows in the tables and the paper."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from agiqa.provenance import file_sha256

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PROTOCOLS = ("kfold_grouped", "literature_replica")
SPLIT = "results/demo/splits/kfold_grouped/synthetic.csv"

pytestmark = pytest.mark.slow


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def snakemake(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run(str(BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"), *args, cwd=cwd)


def small_demo() -> dict:
    """The demo config at a test's size: two models, the honest protocol and the seed code's."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["datasets"]["synthetic"]["synthesize"].update(n_prompts=15, images_per_prompt=4)
    config["protocols"]["literature_replica"] = {"type": "literature_replica", "folds": 3}
    config["models"] = {
        "clip_residual": config["models"]["clip_residual"],
        "clip_zeroshot": {
            "type": "clip_zeroshot",
            "backbone": {"arch": "agiqa-tiny-clip", "pretrained": None},
        },
    }
    config["models"]["clip_residual"]["train"].update(epochs=2, batch_size=8)
    del config["pretrained_backbones"]
    config["report"].update(resamples=200, figures=True)
    return config


def readme_example() -> str:
    """The bash block of the README's worked example ("Compare your own model")."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Compare your own model", 1)[1].split("\n## ", 1)[0]
    return section.split("```bash\n", 1)[1].split("```", 1)[0]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished small demo in a work folder laid out like the repository (config/, docs/,
    .venv), where the README's commands run as written."""
    work = tmp_path_factory.mktemp("compare")
    (work / "config").mkdir()
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(small_demo(), sort_keys=False))
    shutil.copytree(REPO / "profiles", work / "profiles")
    (work / "docs").symlink_to(REPO / "docs")
    (work / ".venv").symlink_to(BIN.parent)
    built = snakemake("--cores", "2", "--configfile", "config/config.yaml", cwd=work)
    assert built.returncode == 0, built.stderr[-4000:]
    return work


def test_exported_split_files_are_the_workflows(demo: Path) -> None:
    exported = demo / "exported-check"
    done = run(
        str(BIN / "agiqa"),
        "splits",
        "--configfile",
        "config/config.yaml",
        "--out",
        str(exported),
        cwd=demo,
    )
    assert done.returncode == 0, done.stderr
    for protocol in PROTOCOLS:
        ours = exported / "splits" / protocol / "synthetic.csv"
        theirs = demo / "results" / "demo" / "splits" / protocol / "synthetic.csv"
        assert file_sha256(ours) == file_sha256(theirs)
        # The workflow describes its split files too, identically.
        assert ours.with_suffix(".json").read_text() == theirs.with_suffix(".json").read_text()
    # `snakemake splits` is the workflow's way to the same files: nothing trains.
    target = snakemake("splits", "-n", "-F", "--configfile", "config/config.yaml", cwd=demo)
    assert target.returncode == 0, target.stderr[-3000:]
    output = target.stdout + target.stderr
    jobs = re.findall(r"^(\w+)\s+\d+\s*$", output, flags=re.MULTILINE)
    assert {"split", "split_info", "manifest"} <= set(jobs) and "train_fold" not in jobs
    caption = (demo / "results" / "demo" / "tables" / "main.md").read_text().split("\n")[0]
    sha = file_sha256(demo / SPLIT)[:12]
    assert f"Split files (sha256 prefix): kfold_grouped / synthetic {sha}" in caption


def test_the_readme_worked_example_runs_as_written(demo: Path) -> None:
    done = run("bash", "-euo", "pipefail", "-c", readme_example(), cwd=demo)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    tables = demo / "results" / "evaluate" / "pixel_ridge" / "tables"
    main = pd.read_csv(tables / "main.csv")
    assert list(dict.fromkeys(main["model"])) == ["clip_residual", "clip_zeroshot", "pixel_ridge"]
    assert (main["protocol"] == "kfold_grouped").all() and (main["n_splits"] == 3).all()
    assert "| pixel_ridge |" in done.stdout
    # The example model is measured, not just accepted: its mean quality SRCC on this demo's
    # size (15 prompts x 4 images, 3 folds) was 0.784, 0.708, 0.400, 0.459 and 0.796 for data
    # seeds 0-4 (the ridge has no training seed); chance is 0 +- 0.13 (20 test images a split,
    # 3 splits). The threshold lies below the worst seed.
    quality = main[(main["model"] == "pixel_ridge") & (main["dimension"] == "quality")]
    assert float(quality["srcc_mean"].iloc[0]) > 0.3


def test_a_demo_models_own_predictions_reproduce_its_row_and_tie_with_it(
    demo: Path, tmp_path: Path
) -> None:
    model = demo / "results/demo/runs/kfold_grouped/synthetic/clip_residual"
    agiqa = [str(BIN / "agiqa"), "evaluate", "--splits", SPLIT, "--predictions", str(model)]
    alone = run(*agiqa, "--name", "clip_residual", "--out", str(tmp_path / "alone"), cwd=demo)
    assert alone.returncode == 0, alone.stderr
    ours = pd.read_csv(tmp_path / "alone" / "tables" / "main.csv")
    theirs = pd.read_csv(demo / "results/demo/tables/main.csv")
    theirs = theirs[(theirs["model"] == "clip_residual") & (theirs["protocol"] == "kfold_grouped")]
    pd.testing.assert_frame_equal(ours, theirs.reset_index(drop=True))

    compare = ["--compare", "results/demo", "--out", str(tmp_path / "compared")]
    compared = run(*agiqa, "--name", "clip_residual_copy", *compare, cwd=demo)
    assert compared.returncode == 0, compared.stderr
    rows = {
        line.split(" | ")[0].strip("| "): line.split(" | ")[1:]
        for line in (tmp_path / "compared" / "tables" / "main.md").read_text().splitlines()
        if line.startswith("| clip")
    }
    assert set(rows) == {"clip_residual", "clip_zeroshot", "clip_residual_copy"}
    assert rows["clip_residual_copy"] == rows["clip_residual"]  # marks included
    demo_rows = {
        line.split(" | ")[1]: line.split(" | ")[2:]
        for line in (demo / "results/demo/tables/main.md").read_text().splitlines()
        if line.startswith("| kfold_grouped |")
    }
    strip = re.compile(r"</?u>|\*\*")
    assert [strip.sub("", c) for c in rows["clip_residual"]] == [
        strip.sub("", c) for c in demo_rows["clip_residual"]
    ]
    assert not any("**" in cell for cell in rows["clip_residual"])  # never best over itself
    tests = pd.read_csv(tmp_path / "compared" / "tables" / "significance.csv")
    pair = tests[(tests["model_a"] == "clip_residual") & (tests["model_b"] == "clip_residual_copy")]
    assert len(pair) and (pair["diff"] == 0).all() and (pair["p_bootstrap"] == 1).all()


def test_training_images_or_every_image_are_refused_with_the_rows_named(
    demo: Path, tmp_path: Path
) -> None:
    splits = pd.read_csv(demo / SPLIT)
    good = pd.concat(
        pd.read_csv(f)[["image", "split", "pred_quality", "pred_align"]]
        for f in sorted(
            (demo / "results/demo/runs/kfold_grouped/synthetic/clip_residual").glob(
                "split*/predictions.csv"
            )
        )
    )
    trained = splits.loc[splits["split1"] == "train", "image"].iloc[0]
    extra = pd.DataFrame([{"image": trained, "split": 1, "pred_quality": 2.5, "pred_align": 2.5}])
    every = pd.concat(
        splits[["image"]].assign(split=k, pred_quality=2.5, pred_align=2.5) for k in range(3)
    )
    cases = {
        "train.csv": (pd.concat([good, extra]), f"train.csv row {len(good) + 2}"),
        "every.csv": (every, "predictions for every image of the dataset (60)"),
    }
    for name, (frame, expected) in cases.items():
        frame.to_csv(tmp_path / name, index=False)
        arguments = ["--predictions", str(tmp_path / name), "--name", "m"]
        evaluate = [str(BIN / "agiqa"), "evaluate", "--splits", SPLIT, *arguments]
        done = run(*evaluate, "--out", str(tmp_path / "out"), cwd=demo)
        output = " ".join(done.stderr.split())
        assert done.returncode == 2 and expected in output, output
        assert "training" in output


def test_a_config_external_entry_puts_the_row_in_the_tables_and_the_pdf(demo: Path) -> None:
    predictions = {}
    for protocol in PROTOCOLS:
        split = demo / "results/demo/splits" / protocol / "synthetic.csv"
        out = demo / "external" / f"{protocol}.csv"
        own_model = [
            sys.executable,
            str(REPO / "docs/examples/own_model.py"),
            "--splits",
            str(split),
        ]
        done = run(
            *own_model, "--images", "results/demo/datasets/synthetic", "--out", str(out), cwd=demo
        )
        assert done.returncode == 0, done.stderr
        predictions[protocol] = {"synthetic": f"external/{protocol}.csv"}
    config = yaml.safe_load((demo / "config" / "config.yaml").read_text())
    config["external"] = {
        "pixel_ridge": {"display_name": "Pixel ridge (external)", "predictions": predictions}
    }
    (demo / "config" / "external.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    built = snakemake(
        "all", "paper", "--cores", "2", "--configfile", "config/external.yaml", cwd=demo
    )
    assert built.returncode == 0, built.stderr[-4000:]
    assert "train_fold" not in built.stderr.split("Job stats:")[1].split("Select jobs")[0]

    results = demo / "results" / "demo"
    main = pd.read_csv(results / "tables" / "main.csv")
    assert set(main.loc[main["model"] == "pixel_ridge", "protocol"]) == set(PROTOCOLS)
    sensitivity = pd.read_csv(results / "tables" / "protocols.csv")
    assert (sensitivity["model"] == "pixel_ridge").sum() == 4  # 2 protocols x 2 dimensions
    tests = pd.read_csv(results / "tables" / "significance.csv")
    assert (tests["model_b"] == "pixel_ridge").any()
    paper_table = (results / "tables" / "dataset-synthetic.tex").read_text()
    assert "Pixel ridge (external)" in paper_table
    paper = results / "paper"
    assert (paper / "paper.pdf").stat().st_size > 10_000
    tex = (paper / "paper.tex").read_text()
    assert "Not trained by agiqa: Pixel ridge (external)" in tex
    assert "\\input{tables/dataset-synthetic}" in tex
    log = (paper / "paper.log").read_text(errors="replace")
    assert "tables/dataset-synthetic.tex" in log  # the table with the row went into the PDF
    assert "Pixel ridge (external)" in (paper / "tables" / "dataset-synthetic.tex").read_text()
    imported = results / "external/kfold_grouped/synthetic/pixel_ridge/split0/metrics.json"
    assert "external" in imported.read_text()

    # A file that breaks the protocol stops the workflow, naming the rows.
    bad = pd.read_csv(demo / "external" / "kfold_grouped.csv")
    splits = pd.read_csv(demo / SPLIT)
    trained = splits.loc[splits["split0"] == "train", "image"].iloc[0]
    row = pd.DataFrame([{"image": trained, "split": 0, "pred_quality": 1.0, "pred_align": 1.0}])
    pd.concat([bad, row]).to_csv(demo / "external" / "kfold_grouped.csv", index=False)
    refused = snakemake("--cores", "2", "--configfile", "config/external.yaml", cwd=demo)
    assert refused.returncode != 0
    log = (demo / "logs/demo/external/kfold_grouped/synthetic/pixel_ridge.log").read_text()
    assert "training images" in log and f"kfold_grouped.csv row {len(bad) + 2}" in log
