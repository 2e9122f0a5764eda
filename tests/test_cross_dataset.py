"""Cross-dataset generalisation: dimension matching, scale mapping, the train/val split, the
config section, a tiny train-on-A / test-on-B run, and the jobs the workflow plans."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

import agiqa
from agiqa import cross_dataset as cross
from agiqa.data.manifest import Dimension, Manifest
from agiqa.data.readers import read_dataset
from agiqa.data.splits import read_split, train_val_split
from agiqa.data.synthetic import generate
from agiqa.errors import ConfigError, DataError
from agiqa.pipeline import layout_of
from agiqa.train.fold import run_fold
from test_train import residual_config
from test_workflow import REPO, job_counts, small_config, snakemake

QUALITY_5 = Dimension("quality", "quality", 0.0, 5.0)
ALIGN_5 = Dimension("align", "alignment", 0.0, 5.0)
OVERALL_5 = Dimension("overall", "overall", 0.0, 5.0)
QUALITY_100 = Dimension("quality", "quality", 0.0, 100.0)
AUTHENTICITY_100 = Dimension("authenticity", "quality", 0.0, 100.0)
CORRESPONDENCE_100 = Dimension("correspondence", "alignment", 0.0, 100.0)


# --- dimension matching -----------------------------------------------------------------------


def matched(trained: tuple[Dimension, ...], tested: tuple[Dimension, ...]) -> dict:
    return {
        m.tested.name: (m.trained.name if m.trained else None, m.rule)
        for m in cross.match_dimensions(trained, tested)
    }


def test_dimensions_match_by_name_first_then_by_kind() -> None:
    # AGIQA-3K -> AIGCIQA2023: quality by name; authenticity (a quality kind) and
    # correspondence (alignment) by kind.
    found = matched((QUALITY_5, ALIGN_5), (QUALITY_100, AUTHENTICITY_100, CORRESPONDENCE_100))
    assert found == {
        "quality": ("quality", cross.BY_NAME),
        "authenticity": ("quality", cross.BY_KIND),
        "correspondence": ("align", cross.BY_KIND),
    }
    # A name beats an earlier dimension of the same kind.
    assert matched((AUTHENTICITY_100, QUALITY_100), (QUALITY_5,)) == {
        "quality": ("quality", cross.BY_NAME)
    }


def test_overall_and_quality_stand_in_for_each_other_only_without_a_better_match() -> None:
    # AIGIQA-20K's overall score -> AGIQA-3K: quality from overall, alignment unmatched.
    assert matched((OVERALL_5,), (QUALITY_5, ALIGN_5)) == {
        "quality": ("overall", cross.OVERALL_QUALITY),
        "align": (None, None),
    }
    # AGIQA-3K -> AIGIQA-20K: overall from quality, never from alignment.
    assert matched((ALIGN_5, QUALITY_5), (OVERALL_5,)) == {
        "overall": ("quality", cross.OVERALL_QUALITY)
    }


def test_a_dimension_without_any_match_is_skipped() -> None:
    assert matched((ALIGN_5,), (QUALITY_100, OVERALL_5)) == {
        "quality": (None, None),
        "overall": (None, None),
    }
    assert matched((QUALITY_5,), (CORRESPONDENCE_100,)) == {"correspondence": (None, None)}


# --- scale mapping ----------------------------------------------------------------------------


def test_scale_maps_through_the_declared_ranges() -> None:
    values = np.array([0.0, 1.0, 2.5, 5.0])
    np.testing.assert_allclose(cross.map_scale(values, QUALITY_5, QUALITY_100), [0, 20, 50, 100])
    np.testing.assert_allclose(cross.map_scale(values * 20, QUALITY_100, QUALITY_5), values)
    shifted = Dimension("quality", "quality", 1.0, 11.0)
    np.testing.assert_allclose(cross.map_scale(values, QUALITY_5, shifted), [1, 3, 6, 11])


def test_scale_mapping_clips_to_the_target_range_and_keeps_the_ranking() -> None:
    np.testing.assert_allclose(
        cross.map_scale(np.array([-1.0, 6.0]), QUALITY_5, QUALITY_100), [0, 100]
    )
    rng = np.random.default_rng(0)
    values = rng.uniform(0, 5, 50)
    target = values + rng.normal(0, 1, 50)
    mapped = cross.map_scale(values, QUALITY_5, QUALITY_100)
    assert stats.spearmanr(mapped, target).statistic == pytest.approx(
        stats.spearmanr(values, target).statistic
    )


# --- A's split --------------------------------------------------------------------------------


def labelled_rows(n_groups: int = 20, per_group: int = 3) -> pd.DataFrame:
    groups = [f"p{g}" for g in range(n_groups) for _ in range(per_group)]
    return pd.DataFrame({"image": [f"{i}.jpg" for i in range(len(groups))], "prompt_group": groups})


def test_train_val_split_has_no_test_part_and_keeps_prompt_groups_whole() -> None:
    rows = labelled_rows()
    split = train_val_split(rows, val_fraction=0.2, seed=3)
    assert list(split.columns) == ["image", "prompt_group", "split0"]
    assert set(split["split0"]) == {"train", "val"}
    assert split["image"].tolist() == rows["image"].tolist()
    assert split.groupby("prompt_group")["split0"].nunique().eq(1).all()
    assert (split["split0"] == "val").sum() == 12  # 4 whole groups of 3 reach 20% of 60


def test_train_val_split_is_deterministic_by_seed() -> None:
    rows = labelled_rows()
    first = train_val_split(rows, 0.2, seed=3)
    pd.testing.assert_frame_equal(first, train_val_split(rows, 0.2, seed=3))
    assert not first.equals(train_val_split(rows, 0.2, seed=4))


def test_train_val_split_refuses_what_it_cannot_split() -> None:
    with pytest.raises(DataError, match="at least 2 prompt groups"):
        train_val_split(labelled_rows(n_groups=1), 0.1, seed=0)
    with pytest.raises(ConfigError, match="val_fraction"):
        train_val_split(labelled_rows(), 1.0, seed=0)


# --- the config section -----------------------------------------------------------------------


def three_dataset_config(**section: object) -> dict:
    config = small_config()
    for name in ("second", "third"):
        config["datasets"][name] = {"reader": "agiqa-3k", "root": f"data/{name}"}
    if section:
        config["cross_dataset"] = section
    return config


def test_absent_section_asks_for_no_job() -> None:
    config = three_dataset_config()
    assert cross.cross_settings(config) is None
    assert cross.train_jobs(config) == [] and cross.predict_jobs(config) == []


def test_all_pairs_and_every_trainable_model_by_default() -> None:
    config = three_dataset_config(pairs="all")
    settings = cross.cross_settings(config)
    assert settings is not None
    assert len(settings.pairs) == 3 * 2
    assert "clip_zeroshot" not in settings.models and "mllm_zeroshot" not in settings.models
    assert {"clip_residual", "dcmpln", "deqa"} <= set(settings.models)
    assert (settings.val_fraction, settings.seed) == (cross.DEFAULT_VAL_FRACTION, 0)
    assert len(cross.train_jobs(config)) == 3 * len(settings.models)
    assert len(cross.predict_jobs(config)) == 6 * len(settings.models)


def test_listed_pairs_and_models() -> None:
    config = three_dataset_config(
        pairs=[
            {"train": "synthetic", "test": ["second", "third"]},
            {"train": "second", "test": "third"},
        ],
        models=["clip_residual"],
        val_fraction=0.2,
        seed=5,
    )
    assert cross.train_jobs(config) == [("synthetic", "clip_residual"), ("second", "clip_residual")]
    assert cross.predict_jobs(config) == [
        ("synthetic", "clip_residual", "second"),
        ("synthetic", "clip_residual", "third"),
        ("second", "clip_residual", "third"),
    ]
    assert cross.split_settings(config) == {"val_fraction": 0.2, "seed": 5}


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"pairs": [{"train": "synthetic", "test": "nope"}]}, "'nope' is not in the config's"),
        ({"pairs": [{"train": "second", "test": ["second"]}]}, "cannot be tested on itself"),
        ({"pairs": [{"train": "second"}]}, "exactly 'train' and 'test'"),
        ({"models": ["clip_zeroshot"]}, "trains nothing"),
        ({"models": ["nope"]}, "model 'nope' is not in the config's models"),
        ({"val_fraction": 1.5}, "val_fraction must be a number in (0, 1)"),
    ],
)
def test_bad_sections_are_named(section: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        cross.cross_settings(three_dataset_config(**section))


@pytest.mark.parametrize(
    "section",
    [
        {"pairs": "every"},
        {"pairs": [{"train": "agiqa-3k", "tset": "agiqa-1k"}]},
        {"pairs": "all", "seeds": 1},
        {"val_fraction": 0},
    ],
)
def test_the_schema_takes_the_papers_section_and_refuses_typos(section: dict) -> None:
    from snakemake.utils import validate

    schema = str(REPO / "workflow" / "schemas" / "config.schema.yaml")
    paper = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    validate(paper, schema)
    assert cross.cross_settings(paper) is not None
    paper["cross_dataset"] = section
    with pytest.raises(Exception, match=r"cross_dataset|every|tset|seeds|val_fraction"):
        validate(paper, schema)


def test_one_dataset_has_no_pair() -> None:
    config = small_config()
    config["cross_dataset"] = {"pairs": "all"}
    with pytest.raises(ConfigError, match="no pair of distinct datasets"):
        cross.cross_settings(config)


# --- train on A, predict B --------------------------------------------------------------------


def make_datasets(tmp_path: Path) -> dict:
    """Dataset A in AGIQA-3K's form (0-5), dataset B rescaled to 0-100 with other names."""
    config = {
        "experiment": "cross",
        "seed": 0,
        "device": "cpu",
        "feature_cache_dir": str(tmp_path / "features"),
        "image_cache_dir": None,
        "datasets": {},
        "protocols": {"kfold_grouped": {"type": "kfold_grouped", "folds": 2}},
        "models": {"tiny": residual_config(epochs=1)},
        "cross_dataset": {"pairs": [{"train": "a", "test": "b"}], "val_fraction": 0.25},
    }
    layout = layout_of(config)
    for name, seed in (("a", 0), ("b", 1)):
        root = tmp_path / name
        generate(root, n_prompts=8, images_per_prompt=4, image_size=64, seed=seed)
        config["datasets"][name] = {"reader": "agiqa-3k", "root": str(root)}
        manifest = read_dataset("agiqa-3k", root, dataset=name)
        if name == "b":
            manifest = rescaled(manifest)
        manifest.save(tmp_path / layout.manifest(name))
    return config


