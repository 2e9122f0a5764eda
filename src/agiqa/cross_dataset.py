"""Cross-dataset generalisation: train on dataset A's labelled set, test on every other dataset B.

The config's ``cross_dataset`` section (absent: no cross-dataset jobs) names the ordered pairs
(``pairs: all``, or ``[{train: A, test: [B, ...]}]``), the models (default: every configured
model that trains), and how validation is carved from A (``val_fraction``, ``seed``).

Per (A, model) one training job runs the ordinary fold job (agiqa.train.fold.run_fold) on a split
file of A with a single column: every labelled image ``train`` or ``val`` (whole prompt groups,
agiqa.data.splits.train_val_split), no ``test``. Per (A, B, model) a prediction job loads A's
checkpoint through the scoring API (agiqa.load), scores B's labelled images with B's prompts and
compares with B's MOS on the dimensions the two share:

- each dimension of B takes the trained dimension of the same name; else the first of the same
  kind (quality, alignment, overall); else, between ``overall`` and ``quality``, the first of the
  other kind; without any, it is skipped (``metrics.json`` says so);
- a prediction on A's declared range [lo_A, hi_A] goes to B's [lo_B, hi_B] through its position in
  [0, 1]: ``lo_B + (p - lo_A) / (hi_A - lo_A) * (hi_B - lo_B)``, clipped to B's range. SRCC does
  not change. The metrics carry the in-dataset tables' names: ``plcc`` and ``rmse`` on the mapped
  predictions, ``plcc_logistic`` and ``rmse_logistic`` after the project's monotone logistic fitted
  on B (the RMSE to read: A's raters may use a different part of the range than B's).
- 95% intervals come from a cluster bootstrap over B's prompt groups (the trained checkpoint held
  fixed: one training run, so training variance is not in them).

docs/cross-dataset.md says the same for readers of the paper.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from agiqa.data.manifest import Dimension
from agiqa.errors import ConfigError
from agiqa.evaluate.metrics import compute_metrics
from agiqa.evaluate.significance import SplitScores, bootstrap_interval
from agiqa.pipeline import (
    Layout,
    dataset_entry,
    dataset_root,
    layout_of,
    model_entry,
    with_stand_in_weights,
)
from agiqa.train.fold import JOB_LOGISTIC, FoldJob

log = logging.getLogger(__name__)

SECTION = "cross_dataset"
#: The protocol name cross-dataset training records in its config.yaml and metrics.json.
PROTOCOL = "cross_dataset"
DEFAULT_VAL_FRACTION = 0.1
#: Files a prediction job writes.
PREDICT_FILES = ("predictions.csv", "metrics.json")
#: How a dimension of B found its trained dimension (match rules, in order of preference).
BY_NAME, BY_KIND, OVERALL_QUALITY = "name", "kind", "overall<->quality"
#: Kinds that stand in for each other when nothing else matches.
FALLBACK_KIND = {"overall": "quality", "quality": "overall"}
#: Columns of the aggregated results (agiqa.report.aggregate's ``cross_dataset`` hook).
RESULT_COLUMNS = (
    "train_dataset",
    "test_dataset",
    "model",
    "dimension",
    "trained_dimension",
    "match",
    "srcc",
    "srcc_ci_low",
    "srcc_ci_high",
    "krcc",
    "plcc",
    "plcc_ci_low",
    "plcc_ci_high",
    "plcc_logistic",
    "plcc_logistic_ci_low",
    "plcc_logistic_ci_high",
    "rmse",
    "rmse_logistic",
    "rmse_logistic_ci_low",
    "rmse_logistic_ci_high",
    "n",
    "n_prompt_groups",
    "resampled",
)
#: Metrics of the aggregated results that get a bootstrap interval.
INTERVAL_METRICS = ("srcc", "plcc", "plcc_logistic", "rmse_logistic")


# --- config -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CrossSettings:
    """The resolved ``cross_dataset`` section."""

    pairs: tuple[tuple[str, str], ...]
    models: tuple[str, ...]
    val_fraction: float = DEFAULT_VAL_FRACTION
    seed: int = 0


def cross_settings(config: dict) -> CrossSettings | None:
    """The section resolved and checked; None when the config has none.

    Raises:
        ConfigError: unknown datasets or models, a dataset paired with itself, a model that
            trains nothing, no pair at all, or a bad ``val_fraction``.
    """
    section = config.get(SECTION)
    if section is None:
        return None
    if not isinstance(section, dict):
        raise ConfigError(f"{SECTION} must be a mapping (pairs, models, val_fraction, seed)")
    fraction = section.get("val_fraction", DEFAULT_VAL_FRACTION)
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction < 1:
        raise ConfigError(f"{SECTION}.val_fraction must be a number in (0, 1), not {fraction!r}")
    seed = section.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"{SECTION}.seed must be an integer, not {seed!r}")
    return CrossSettings(
        pairs=_pairs(config, section.get("pairs", "all")),
        models=_models(config, section.get("models")),
        val_fraction=float(fraction),
        seed=seed,
    )


def _pairs(config: dict, pairs: object) -> tuple[tuple[str, str], ...]:
    datasets = list(config["datasets"])
    if pairs == "all":
        found = [(a, b) for a in datasets for b in datasets if a != b]
    elif isinstance(pairs, list):
        found = [pair for index, entry in enumerate(pairs) for pair in _entry(entry, index)]
    else:
        raise ConfigError(f"{SECTION}.pairs must be 'all' or a list of {{train, test}} entries")
    unknown = [name for pair in found for name in pair if name not in datasets]
    if unknown:
        raise ConfigError(f"{SECTION}.pairs: '{unknown[0]}' is not in the config's datasets")
    same = [a for a, b in found if a == b]
    if same:
        raise ConfigError(f"{SECTION}.pairs: '{same[0]}' cannot be tested on itself")
    if not found:
        raise ConfigError(f"{SECTION}: no pair of distinct datasets (configure at least two)")
    return tuple(dict.fromkeys(found))  # a pair listed twice runs once


def _entry(entry: object, index: int) -> list[tuple[str, str]]:
    where = f"{SECTION}.pairs[{index}]"
    if not isinstance(entry, dict) or set(entry) != {"train", "test"}:
        raise ConfigError(f"{where} must be a mapping with exactly 'train' and 'test'")
    tests = entry["test"] if isinstance(entry["test"], list) else [entry["test"]]
    names = [entry["train"], *tests]
    if not tests or not all(isinstance(name, str) for name in names):
        raise ConfigError(f"{where}: 'train' is a dataset name, 'test' one or a list of them")
    return [(entry["train"], test) for test in tests]


def _models(config: dict, listed: object) -> tuple[str, ...]:
    from agiqa.models import MODELS

    if listed is None:  # what zero-shot models score is already in the in-dataset tables
        return tuple(m for m, e in config["models"].items() if MODELS.get(e["type"]).trainable)
    if not isinstance(listed, list) or not listed:
        raise ConfigError(f"{SECTION}.models must be a non-empty list of model names")
    for name in listed:
        if name not in config["models"]:
            raise ConfigError(f"{SECTION}.models: model '{name}' is not in the config's models")
        if not MODELS.get(config["models"][name]["type"]).trainable:
            raise ConfigError(
                f"{SECTION}.models: model '{name}' trains nothing (zero-shot), so there is "
                "nothing to carry across datasets; its in-dataset results already score it on "
                "every dataset"
            )
    return tuple(dict.fromkeys(listed))


def train_jobs(config: dict) -> list[tuple[str, str]]:
    """Every (training dataset, model) the section asks for."""
    settings = cross_settings(config)
    if settings is None:
        return []
    trained = dict.fromkeys(a for a, _ in settings.pairs)
    return [(a, model) for a in trained for model in settings.models]


def predict_jobs(config: dict) -> list[tuple[str, str, str]]:
    """Every (training dataset, model, test dataset) the section asks for."""
    settings = cross_settings(config)
    if settings is None:
        return []
    return [(a, model, b) for a, b in settings.pairs for model in settings.models]


# --- where things go --------------------------------------------------------------------------


def split_path(layout: Layout, dataset: str) -> str:
    return f"{layout.results}/cross/{dataset}/split.csv"


def train_dir(layout: Layout, dataset: str, model: str) -> str:
    return f"{layout.results}/cross/{dataset}/{model}"


def checkpoint_path(layout: Layout, dataset: str, model: str) -> str:
    """The checkpoint the training job on all of ``dataset`` writes."""
    return f"{train_dir(layout, dataset, model)}/checkpoint.pt"


def predict_dir(layout: Layout, dataset: str, model: str, test: str) -> str:
    return f"{train_dir(layout, dataset, model)}/tested_on/{test}"


def predict_dirs(config: dict, layout: Layout | None = None) -> list[str]:
    layout = layout or layout_of(config)
    return [predict_dir(layout, *job) for job in predict_jobs(config)]


# --- training on A ----------------------------------------------------------------------------


def split_settings(config: dict) -> dict:
    """``val_fraction`` and ``seed`` of A's train/val split (the split rule's params)."""
    settings = cross_settings(config)
    if settings is None:
        raise ConfigError(f"the config has no {SECTION} section")
    return {"val_fraction": settings.val_fraction, "seed": settings.seed}


def protocol_settings(config: dict) -> dict:
    """What the fold job records as its protocol: selection on validation, A's split settings.

    ``folds`` is the smallest a Protocol accepts and means nothing here: the split file has one
    train/val column and no test part.
    """
    from agiqa.data.splits import Protocol

    return Protocol(type="kfold_grouped", folds=2, **split_settings(config)).settings()


def fold_job(
    config: dict, dataset: str, model: str, *, threads: int = 1, layout: Layout | None = None
) -> FoldJob:
    """The training job of (A, model): the in-dataset fold job's settings, A's train/val split."""
    from agiqa.pipeline import descriptions_of

    layout = layout or layout_of(config)
    return FoldJob(
        dataset=dataset,
        root=dataset_root(config, dataset, layout),
        manifest=layout.manifest(dataset),
        splits=split_path(layout, dataset),
        split=0,
        protocol=PROTOCOL,
        model_name=model,
        model_config=with_stand_in_weights(config, model_entry(config, model, dataset), layout),
        out_dir=train_dir(layout, dataset, model),
        seed=int(config.get("seed", 0)),
        threads=threads,
        device=str(config.get("device", "auto")),
        feature_cache_dir=str(config.get("feature_cache_dir", "resources/features")),
        image_cache_dir=config.get("image_cache_dir", "resources/images"),
        descriptions=descriptions_of(config, dataset, model, layout),
        protocol_settings=protocol_settings(config),
        allowed_link_roots=tuple(dataset_entry(config, dataset).get("allowed_link_roots", ())),
    )


def fold_params(config: dict, dataset: str, model: str) -> str:
    """What a training job's result depends on in the config, as canonical JSON (its params)."""
    job = fold_job(config, dataset, model)
    resolved = job.resolved_config()
    resolved["descriptions"] = job.descriptions
    resolved["device"] = job.device
    return json.dumps(resolved, sort_keys=True, default=str)


