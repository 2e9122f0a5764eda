"""Evaluating a model from its predictions (agiqa evaluate): split files as a public format, the
protocol checks, and tables identical to the ones agiqa makes of its own runs."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from agiqa.cli import app
from agiqa.data.manifest import Dimension, Manifest
from agiqa.data.split_info import SplitFile, describe_split_file, export_splits, write_split_info
from agiqa.data.splits import Protocol, make_splits, split_column, write_splits
from agiqa.errors import ConfigError, DataError
from agiqa.evaluate.external import (
    check_predictions,
    evaluate,
    import_predictions,
    pair_inputs,
    read_predictions,
    scale_warnings,
)
from agiqa.provenance import file_sha256
from agiqa.report.aggregate import aggregate
from agiqa.report.results import ReportSettings

runner = CliRunner()
PROTOCOLS = {
    "kfold_grouped": Protocol(type="kfold_grouped", folds=3, val_fraction=0.15),
    "literature_replica": Protocol(type="literature_replica", folds=3),
}
SETTINGS = ReportSettings(resamples=200)
DIMS = ("quality", "align")


def make_study(root: Path, seed: int = 3) -> dict[str, Path]:
    """A manifest of 30 prompts x 4 images (0-5 MOS) and a split file + description per protocol."""
    rng = np.random.default_rng(seed)
    n = 120
    frame = pd.DataFrame(
        {
            "image": [f"gen{i % 3}_{i:03d}.jpg" for i in range(n)],
            "prompt": [f"prompt {i // 4}" for i in range(n)],
            "prompt_group": [f"p{i // 4:02d}" for i in range(n)],
            "generator": [f"gen{i % 3}" for i in range(n)],
            "subset": "all",
            "labelled": True,
            "mos_quality": np.round(rng.uniform(0.5, 4.5, n), 4),
            "mos_align": np.round(rng.uniform(0.5, 4.5, n), 4),
        }
    )
    dims = (Dimension("quality", "quality", 0.0, 5.0), Dimension("align", "alignment", 0.0, 5.0))
    manifest_path = root / "manifests" / "synthetic.csv"
    Manifest("synthetic", frame, dims).save(manifest_path)
    files = {"manifest": manifest_path}
    for name, protocol in PROTOCOLS.items():
        path = root / "splits" / name / "synthetic.csv"
        write_splits(make_splits(Manifest.load(manifest_path).labelled(), protocol), path)
        write_split_info(path, manifest_path, "synthetic", name, protocol.settings())
        files[name] = path
    return files


def write_agiqa_run(root: Path, files: dict[str, Path], protocol: str, model: str, noise: float):
    """What a fold job leaves: predictions (test, val) with targets, metrics.json."""
    manifest = Manifest.load(files["manifest"]).labelled()
    roles = pd.read_csv(files[protocol], dtype=str)
    spec = PROTOCOLS[protocol]
    rng = np.random.default_rng([int(noise * 100), len(model)])
    for k in range(spec.n_splits):
        run = root / "runs" / protocol / "synthetic" / model / f"split{k}"
        run.mkdir(parents=True)
        for part, name in (("test", "predictions.csv"), ("val", "val_predictions.csv")):
            rows = manifest[manifest["image"].isin(roles["image"][roles[split_column(k)] == part])]
            table = pd.DataFrame({"image": rows["image"].to_numpy(), "split": k})
            for dim in DIMS:
                target = rows[f"mos_{dim}"].to_numpy(float)
                table[f"pred_{dim}"] = np.clip(target + rng.normal(0, noise, len(rows)), 0, 5)
                table[f"target_{dim}"] = target
            table.to_csv(run / name, index=False)
        metrics = {
            "dataset": "synthetic",
            "model": model,
            "protocol": protocol,
            "protocol_settings": spec.settings(),
            "split": k,
            "config_hash": f"hash-{model}",
            "provenance": {
                "commit": "c" * 40,
                "split_sha256": file_sha256(files[protocol]),
                "manifest_sha256": file_sha256(files["manifest"]),
            },
        }
        (run / "metrics.json").write_text(json.dumps(metrics))
        # As a fold job's: the manifest it names gives the bootstrap its prompt groups.
        config = {"dataset": {"name": "synthetic", "manifest": str(files["manifest"])}}
        (run / "config.yaml").write_text(json.dumps(config))


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    """A finished agiqa experiment folder of two models under two protocols, aggregated."""
    root = tmp_path_factory.mktemp("experiment")
    files = make_study(root)
    for protocol in PROTOCOLS:
        write_agiqa_run(root, files, protocol, "alpha", 0.6)
        write_agiqa_run(root, files, protocol, "beta", 1.2)
    runs = sorted((root / "runs").glob("*/*/*/split*"))
    uri = f"sqlite:///{root / 'mlflow.db'}"
    aggregate(runs, root / "tables", uri, "external-test", SETTINGS)
    return root, files


def copied_predictions(root: Path, protocol: str, model: str) -> pd.DataFrame:
    """A model's predictions as one combined file (image, split, pred_*), agiqa's own numbers."""
    found = sorted((root / "runs" / protocol / "synthetic" / model).glob("split*/predictions.csv"))
    frame = pd.concat([pd.read_csv(f) for f in found], ignore_index=True)
    return frame[["image", "split", *(f"pred_{d}" for d in DIMS)]]


def alpha_as_one_file(experiment: tuple[Path, dict[str, Path]], tmp_path: Path):
    """alpha's grouped-fold predictions as one combined file, paired with their split file."""
    root, files = experiment
    copy = tmp_path / "alpha.csv"
    copied_predictions(root, "kfold_grouped", "alpha").to_csv(copy, index=False)
    return copy, pair_inputs([files["kfold_grouped"]], [copy])