def rescaled(manifest: Manifest) -> Manifest:
    """The manifest on a 0-100 scale, alignment renamed (AIGCIQA2023's convention)."""
    frame = manifest.frame.rename(columns={"mos_align": "mos_correspondence"})
    frame = frame.drop(columns=[c for c in frame.columns if c.startswith("std_")])
    for column in ("mos_quality", "mos_correspondence"):
        frame[column] = frame[column] * 20
    dims = (QUALITY_100, CORRESPONDENCE_100)
    return Manifest(manifest.dataset, frame, dims, source=manifest.source)


@pytest.fixture(scope="module")
def trained_on_a(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    tmp_path = tmp_path_factory.mktemp("cross")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)  # the layout's paths are relative, as in the workflow
        config = make_datasets(tmp_path)
        layout = layout_of(config)
        split = cross.split_path(layout, "a")
        cross.split_step(layout.manifest("a"), cross.split_settings(config), split, None)
        run_fold(cross.fold_job(config, "a", "tiny", threads=2))
        cross.predict_step(config, "a", "tiny", "b", threads=2, gpu=False, log_file=None)
    return tmp_path, config


@pytest.mark.slow
def test_a_pair_model_trains_on_a_without_a_test_part(tmp_path: Path, monkeypatch) -> None:
    """deqa's training items are pairs; the trainer also built training-mode datasets of the
    val and test parts, and cross_train's empty test part stopped it ("needs at least 2
    images"): the paper rehearsal's first cross_train of deqa."""
    monkeypatch.chdir(tmp_path)
    config = make_datasets(tmp_path)
    config["models"] = {
        "pairs": {
            "type": "deqa",
            "backbone": {"image_size": 64},
            "lora": {"r": 4, "alpha": 8},
            "train": {"epochs": 1, "batch_size": 4, "eval_batch_size": 8},
        }
    }
    layout = layout_of(config)
    split = cross.split_path(layout, "a")
    cross.split_step(layout.manifest("a"), cross.split_settings(config), split, None)
    metrics = run_fold(cross.fold_job(config, "a", "pairs", threads=1))
    assert metrics["n_test"] == 0 and metrics["n_train"] > 1