# --- predicting B -------------------------------------------------------------------------


@dataclass(frozen=True)
class Match:
    """A dimension of the test dataset and the trained dimension that predicts it (if any)."""

    tested: Dimension
    trained: Dimension | None
    rule: str | None


def match_dimensions(trained: Sequence[Dimension], tested: Sequence[Dimension]) -> list[Match]:
    """One match per tested dimension: same name, else same kind, else overall <-> quality."""
    return [_match(trained, dim) for dim in tested]


def _match(trained: Sequence[Dimension], dim: Dimension) -> Match:
    rules = (
        (BY_NAME, lambda t: t.name == dim.name),
        (BY_KIND, lambda t: t.kind == dim.kind),
        (OVERALL_QUALITY, lambda t: t.kind == FALLBACK_KIND.get(dim.kind)),
    )
    for rule, fits in rules:
        found = next((t for t in trained if fits(t)), None)
        if found is not None:
            return Match(dim, found, rule)
    return Match(dim, None, None)


def map_scale(values: np.ndarray, source: Dimension, target: Dimension) -> np.ndarray:
    """Scores on ``source``'s declared range, linearly onto ``target``'s, clipped to it."""
    position = source.normalise(np.asarray(values, dtype=np.float64))
    return np.clip(target.denormalise(position), target.low, target.high)