def unmarked(cell: str) -> str:
    return re.sub(r"</?u>|\*\*", "", cell)


def md_rows(path: Path) -> dict[tuple[str, ...], list[str]]:
    """A Markdown table's rows: (protocol, model) or (model,) -> its cells."""
    lines = [line for line in path.read_text().splitlines() if line.startswith("| ")]
    table = [[c.strip() for c in line.strip().strip("|").split(" | ")] for line in lines]
    lead = 2 if table[0][0] == "Protocol" else 1
    return {tuple(cells[:lead]): cells[lead:] for cells in table[2:]}


def test_a_copy_of_an_agiqa_model_reproduces_its_rows_exactly(
    experiment: tuple[Path, dict[str, Path]], tmp_path: Path
) -> None:
    root, files = experiment
    pairs = [
        (SplitFile.load(files[p]), [root / "runs" / p / "synthetic" / "alpha"]) for p in PROTOCOLS
    ]
    config = {"report": {"resamples": 200}}
    result = evaluate(pairs, "alpha", tmp_path / "out", config=config)
    ours = pd.read_csv(result.tables["main.csv"])
    theirs = pd.read_csv(root / "tables" / "main.csv")
    theirs = theirs[theirs["model"] == "alpha"].reset_index(drop=True)
    pd.testing.assert_frame_equal(ours, theirs)
    # The displayed cells too (agiqa's table marks alpha against beta; alone, nothing is marked).
    agiqa_rows, our_rows = md_rows(root / "tables" / "main.md"), md_rows(result.tables["main.md"])
    for protocol in ("kfold_grouped", "literature_replica (test-selected)"):
        assert our_rows[protocol, "alpha"] == [unmarked(c) for c in agiqa_rows[protocol, "alpha"]]
    # Two protocols: the protocol-sensitivity table, alpha's own numbers and intervals.
    sensitivity = pd.read_csv(result.tables["protocols.csv"])
    reference = pd.read_csv(root / "tables" / "protocols.csv")
    reference = reference[reference["model"] == "alpha"].reset_index(drop=True)
    pd.testing.assert_frame_equal(sensitivity, reference)
    # Under another name the numbers are the same; bootstrap draws are seeded by the name.
    renamed = evaluate(pairs, "alpha_copy", tmp_path / "renamed", config=config)
    again = pd.read_csv(renamed.tables["main.csv"]).drop(columns="model")
    pd.testing.assert_frame_equal(again, theirs.drop(columns="model"))
    deltas = pd.read_csv(renamed.tables["protocols.csv"])[["srcc_mean", "delta_srcc"]]
    pd.testing.assert_frame_equal(deltas, reference[["srcc_mean", "delta_srcc"]])
    # The caption cites the split files the rows were computed on.
    sha = file_sha256(files["kfold_grouped"])[:12]
    assert f"kfold_grouped / synthetic {sha}" in result.tables["main.md"].read_text()