def test_training_on_a_uses_every_labelled_image_and_tests_none(
    trained_on_a: tuple[Path, dict],
) -> None:
    tmp_path, config = trained_on_a
    layout = layout_of(config)
    run = tmp_path / cross.train_dir(layout, "a", "tiny")
    metrics = json.loads((run / "metrics.json").read_text())
    labelled = Manifest.load(tmp_path / layout.manifest("a")).labelled()
    assert metrics["n_train"] + metrics["n_val"] == len(labelled) and metrics["n_test"] == 0
    assert metrics["test"] == {} and metrics["protocol"] == cross.PROTOCOL
    assert metrics["protocol_settings"]["val_fraction"] == 0.25
    assert pd.read_csv(run / "predictions.csv").empty
    roles = read_split(tmp_path / cross.split_path(layout, "a"), 0)
    assert set(roles) == {"train", "val"}


def test_predicting_b_scores_every_image_on_bs_scale(trained_on_a: tuple[Path, dict]) -> None:
    tmp_path, config = trained_on_a
    layout = layout_of(config)
    out = tmp_path / cross.predict_dir(layout, "a", "tiny", "b")
    predictions = pd.read_csv(out / "predictions.csv")
    manifest = Manifest.load(tmp_path / layout.manifest("b"))
    labelled = manifest.labelled()
    assert predictions["image"].tolist() == labelled["image"].tolist()
    assert predictions["pred_quality"].between(0, 100).all()
    np.testing.assert_allclose(predictions["target_quality"], labelled["mos_quality"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_test"] == len(labelled) and metrics["skipped"] == {}
    assert metrics["dimensions"]["quality"]["match"] == cross.BY_NAME
    assert metrics["dimensions"]["correspondence"]["trained_dimension"] == "align"
    assert metrics["dimensions"]["correspondence"]["scale"] == {"from": [0, 5], "to": [0, 100]}
    assert set(metrics["dimensions"]["quality"]["metrics"]) >= {"srcc", "plcc_logistic", "rmse"}

    # The checkpoint scores B the same outside the workflow, once mapped to B's scale.
    scorer = agiqa.load(tmp_path / cross.train_dir(layout, "a", "tiny") / "checkpoint.pt")
    images = [str(tmp_path / "b" / image) for image in labelled["image"]]
    scores = scorer.score(images, prompts=labelled["prompt"].tolist())
    np.testing.assert_allclose(
        predictions["pred_quality"], scores["quality"] * 20, atol=1e-4, rtol=0
    )
    np.testing.assert_allclose(
        predictions["pred_correspondence"], scores["align"] * 20, atol=1e-4, rtol=0
    )


def test_collected_results_feed_the_report(trained_on_a: tuple[Path, dict]) -> None:
    tmp_path, config = trained_on_a
    folders = [tmp_path / d for d in cross.predict_dirs(config)]
    frame = cross.collect_results(folders, "logistic4")
    assert list(frame.columns) == list(cross.RESULT_COLUMNS)
    assert frame[["train_dataset", "test_dataset", "model"]].drop_duplicates().values.tolist() == [
        ["a", "b", "tiny"]
    ]
    assert sorted(frame["dimension"]) == ["correspondence", "quality"]
    assert (frame["n"] == 32).all() and frame["srcc"].between(-1, 1).all()
    metrics = json.loads((folders[0] / "metrics.json").read_text())
    quality = frame.set_index("dimension").loc["quality"]
    job = metrics["dimensions"]["quality"]["metrics"]
    # The in-dataset tables' names: plcc raw, plcc_logistic after the monotone mapping.
    for name in ("srcc", "plcc", "plcc_logistic", "rmse", "rmse_logistic"):
        assert quality[name] == pytest.approx(job[name])
    assert quality["resampled"] == "prompt groups" and quality["n_prompt_groups"] == 8
    assert quality["srcc_ci_low"] <= quality["srcc"] <= quality["srcc_ci_high"]


def test_the_report_writes_the_cross_dataset_csv_table_and_figure(
    trained_on_a: tuple[Path, dict], tmp_path: Path
) -> None:
    from agiqa.report.figures import cross_dataset_figure
    from agiqa.report.names import DisplayNames
    from agiqa.report.paper_tables import cross_dataset_frame
    from agiqa.report.results import ReportSettings
    from agiqa.report.steps import cross_results

    run_root, config = trained_on_a
    folders = [str(run_root / d) for d in cross.predict_dirs(config)]
    settings = ReportSettings(logistic="logistic5", resamples=200)
    frame = cross_results(folders, tmp_path / "tables", settings)
    written = pd.read_csv(tmp_path / "tables" / "cross_dataset.csv")
    assert written["dimension"].tolist() == frame["dimension"].tolist()
    names = DisplayNames(datasets={"a": "A", "b": "B"})
    table = cross_dataset_frame(frame, names, precision=3)
    assert table.index.tolist() == [("tiny", "A")]
    assert sorted(table.columns.tolist()) == [("B", "Correspondence"), ("B", "Quality")]
    assert len(cross_dataset_figure(frame, names).axes) >= 2


def _prediction_folder(folder: Path, predictions: pd.DataFrame) -> Path:
    """A finished prediction job's folder (what run_predict writes), for the aggregation."""
    folder.mkdir(parents=True)
    predictions.to_csv(folder / "predictions.csv", index=False)
    info = {
        "train_dataset": "a",
        "test_dataset": "b",
        "model": "m",
        "dimensions": {"quality": {"trained_dimension": "quality", "match": cross.BY_NAME}},
    }
    (folder / "metrics.json").write_text(json.dumps(info))
    return folder


def test_cross_dataset_intervals_resample_the_test_sets_prompt_groups(tmp_path: Path) -> None:
    # B uses the middle of its 0-100 range; A's predictions, mapped linearly, the whole of it.
    rng = np.random.default_rng(3)
    groups = np.repeat([f"p{i}" for i in range(40)], 6)
    prompt, prompt_error = rng.normal(size=(2, 40)).repeat(6, axis=1)
    target = 50 + 8 * (prompt + rng.normal(size=240))
    error = 8 * prompt_error + 4 * rng.normal(size=240)  # errors shared within a prompt
    pred = 100 / (1 + np.exp(-(target - 50 + error) / 6))
    frame = pd.DataFrame(
        {"image": [f"{i}.jpg" for i in range(240)], "prompt_group": groups}
    ).assign(pred_quality=pred, target_quality=target)
    with_groups = _prediction_folder(tmp_path / "groups", frame)
    without = _prediction_folder(tmp_path / "images", frame.drop(columns="prompt_group"))
    results = cross.collect_results([with_groups, without], "logistic4", resamples=500, seed=1)
    by_prompt, by_image = results.iloc[0], results.iloc[1]
    assert by_prompt["n_prompt_groups"] == 40 and by_prompt["resampled"] == "prompt groups"
    assert by_image["resampled"] == "images" and by_image["n_prompt_groups"] == 240
    assert by_prompt["rmse_logistic"] < by_prompt["rmse"]  # the logistic absorbs scale use
    for metric in cross.INTERVAL_METRICS:
        low, high = by_prompt[f"{metric}_ci_low"], by_prompt[f"{metric}_ci_high"]
        assert low < by_prompt[metric] < high, metric
    # Whole prompts are drawn: wider than drawing images one by one.
    width = {
        row["resampled"]: row["srcc_ci_high"] - row["srcc_ci_low"] for _, row in results.iterrows()
    }
    assert width["prompt groups"] > width["images"]


# --- the workflow -----------------------------------------------------------------------------


def test_dry_run_plans_the_cross_dataset_jobs(tmp_path: Path) -> None:
    config = small_config()
    config["datasets"]["other"] = {
        "reader": "agiqa-3k",
        "synthesize": {"n_prompts": 6, "images_per_prompt": 2, "image_size": 32, "seed": 7},
    }
    models = ["clip_residual", "dcmpln"]
    config["cross_dataset"] = {"pairs": "all", "models": models}
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    shutil.copytree(REPO / "profiles", tmp_path / "profiles")
    result = snakemake("-n", "--cores", "2", "--configfile", str(config_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    counts = job_counts(result)
    datasets = len(config["datasets"])
    assert counts["cross_split"] == str(datasets)
    assert counts["cross_train"] == str(datasets * len(models))
    assert counts["cross_predict"] == str(datasets * (datasets - 1) * len(models))
    assert "results/demo/cross/synthetic/dcmpln/tested_on/other/metrics.json" in result.stdout


@pytest.mark.slow
def test_workflow_trains_on_a_predicts_b_and_reports_apart(tmp_path: Path) -> None:
    synthetic = {"n_prompts": 6, "images_per_prompt": 3, "image_size": 32}
    config = {
        "experiment": "x",
        "train_threads": 1,
        "datasets": {
            name: {"reader": "agiqa-3k", "synthesize": {**synthetic, "seed": seed}}
            for name, seed in (("a", 0), ("b", 1))
        },
        "protocols": {"kfold_grouped": {"type": "kfold_grouped", "folds": 2}},
        "models": {"tiny": residual_config(epochs=1)},
        "cross_dataset": {"pairs": [{"train": "a", "test": "b"}]},
        "mlflow": {"db": "results/mlflow.db"},
        "report": {"resamples": 100},
    }
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    result = snakemake("--cores", "2", "--configfile", str(config_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    results = tmp_path / "results" / "x"
    table = pd.read_csv(results / "tables" / "cross_dataset.csv")
    assert set(zip(table["train_dataset"], table["test_dataset"], strict=True)) == {("a", "b")}
    assert sorted(table["dimension"]) == ["align", "quality"]
    assert (results / "tables" / "cross_dataset.tex").stat().st_size
    assert (results / "figures" / "cross_dataset.png").stat().st_size
    # The in-dataset tables hold the fold jobs only.
    main = pd.read_csv(results / "tables" / "main.csv")
    assert set(main["dataset"]) == {"a", "b"} and (main["n_splits"] == 2).all()
    assert (tmp_path / "logs/x/cross/a/tiny/tested_on/b.log").exists()