@dataclass(frozen=True)
class PredictJob:
    """Everything that determines a prediction job's result."""

    checkpoint: str
    train_dataset: str
    model: str
    test_dataset: str
    root: str
    manifest: str
    out_dir: str
    descriptions: str | None = None
    device: str = "cpu"
    threads: int = 1
    allowed_link_roots: tuple[str, ...] = ()


def predict_job(
    config: dict,
    dataset: str,
    model: str,
    test: str,
    *,
    threads: int = 1,
    layout: Layout | None = None,
) -> PredictJob:
    layout = layout or layout_of(config)
    return PredictJob(
        checkpoint=f"{train_dir(layout, dataset, model)}/checkpoint.pt",
        train_dataset=dataset,
        model=model,
        test_dataset=test,
        root=dataset_root(config, test, layout),
        manifest=layout.manifest(test),
        out_dir=predict_dir(layout, dataset, model, test),
        descriptions=predict_descriptions(config, dataset, model, test, layout),
        device=_device(config, model),
        threads=threads,
        allowed_link_roots=tuple(dataset_entry(config, test).get("allowed_link_roots", ())),
    )


def predict_params(config: dict, dataset: str, model: str, test: str) -> str:
    """What a prediction job's result depends on in the config (its params); not the threads."""
    job = predict_job(config, dataset, model, test)
    settings = {k: v for k, v in vars(job).items() if k != "threads"}
    return json.dumps(settings, sort_keys=True, default=str)