def test_compared_with_the_experiment_a_copy_is_tied_with_its_original(
    experiment: tuple[Path, dict[str, Path]], tmp_path: Path
) -> None:
    root, _ = experiment
    _, pairs = alpha_as_one_file(experiment, tmp_path)
    result = evaluate(pairs, "alpha_copy", tmp_path / "out", compare=root)
    assert result.compared and all("kfold_grouped" in str(p) for p in result.compared)
    rows = md_rows(result.tables["main.md"])
    assert set(rows) == {("alpha",), ("beta",), ("alpha_copy",)}
    assert rows["alpha_copy",] == rows["alpha",]
    assert any("<u>" in cell for cell in rows["alpha",]) and not any(
        "**" in cell for cell in rows["alpha",]
    )
    # beta's row is agiqa's own (same splits, same tests).
    theirs = md_rows(root / "tables" / "main.md")
    assert [unmarked(c) for c in rows["beta",]] == [
        unmarked(c) for c in theirs["kfold_grouped", "beta"]
    ]
    tests = pd.read_csv(result.tables["significance.csv"])
    pair = tests[(tests["model_a"] == "alpha") & (tests["model_b"] == "alpha_copy")]
    assert len(pair) == 2 * 3  # two dimensions x three metrics, test part only
    assert (pair["diff"] == 0).all()
    assert (pair["p_bootstrap"] == 1).all() and (pair["p_corrected_t"] == 1).all()
    # The compared experiment's report settings (its paper.json) are used: 200 resamples.
    assert (tests["resamples"] == 200).all()


def test_an_agiqa_model_folder_and_a_combined_file_import_identically(
    experiment: tuple[Path, dict[str, Path]], tmp_path: Path
) -> None:
    root, files = experiment
    split_file = SplitFile.load(files["kfold_grouped"])
    folder = root / "runs" / "kfold_grouped" / "synthetic" / "alpha"
    combined = tmp_path / "combined.csv"
    shuffled = copied_predictions(root, "kfold_grouped", "alpha").sample(frac=1, random_state=0)
    shuffled.assign(split=[f"split{k}" for k in shuffled["split"]]).to_csv(combined, index=False)
    runs_a, _ = import_predictions(split_file, [folder], "m", tmp_path / "a")
    runs_b, _ = import_predictions(split_file, [combined], "m", tmp_path / "b")
    for a, b in zip(runs_a, runs_b, strict=True):
        assert (a / "predictions.csv").read_bytes() == (b / "predictions.csv").read_bytes()
        expected = pd.read_csv(folder / a.name / "predictions.csv")
        pd.testing.assert_frame_equal(
            pd.read_csv(a / "predictions.csv"), expected[pd.read_csv(a / "predictions.csv").columns]
        )


# --- the protocol checks ----------------------------------------------------------------------


def roles_of(files: dict[str, Path], protocol: str = "kfold_grouped") -> pd.DataFrame:
    return pd.read_csv(files[protocol], dtype=str)


def with_training_image(frame: pd.DataFrame, files: dict[str, Path], split: int) -> pd.DataFrame:
    """The predictions plus one row (the last) for a training image of ``split``."""
    roles = roles_of(files)
    trained = roles["image"][roles[split_column(split)] == "train"].iloc[0]
    row = {"image": trained, "split": split, "pred_quality": 3.0, "pred_align": 2.0}
    return pd.concat([frame, pd.DataFrame([row])], ignore_index=True)


def edit_and_check(files, frame: pd.DataFrame, tmp_path: Path) -> str:
    path = tmp_path / "predictions.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError) as caught:
        check_predictions(read_predictions([path]), SplitFile.load(files["kfold_grouped"]))
    return str(caught.value)


def test_predictions_that_include_a_training_image_are_refused_naming_the_row(
    experiment: tuple[Path, dict[str, Path]], tmp_path: Path
) -> None:
    root, files = experiment
    good = copied_predictions(root, "kfold_grouped", "alpha")
    message = edit_and_check(files, with_training_image(good, files, 1), tmp_path)
    assert "split 1: 1 prediction(s) for training images" in message
    assert f"predictions.csv row {len(good) + 2}" in message  # the header is row 1
    roles = roles_of(files)
    validated = roles["image"][roles["split2"] == "val"].iloc[:2]
    extra = pd.DataFrame({"image": validated, "split": 2, "pred_quality": 1.0, "pred_align": 1.0})
    message = edit_and_check(files, pd.concat([good, extra], ignore_index=True), tmp_path)
    assert "split 2: 2 prediction(s) for validation images" in message
    assert f"rows {len(good) + 2} and {len(good) + 3}" in message


def test_predictions_for_every_image_are_refused(
    experiment: tuple[Path, dict[str, Path]], tmp_path: Path
) -> None:
    _, files = experiment
    roles = roles_of(files)
    every = pd.concat(
        [
            pd.DataFrame(
                {"image": roles["image"], "split": k, "pred_quality": 2.0, "pred_align": 1}
            )
            for k in range(3)
        ],
        ignore_index=True,
    )
    message = edit_and_check(files, every, tmp_path)
    for k in range(3):
        assert f"split {k}: predictions for every image of the dataset (120)" in message
    first_train = int(np.flatnonzero(roles["split0"] != "test")[0]) + 2
    assert f"predictions.csv rows {first_train}," in message


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda f: f.drop(index=5), "test images have no prediction, e.g."),
        (lambda f: pd.concat([f, f.iloc[[3]]]), "duplicate rows (the same split and image twice)"),
        (lambda f: f.assign(split=f["split"].where(f.index != 4, 7)), "split(s) [7] are not in"),
        (lambda f: f.assign(split=f["split"].astype(str).where(f.index != 4, "x")), "split number"),
        (
            lambda f: f.assign(image=f["image"].where(f.index != 2, "nope.jpg")),
            "image(s) the split file does not have",
        ),
        (lambda f: f.assign(pred_quality=f["pred_quality"].where(f.index != 6)), "not a finite"),
        (
            lambda f: f.assign(pred_align=f["pred_align"].astype(object).where(f.index != 6, "?")),
            "pred_align is not a finite number",
        ),
        (lambda f: f[f["split"] != 2], "split 2 has no predictions"),
    ],
)
def test_protocol_violations_are_refused_with_the_rows_named(
    experiment: tuple[Path, dict[str, Path]], tmp_path: Path, edit, expected: str
) -> None:
    root, files = experiment
    frame = edit(copied_predictions(root, "kfold_grouped", "alpha")).reset_index(drop=True)
    message = edit_and_check(files, frame, tmp_path)
    assert expected in message, message
    assert (
        message.startswith("refused: ") and "(protocol kfold_grouped, dataset synthetic" in message
    )


def test_columns_that_are_no_dimension_or_no_split_are_refused(
    experiment: tuple[Path, dict[str, Path]], tmp_path: Path
) -> None:
    root, files = experiment
    good = copied_predictions(root, "kfold_grouped", "alpha")
    message = edit_and_check(files, good.rename(columns={"pred_align": "pred_match"}), tmp_path)
    assert "['pred_match'] name no dimension of synthetic" in message
    message = edit_and_check(files, good.drop(columns="split"), tmp_path)
    assert "no column(s) ['split']" in message


def test_another_scale_is_warned_about_and_evaluated_as_given(
    experiment: tuple[Path, dict[str, Path]], tmp_path: Path
) -> None:
    root, files = experiment
    split_file = SplitFile.load(files["kfold_grouped"])
    good = copied_predictions(root, "kfold_grouped", "alpha")
    assert scale_warnings(good, split_file) == []
    normalised = scale_warnings(good.assign(pred_quality=good["pred_quality"] / 5), split_file)
    assert len(normalised) == 1 and "every prediction lies in [0, 1]" in normalised[0]
    percent = good.assign(pred_align=good["pred_align"] * 20)
    path = tmp_path / "percent.csv"
    percent.to_csv(path, index=False)
    result = evaluate(pair_inputs([files["kfold_grouped"]], [path]), "pct", tmp_path / "out")
    assert len(result.warnings) == 1 and "outside the MOS scale [0, 5]" in result.warnings[0]
    imported = pd.read_csv(result.runs[0] / "predictions.csv")
    assert imported["pred_align"].max() > 5  # nothing clipped or rescaled