def predict_descriptions(
    config: dict, dataset: str, model: str, test: str, layout: Layout | None = None
) -> str | None:
    """B's table of the describer the model read on A; None when it read none on A (it learned
    the "no description" input then) or the describer has none for B."""
    from agiqa.describe.workflow import describer_datasets, description_path
    from agiqa.pipeline import descriptions_of

    if descriptions_of(config, dataset, model, layout) is None:
        return None
    describer = model_entry(config, model, dataset)["descriptions"]
    if test not in describer_datasets(config, describer):
        return None
    return description_path(test, describer, (layout or layout_of(config)).results)


def _device(config: dict, model: str) -> str:
    # As the fold job: "auto" keeps a model that gains nothing from a GPU on the CPU.
    from agiqa.models import MODELS

    requested = str(config.get("device", "auto"))
    if requested == "auto" and not MODELS.get(config["models"][model]["type"]).uses_gpu:
        return "cpu"
    return requested


def run_predict(job: PredictJob) -> dict:
    """Score B's labelled images with A's checkpoint; write predictions.csv and metrics.json."""
    import torch

    from agiqa.data.manifest import Manifest
    from agiqa.scoring import load

    torch.set_num_threads(max(1, job.threads))
    manifest = Manifest.load(job.manifest)
    labelled = manifest.labelled()
    scorer = load(job.checkpoint, device=job.device)
    matches = match_dimensions(scorer.dimensions, manifest.dimensions)
    scores = scorer.score(
        _image_paths(job, labelled, manifest.source),
        prompts=labelled["prompt"].tolist(),
        descriptions=_descriptions(job, labelled),
    )
    predictions = prediction_table(labelled, scores, matches)
    out = Path(job.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    predictions.to_csv(out / "predictions.csv", index=False)
    metrics = pair_metrics(job, predictions, matches)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=True) + "\n")
    for name, reason in metrics["skipped"].items():
        log.warning("%s: %s", name, reason)
    return metrics


def _image_paths(job: PredictJob, labelled: pd.DataFrame, source: str) -> list[str]:
    # The fold job's resolution: canonical paths, symbolic links only into allowed folders.
    from agiqa.train.data import ManifestImages

    images = ManifestImages(labelled, job.root, source, job.allowed_link_roots)
    return [str(path) for path in images.paths]


def _descriptions(job: PredictJob, labelled: pd.DataFrame) -> list[str] | None:
    if job.descriptions is None:
        return None
    from agiqa.describe.runner import read_descriptions

    lookup = read_descriptions(job.descriptions, require_complete=False)
    return [lookup.get(image, "") for image in labelled["image"]]


def prediction_table(
    labelled: pd.DataFrame, scores: pd.DataFrame, matches: Sequence[Match]
) -> pd.DataFrame:
    """image, its prompt group (the bootstrap's cluster), then ``pred_<dim>`` (on B's scale) and
    ``target_<dim>`` per matched dimension."""
    table = pd.DataFrame(
        {
            "image": labelled["image"].to_numpy(),
            "prompt_group": labelled["prompt_group"].astype(str).to_numpy(),
        }
    )
    for match in matches:
        if match.trained is None:
            continue
        raw = scores[match.trained.name].to_numpy(float)
        table[f"pred_{match.tested.name}"] = map_scale(raw, match.trained, match.tested)
        table[f"target_{match.tested.name}"] = labelled[match.tested.mos_column].to_numpy(float)
    return table


def pair_metrics(job: PredictJob, predictions: pd.DataFrame, matches: Sequence[Match]) -> dict:
    """metrics.json: the pair, each dimension's match and scale mapping, metrics, skips."""
    dimensions, skipped = {}, {}
    for match in matches:
        name = match.tested.name
        if match.trained is None:
            skipped[name] = f"no trained dimension of kind {match.tested.kind} or a stand-in"
            continue
        pred, target = predictions[f"pred_{name}"], predictions[f"target_{name}"]
        dimensions[name] = {
            "trained_dimension": match.trained.name,
            "match": match.rule,
            "scale": {
                "from": [match.trained.low, match.trained.high],
                "to": [match.tested.low, match.tested.high],
            },
            "metrics": compute_metrics(pred, target, logistic=JOB_LOGISTIC),
        }
    return {
        "train_dataset": job.train_dataset,
        "test_dataset": job.test_dataset,
        "model": job.model,
        "checkpoint": job.checkpoint,
        "n_test": len(predictions),
        "logistic": JOB_LOGISTIC,
        "dimensions": dimensions,
        "skipped": skipped,
    }


# --- aggregation ------------------------------------------------------------------------------


def collect_results(
    folders: Sequence[str | Path],
    logistic: str = JOB_LOGISTIC,
    resamples: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per (A, B, model, matched dimension) of finished prediction jobs.

    Metrics are recomputed from predictions.csv with the report's ``logistic``, as the
    in-dataset tables are, under the same names (``plcc`` raw, ``plcc_logistic`` after the
    mapping). ``INTERVAL_METRICS`` get a 95% percentile interval from ``resamples`` draws of B's
    prompt groups (seeded by ``seed`` and the pair); predictions written before the prompt group
    was recorded are resampled image by image (``resampled`` says which).
    """
    rows = []
    for folder in map(Path, folders):
        info = json.loads((folder / "metrics.json").read_text())
        predictions = pd.read_csv(folder / "predictions.csv", dtype={"image": str})
        clusters, unit = _prompt_clusters(folder, predictions)
        for name, found in info["dimensions"].items():
            pred = predictions[f"pred_{name}"].to_numpy(float)
            target = predictions[f"target_{name}"].to_numpy(float)
            metrics = compute_metrics(pred, target, logistic=logistic)
            identity = (info["train_dataset"], info["test_dataset"], info["model"], name)
            intervals = _intervals(
                SplitScores(0, predictions["image"].to_numpy(), pred, target),
                clusters,
                np.random.default_rng([seed, zlib.crc32("/".join(identity).encode())]),
                resamples,
                logistic,
            )
            rows.append(
                {
                    "train_dataset": info["train_dataset"],
                    "test_dataset": info["test_dataset"],
                    "model": info["model"],
                    "dimension": name,
                    "trained_dimension": found["trained_dimension"],
                    "match": found["match"],
                    **metrics,
                    **intervals,
                    "n": len(predictions),
                    "n_prompt_groups": len(np.unique(clusters)),
                    "resampled": unit,
                }
            )
    return pd.DataFrame(rows, columns=list(RESULT_COLUMNS))


def _prompt_clusters(folder: Path, predictions: pd.DataFrame) -> tuple[np.ndarray, str]:
    if "prompt_group" in predictions.columns:
        return predictions["prompt_group"].astype(str).to_numpy(), "prompt groups"
    log.warning(
        "%s has no prompt_group column (written by an older agiqa): its intervals resample "
        "images, which understates them; rerun the prediction job to fix",
        folder / "predictions.csv",
    )
    return predictions["image"].astype(str).to_numpy(), "images"


def _intervals(
    scores: SplitScores,
    clusters: np.ndarray,
    rng: np.random.Generator,
    resamples: int,
    logistic: str,
) -> dict[str, float]:
    intervals = {}
    for metric in INTERVAL_METRICS:
        low, high = bootstrap_interval(scores, metric, clusters, resamples, rng, logistic)
        intervals[f"{metric}_ci_low"], intervals[f"{metric}_ci_high"] = low, high
    return intervals


# --- workflow steps (the thin scripts of workflow/rules/cross_dataset.smk call these) -------


def split_step(manifest: str, settings: dict, out: str, log_file: str | None) -> None:
    """Write A's train/val split file (one column, no test part)."""
    from agiqa.data.manifest import Manifest
    from agiqa.data.splits import train_val_split, write_splits
    from agiqa.steps import job_log

    with job_log(log_file):
        labelled = Manifest.load(manifest).labelled()
        split = train_val_split(labelled, float(settings["val_fraction"]), int(settings["seed"]))
        write_splits(split, out)
        n_val = int((split["split0"] == "val").sum())
        log.info("wrote %s: %d train / %d val images", out, len(split) - n_val, n_val)


def predict_step(
    config: dict,
    dataset: str,
    model: str,
    test: str,
    *,
    threads: int,
    gpu: bool,
    log_file: str | None,
) -> dict:
    """Score B with A's checkpoint (leasing a GPU first when the rule asks for one)."""
    from agiqa.steps import job_log
    from agiqa.train.gpu import gpu_lease

    with job_log(log_file), gpu_lease(gpu):  # leased before CUDA starts
        metrics = run_predict(predict_job(config, dataset, model, test, threads=threads))
        log.info("%s on %s -> %s: %s", model, dataset, test, sorted(metrics["dimensions"]))
        return metrics