def test_cli_refuses_with_exit_code_2_and_names_the_rows(
    experiment: tuple[Path, dict[str, Path]], tmp_path: Path
) -> None:
    root, files = experiment
    good = copied_predictions(root, "kfold_grouped", "alpha")
    path = tmp_path / "with_train.csv"
    with_training_image(good, files, 0).to_csv(path, index=False)
    arguments = ["evaluate", "--splits", str(files["kfold_grouped"]), "--predictions", str(path)]
    result = runner.invoke(app, [*arguments, "--name", "m", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    output = " ".join(result.output.split())
    assert "training images" in output and f"row {len(good) + 2}" in output
    assert not (tmp_path / "out" / "tables").exists()
    good.to_csv(path, index=False)
    result = runner.invoke(app, [*arguments, "--name", "m", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "| m |" in result.output
    for name in ("../up", "a b"):
        refused = runner.invoke(app, [*arguments, "--name", name, "--out", str(tmp_path / "x")])
        assert refused.exit_code == 2 and "must match" in refused.output


# --- split files as a format ------------------------------------------------------------------


def test_a_split_file_description_says_what_it_is(
    experiment: tuple[Path, dict[str, Path]],
) -> None:
    _, files = experiment
    info = json.loads(files["kfold_grouped"].with_suffix(".json").read_text())
    assert info["format"] == "agiqa-splits/1"
    assert info["sha256"] == file_sha256(files["kfold_grouped"])
    assert info["manifest"] == "../../manifests/synthetic.csv"
    assert info["protocol_settings"] == PROTOCOLS["kfold_grouped"].settings()
    assert [d["name"] for d in info["dimensions"]] == list(DIMS)
    assert [s["train"] + s["val"] + s["test"] for s in info["splits"]] == [120] * 3
    assert sum(s["test"] for s in info["splits"]) == 120  # each image tested once per repeat
    replica = json.loads(files["literature_replica"].with_suffix(".json").read_text())
    assert all(s["val"] == 0 for s in replica["splits"])


def test_an_edited_split_file_or_another_manifest_is_refused(
    experiment: tuple[Path, dict[str, Path]], tmp_path: Path
) -> None:
    root, files = experiment
    copy = tmp_path / "splits" / "kfold_grouped"
    shutil.copytree(files["kfold_grouped"].parent, copy)
    shutil.copytree(root / "manifests", tmp_path / "manifests")
    split = copy / "synthetic.csv"
    SplitFile.load(split)  # a copied folder tree stays valid
    roles = pd.read_csv(split, dtype=str)
    roles.loc[0, "split0"] = "test" if roles.loc[0, "split0"] != "test" else "train"
    roles.to_csv(split, index=False)
    with pytest.raises(DataError, match="was changed after it was written"):
        SplitFile.load(split)
    shutil.copy(files["kfold_grouped"], split)
    manifest = tmp_path / "manifests" / "synthetic.csv"
    manifest.write_text(manifest.read_text().replace("prompt 1,", "prompt one,"))
    with pytest.raises(DataError, match="another version of the dataset"):
        SplitFile.load(split)
    split.with_suffix(".json").unlink()
    with pytest.raises(DataError, match="agiqa splits --configfile"):
        SplitFile.load(split)


def test_compare_refuses_a_taken_name_and_other_split_files(
    experiment: tuple[Path, dict[str, Path]], tmp_path: Path
) -> None:
    root, files = experiment
    copy, pairs = alpha_as_one_file(experiment, tmp_path)
    with pytest.raises(ConfigError, match="--name alpha is a model of"):
        evaluate(pairs, "alpha", tmp_path / "out", compare=root)
    # The same images and groups with other MOS: the same split file, another ground truth.
    other = make_study(tmp_path / "other", seed=4)
    assert file_sha256(other["kfold_grouped"]) == file_sha256(files["kfold_grouped"])
    other_pairs = pair_inputs([other["kfold_grouped"]], [copy])
    with pytest.raises(DataError, match="with another manifest"):
        evaluate(other_pairs, "x", tmp_path / "out", compare=root)
    # Another protocol seed: no run of the experiment was trained on that split file.
    reseeded = tmp_path / "reseeded" / "synthetic.csv"
    protocol = Protocol(type="kfold_grouped", folds=3, val_fraction=0.15, seed=5)
    write_splits(make_splits(Manifest.load(files["manifest"]).labelled(), protocol), reseeded)
    write_split_info(reseeded, files["manifest"], "synthetic", "kfold_grouped", protocol.settings())
    with pytest.raises(DataError, match="no finished run was trained on these split files"):
        evaluate(pair_inputs([reseeded], [copy]), "x", tmp_path / "out", compare=root)


def test_export_writes_every_protocol_and_is_reproducible(tmp_path: Path) -> None:
    root = tmp_path / "my-study"
    root.mkdir()
    rng = np.random.default_rng(0)
    rows = [
        f"img{i}.png,prompt {i // 3},{rng.uniform(1, 5):.3f},{rng.uniform(0, 100):.1f}"
        for i in range(60)
    ]
    (root / "ratings.csv").write_text("file,text,MOS,match\n" + "\n".join(rows) + "\n")
    config = {
        "experiment": "mine",
        "datasets": {
            "my-study": {
                "reader": "csv",
                "root": str(root),
                "metadata": "ratings.csv",
                "columns": {"image": "file", "prompt": "text"},
                "dimensions": {
                    "quality": {"column": "MOS", "kind": "quality", "low": 1, "high": 5},
                    "match": {"column": "match", "kind": "alignment", "low": 0, "high": 100},
                },
            }
        },
        "protocols": {
            "kfold_grouped": {"type": "kfold_grouped", "folds": 5, "seed": 1},
            "image_split": {"type": "image_split", "folds": 5, "repeats": 2},
        },
        "models": {},
    }
    first = export_splits(config, tmp_path / "a")
    second = export_splits(config, tmp_path / "b")
    assert [p.relative_to(tmp_path / "a") for p in first] == [
        p.relative_to(tmp_path / "b") for p in second
    ]
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes()
    info = json.loads((tmp_path / "a" / "splits" / "image_split" / "my-study.json").read_text())
    assert len(info["splits"]) == 10 and info["splits"][7]["repeat"] == 1
    assert info["dimensions"][1] == {"name": "match", "kind": "alignment", "low": 0, "high": 100}
    described = describe_split_file(
        tmp_path / "a" / "splits" / "image_split" / "my-study.csv",
        tmp_path / "a" / "manifests" / "my-study.csv",
        "my-study",
        "image_split",
        config["protocols"]["image_split"],
    )
    assert described == info
    config["datasets"]["my-study"]["root"] = str(tmp_path / "absent")
    with pytest.raises(ConfigError, match="does not exist; install the dataset first"):
        export_splits(config, tmp_path / "c")


# --- the config's external section ------------------------------------------------------------


def test_external_entries_are_checked_before_anything_runs(tmp_path: Path) -> None:
    from snakemake.utils import validate

    from agiqa.config_checks import check_config
    from agiqa.data.split_info import SCHEMA

    config = yaml.safe_load((Path(__file__).parents[1] / "config" / "config.yaml").read_text())
    config["external"] = {
        "published_x": {
            "display_name": "X (published)",
            "predictions": {"kfold_grouped": {"synthetic": "x.csv"}},
        }
    }
    validate(config, str(SCHEMA))
    check_config(config)
    for edit, message in (
        (lambda e: e["predictions"].update(nope={"synthetic": "x.csv"}), "no protocol 'nope'"),
        (lambda e: e["predictions"]["kfold_grouped"].update(other="x.csv"), "no dataset 'other'"),
    ):
        broken = yaml.safe_load(yaml.safe_dump(config))
        edit(broken["external"]["published_x"])
        with pytest.raises(ConfigError, match=message):
            check_config(broken)
    clash = yaml.safe_load(yaml.safe_dump(config))
    clash["external"] = {"dcmpln": clash["external"]["published_x"]}
    with pytest.raises(ConfigError, match="a model of the same name is trained"):
        check_config(clash)
    typo = yaml.safe_load(yaml.safe_dump(config))
    typo["external"]["published_x"]["prediction"] = {}
    with pytest.raises(Exception, match="Additional properties"):
        validate(typo, str(SCHEMA))


def test_a_split_file_travels_alone_with_manifest_given(
    experiment: tuple[Path, dict[str, Path]], tmp_path: Path
) -> None:
    root, files = experiment
    alone = tmp_path / "mailed"
    alone.mkdir()
    for suffix in (".csv", ".json"):
        shutil.copy(files["kfold_grouped"].with_suffix(suffix), alone / f"synthetic{suffix}")
    copy, _ = alpha_as_one_file(experiment, tmp_path)
    with pytest.raises(DataError, match="pass --manifest"):
        pair_inputs([alone / "synthetic.csv"], [copy])
    pairs = pair_inputs([alone / "synthetic.csv"], [copy], [files["manifest"]])
    assert pairs[0][0].manifest_path == files["manifest"]
    result = evaluate(pairs, "alpha", tmp_path / "out", config={"report": {"resamples": 200}})
    ours = pd.read_csv(result.tables["main.csv"])
    theirs = pd.read_csv(root / "tables" / "main.csv")
    kfold = theirs[(theirs["model"] == "alpha") & (theirs["protocol"] == "kfold_grouped")]
    pd.testing.assert_frame_equal(ours, kfold.reset_index(drop=True))
