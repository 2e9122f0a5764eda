"""Evaluate any model from its predictions, on agiqa's split files, with agiqa's statistics.

A model trained elsewhere is evaluated from a predictions CSV: one row per (split, image) of each
split's **test part**, columns ``image``, ``split`` and ``pred_<dimension>`` (one per predicted
dimension, on the dataset's native scale). agiqa's own ``predictions.csv`` files have that shape
(one split per file, plus ``target_*`` columns that are ignored here), so a model folder
``runs/<protocol>/<dataset>/<model>`` (its ``split*/predictions.csv``) is valid input too.

The predictions are checked against the protocol before any number is computed
(``check_predictions``). Refused, with the rows named: an image outside the split's test part (a
model "tested" on its training images, or on every image), a missing test image or split, a
duplicate (split, image), a split or image the split file does not have, a NaN, empty or
non-numeric score. Values that look like another scale (0–1 predictions for a 0–5 MOS) are
warned about, and evaluated as given: nothing is clipped, rescaled or filled in.

Checked predictions become run folders shaped like a fold job's (``predictions.csv`` with the
manifest's targets, an empty ``val_predictions.csv``, ``metrics.json``, ``config.yaml``) under
``<protocol>/<dataset>/<name>/split<k>/``, so the report code that makes agiqa's tables reads
them unchanged: ``evaluate`` (the ``agiqa evaluate`` command) and the workflow's ``external:``
section (``import_external``) both go through it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from agiqa.data.manifest import Dimension
from agiqa.data.split_info import SplitFile, read_info
from agiqa.errors import ConfigError, DataError
from agiqa.provenance import file_sha256, git_commit, library_versions
from agiqa.safe_names import SAFE_NAME

log = logging.getLogger(__name__)

PRED_PREFIX = "pred_"
#: A run folder written here carries this key in its provenance (agiqa's fold jobs never do).
EXTERNAL_KEY = "external"
#: Rows named in an error before "and N more".
SHOWN_ROWS = 10
#: The logistic of the per-run metrics.json record (the tables recompute with the report's).
RECORD_LOGISTIC = "logistic4"


def check_name(name: str) -> str:
    """A model name becomes a folder and a table row: the workflow's safe-name rule."""
    if not SAFE_NAME.match(name):
        raise ConfigError(
            f"model name {name!r} must match {SAFE_NAME.pattern} (it becomes a folder)"
        )
    return name


# --- reading -----------------------------------------------------------------------------------


def prediction_files(source: str | Path) -> list[Path]:
    """A CSV, or a model folder of agiqa's layout: its ``split*/predictions.csv`` files."""
    path = Path(source)
    if path.is_dir():
        found = sorted(
            path.glob("split*/predictions.csv"),
            key=lambda p: int(re.sub(r"\D", "", p.parent.name) or 0),
        )
        if not found:
            raise DataError("a folder of predictions must hold split*/predictions.csv", file=path)
        return found
    if not path.is_file():
        raise DataError("predictions file not found", file=path)
    return [path]


def read_predictions(sources: Iterable[str | Path]) -> pd.DataFrame:
    """Every row of every file, as text (checked later), with ``_file`` and ``_row`` (the line
    a person sees: the header is row 1)."""
    frames = []
    for path in (f for source in sources for f in prediction_files(source)):
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
            raise DataError(f"not a readable CSV ({error})", file=path) from None
        missing = [c for c in ("image", "split") if c not in frame.columns]
        if missing:
            raise DataError(
                f"no column(s) {missing}: a predictions file has image, split and one "
                "pred_<dimension> column per predicted dimension",
                file=path,
            )
        if not any(c.startswith(PRED_PREFIX) for c in frame.columns):
            raise DataError(
                "no pred_<dimension> column (e.g. pred_quality): nothing to evaluate", file=path
            )
        frame["_file"] = str(path)
        frame["_row"] = np.arange(len(frame)) + 2
        frames.append(frame)
    if not frames:
        raise DataError("no predictions file given")
    return pd.concat(frames, ignore_index=True)


# --- checking ------------------------------------------------------------------------------------


@dataclass
class Problems:
    """Everything wrong with a predictions table, each with the rows at fault."""

    items: list[str] = field(default_factory=list)

    def add(self, message: str, rows: pd.DataFrame | None = None) -> None:
        self.items.append(message + ("" if rows is None else f": {name_rows(rows)}"))

    def raise_if_any(self, split_file: SplitFile) -> None:
        if self.items:
            raise DataError(
                f"refused: {len(self.items)} problem(s) with the predictions for split file "
                f"{split_file.path} (protocol {split_file.protocol}, dataset "
                f"{split_file.dataset}, {split_file.n_splits} splits):\n"
                + "\n".join(f"- {item}" for item in self.items)
            )


def name_rows(rows: pd.DataFrame) -> str:
    """``file rows 5, 9 and 12`` (the first ``SHOWN_ROWS`` rows, then how many more)."""
    parts, shown = [], 0
    for file, group in rows.groupby("_file", sort=False):
        numbers = group["_row"].tolist()[: max(0, SHOWN_ROWS - shown)]
        shown += len(numbers)
        if numbers:
            parts.append(f"{file} row{'s' if len(numbers) > 1 else ''} {_join(numbers)}")
    more = len(rows) - shown
    return "; ".join(parts) + (f" (and {more} more rows)" if more > 0 else "")


def _join(values: Sequence[object]) -> str:
    text = [str(v) for v in values]
    return text[0] if len(text) == 1 else ", ".join(text[:-1]) + " and " + text[-1]


def _split_numbers(values: pd.Series) -> pd.Series:
    """``3`` or ``split3`` -> 3; anything else -> NaN."""
    digits = values.str.strip().str.extract(r"^(?:split)?(\d+)$", expand=False)
    return pd.to_numeric(digits, errors="coerce")


def check_predictions(frame: pd.DataFrame, split_file: SplitFile) -> pd.DataFrame:
    """The predictions as numbers, indexed like ``frame``, once every protocol check passes.

    Raises:
        DataError: listing every problem (see the module docstring), each with its rows.
    """
    problems = Problems()
    dims = {d.name for d in split_file.manifest.dimensions}
    columns = [c for c in frame.columns if c.startswith(PRED_PREFIX)]
    unknown = [c for c in columns if c.removeprefix(PRED_PREFIX) not in dims]
    if unknown:
        raise DataError(
            f"column(s) {unknown} name no dimension of {split_file.dataset} "
            f"(it rates {sorted(dims)}: use pred_<dimension>)",
            file=frame["_file"].iloc[0],
        )
    split = _split_numbers(frame["split"])
    bad_split = split.isna()
    if bad_split.any():
        problems.add("split is not a split number (0, 1, ... or split0, ...)", frame[bad_split])
    outside = ~bad_split & ~split.isin(range(split_file.n_splits))
    if outside.any():
        found = sorted({int(v) for v in split[outside]})
        problems.add(
            f"split(s) {found} are not in the split file (it has split0 to "
            f"split{split_file.n_splits - 1})",
            frame[outside],
        )
    known_images = frame["image"].isin(split_file.roles["image"])
    if (~known_images).any():
        problems.add(
            "image(s) the split file does not have (it names images by their path relative to "
            f"the dataset root, e.g. '{split_file.roles['image'].iloc[0]}'), e.g. "
            f"'{frame.loc[~known_images, 'image'].iloc[0]}'",
            frame[~known_images],
        )
    valid = ~bad_split & ~outside & known_images
    keyed = frame[valid].assign(_split=split[valid].astype(int))
    duplicated = keyed.duplicated(["_split", "image"], keep=False)
    if duplicated.any():
        problems.add("duplicate rows (the same split and image twice)", keyed[duplicated])
    for k in range(split_file.n_splits):
        _check_split(keyed[keyed["_split"] == k], split_file, k, problems)
    scores = _scores(frame, columns, problems)
    problems.raise_if_any(split_file)
    return scores.assign(split=split.astype(int), image=frame["image"])


def _check_split(rows: pd.DataFrame, split_file: SplitFile, k: int, problems: Problems) -> None:
    roles = split_file.role_of(k)
    if rows.empty:
        problems.add(
            f"split {k} has no predictions: the protocol is every split "
            f"({split_file.n_splits}), not a chosen one"
        )
        return
    role = rows["image"].map(roles)
    outside = rows[role != "test"]
    if len(outside):
        if set(rows["image"]) >= set(roles.index):
            problems.add(
                f"split {k}: predictions for every image of the dataset ({len(roles)}), training "
                f"and validation images included; only its {int((roles == 'test').sum())} test "
                "images may be predicted",
                outside,
            )
        else:
            for name in ("train", "val"):
                chosen = outside[role[role != "test"] == name]
                if len(chosen):
                    what = "training" if name == "train" else "validation"
                    problems.add(
                        f"split {k}: {len(chosen)} prediction(s) for {what} images, outside the "
                        "test part (a model is tested only on images it never saw)",
                        chosen,
                    )
    tested = set(roles.index[roles == "test"])
    missing = sorted(tested - set(rows["image"]))
    if missing:
        problems.add(
            f"split {k}: {len(missing)} of its {len(tested)} test images have no prediction, "
            f"e.g. {', '.join(repr(m) for m in missing[:3])} (nothing is filled in)"
        )


def _scores(frame: pd.DataFrame, columns: Sequence[str], problems: Problems) -> pd.DataFrame:
    scores = pd.DataFrame(index=frame.index)
    for column in columns:
        values = pd.to_numeric(frame[column].str.strip(), errors="coerce")
        bad = ~np.isfinite(values.to_numpy(float))
        if bad.any():
            first = frame.loc[bad, column].iloc[0]
            problems.add(
                f"{column} is not a finite number (empty, NaN, inf or text; e.g. {first!r})",
                frame[bad],
            )
        scores[column] = values
    return scores


def scale_warnings(scores: pd.DataFrame, split_file: SplitFile) -> list[str]:
    """Predictions that look like another scale than the dimension's native one."""
    warnings = []
    for dim in split_file.manifest.dimensions:
        column = f"{PRED_PREFIX}{dim.name}"
        if column not in scores:
            continue
        text = _scale_warning(scores[column].to_numpy(float), dim)
        if text:
            warnings.append(f"{split_file.dataset} {column}: {text}")
    return warnings


def _scale_warning(values: np.ndarray, dim: Dimension) -> str | None:
    low, high = float(values.min()), float(values.max())
    scale = f"[{dim.low:g}, {dim.high:g}]"
    outside = int(((values < dim.low) | (values > dim.high)).sum())
    if outside:
        return (
            f"{outside} of {len(values)} predictions lie outside the MOS scale {scale} (they "
            f"range over [{low:.4g}, {high:.4g}]): another scale? Evaluated as given; raw PLCC "
            "and RMSE assume the native scale"
        )
    width = dim.high - dim.low
    if width >= 4 and dim.low <= 0 and high <= 1 and high - low < 0.25 * width:
        return (
            f"every prediction lies in [0, 1] while the MOS scale is {scale}: normalised "
            "predictions? Correlations are unaffected, RMSE is not; predict on the native scale"
        )
    return None


# --- run folders -------------------------------------------------------------------------------


def write_runs(
    scores: pd.DataFrame,
    split_file: SplitFile,
    name: str,
    out_root: str | Path,
    sources: Sequence[Path],
    warnings: Sequence[str] = (),
) -> list[Path]:
    """One fold-job-shaped run folder per split under ``out_root/<protocol>/<dataset>/<name>``."""
    check_name(name)
    hashes = {str(p): file_sha256(p) for p in sources}
    external = {
        # A list, not a mapping: file paths would become (invalid) MLflow param keys.
        "predictions": [{"file": file, "sha256": sha} for file, sha in hashes.items()],
        "warnings": list(warnings),
        "evaluated_with": library_versions()["agiqa"],
    }
    provenance = {
        "commit": git_commit(),
        "split_sha256": split_file.sha256,
        "manifest_sha256": file_sha256(split_file.manifest_path),
        EXTERNAL_KEY: external,
    }
    config = {
        "dataset": {"name": split_file.dataset, "manifest": str(split_file.manifest_path)},
        "protocol": {
            "name": split_file.protocol,
            **split_file.protocol_settings,
            "splits": str(split_file.path),
        },
        "model": {"name": name, EXTERNAL_KEY: True, "predictions": list(hashes)},
        "provenance": provenance,
    }
    record = {
        "dataset": split_file.dataset,
        "model": name,
        "protocol": split_file.protocol,
        "protocol_settings": split_file.protocol_settings,
        "selection": "external",
        "config_hash": _short_hash({"name": name, "predictions": sorted(hashes.values())}),
        "provenance": provenance,
        "logistic": RECORD_LOGISTIC,
    }
    model_dir = Path(out_root) / split_file.protocol / split_file.dataset / name
    written = []
    for k in range(split_file.n_splits):
        run_dir = model_dir / f"split{k}"
        run_dir.mkdir(parents=True, exist_ok=True)
        test, empty = split_tables(scores, split_file, k)
        test.to_csv(run_dir / "predictions.csv", index=False)
        empty.to_csv(run_dir / "val_predictions.csv", index=False)
        config["protocol"]["split"] = k
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        counts = split_file.role_of(k).value_counts()
        metrics = {
            **record,
            "split": k,
            **{f"n_{role}": int(counts.get(role, 0)) for role in ("train", "val", "test")},
            "test": _record_metrics(test),
            "val": {},
        }
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        written.append(run_dir)
    return written


def split_tables(
    scores: pd.DataFrame, split_file: SplitFile, k: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split ``k``'s test predictions beside the manifest's MOS, in the manifest's order (as a
    fold job writes them), and an empty validation table of the same columns."""
    manifest = split_file.manifest
    labelled = manifest.labelled()
    test = labelled[labelled["image"].map(split_file.role_of(k)) == "test"]
    mine = scores[scores["split"] == k].set_index("image")
    table = pd.DataFrame({"image": test["image"].to_numpy(), "split": k})
    empty = pd.DataFrame({"image": pd.Series(dtype=str), "split": pd.Series(dtype=int)})
    for column in (c for c in scores.columns if c.startswith(PRED_PREFIX)):
        dim = manifest.dimension(column.removeprefix(PRED_PREFIX))
        table[column] = mine.loc[table["image"], column].to_numpy(float)
        table[f"target_{dim.name}"] = test[dim.mos_column].to_numpy(float)
        empty[column] = empty[f"target_{dim.name}"] = pd.Series(dtype=float)
    return table, empty


def _record_metrics(table: pd.DataFrame) -> dict:
    """Each dimension's metrics, for the run's record (as a fold job's metrics.json has them)."""
    from agiqa.evaluate.metrics import compute_metrics

    found = {}
    for column in (c for c in table.columns if c.startswith(PRED_PREFIX)):
        dim = column.removeprefix(PRED_PREFIX)
        pred, target = table[column].to_numpy(float), table[f"target_{dim}"].to_numpy(float)
        found[dim] = compute_metrics(pred, target, RECORD_LOGISTIC)
    return found


def _short_hash(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:12]


def import_predictions(
    split_file: SplitFile, sources: Sequence[str | Path], name: str, out_root: str | Path
) -> tuple[list[Path], list[str]]:
    """Read, check and write one model's predictions on one split file; (run folders, warnings)."""
    check_name(name)
    files = [f for source in sources for f in prediction_files(source)]
    frame = read_predictions(files)
    scores = check_predictions(frame, split_file)
    warnings = scale_warnings(scores, split_file)
    for warning in warnings:
        log.warning("%s", warning)
    return write_runs(scores, split_file, name, out_root, files, warnings), warnings


def import_external_step(
    name: str,
    predictions: str,
    *,
    splits: str,
    manifest: str,
    dataset: str,
    protocol: str,
    settings: dict,
    out: str,
    log_file: str,
) -> None:
    """The workflow's import_external rule: one config `external:` file, checked, as run folders
    under ``out`` (``results/<experiment>/external/<protocol>/<dataset>/<name>``)."""
    from agiqa.steps import job_log

    with job_log(log_file):
        split_file = SplitFile.open(splits, dataset, protocol, settings, manifest)
        root = Path(out).parents[2]
        runs, _ = import_predictions(split_file, [Path(predictions)], name, root)
        expected = Path(out)
        if any(run.parent != expected for run in runs):
            raise RuntimeError(f"imported runs went to {runs[0].parent}, not to {out}")
        log.info("%s: %d splits of %s imported into %s", name, len(runs), predictions, out)


# --- agiqa evaluate ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Evaluation:
    """What ``evaluate`` wrote: the tables, the imported runs, the runs compared with."""

    tables: dict[str, Path]
    runs: list[Path]
    compared: list[Path]
    warnings: list[str]


def comparable_runs(
    experiment: str | Path, split_files: Sequence[SplitFile], name: str
) -> list[Path]:
    """Finished runs of an agiqa experiment folder trained on exactly these split files.

    A run belongs when the split file's sha256 it recorded is one of these files'; its protocol
    and dataset names and its manifest (the ground truth) must then agree. Runs on other split
    files (another seed, folds or dataset) are never compared.
    """
    root = Path(experiment)
    if not (root / "runs").is_dir():
        raise DataError(
            "no runs/ folder: not an agiqa experiment (results/<experiment>)", file=root
        )
    wanted = {s.sha256: s for s in split_files}
    found = []
    for metrics in sorted((root / "runs").glob("*/*/*/split*/metrics.json")):
        record = json.loads(metrics.read_text())
        sha = (record.get("provenance") or {}).get("split_sha256")
        if sha not in wanted:
            continue
        split_file = wanted[sha]
        if (record["protocol"], record["dataset"]) != (split_file.protocol, split_file.dataset):
            raise DataError(
                f"trained on split file {split_file.path} but names it protocol "
                f"{record['protocol']}, dataset {record['dataset']} (its description says "
                f"{split_file.protocol}, {split_file.dataset})",
                file=metrics,
            )
        manifest_sha = file_sha256(split_file.manifest_path)
        if record["provenance"].get("manifest_sha256") != manifest_sha:
            raise DataError(
                f"trained on split file {split_file.path} but with another manifest (ground "
                f"truth) than {split_file.manifest_path}: the targets would differ",
                file=metrics,
            )
        if record["model"] == name:
            raise ConfigError(
                f"--name {name} is a model of {root} already: choose another name for the "
                "external model"
            )
        found.append((record["model"], metrics.parent))
    if not found:
        shas = ", ".join(s.sha256[:12] for s in split_files)
        raise DataError(
            f"no finished run was trained on these split files (sha256 {shas}); compare with the "
            "experiment the split files came from",
            file=root,
        )
    order = _model_order(root)
    found.sort(key=lambda item: (order.get(item[0], len(order)), str(item[1])))
    return [path for _, path in found]


def _model_order(experiment: Path) -> dict[str, int]:
    """The experiment's models in its tables' order (its config's), from ``tables/paper.json``."""
    info = experiment / "tables" / "paper.json"
    models = json.loads(info.read_text()).get("models", {}) if info.is_file() else {}
    return {model: index for index, model in enumerate(models)}


def report_settings_of(experiment: str | Path | None, config: Mapping | None):
    """The report settings: a config's ``report`` section, else those the compared experiment's
    tables were made with (``tables/paper.json``), else the defaults."""
    from agiqa.report.results import ReportSettings

    if config is not None:
        return ReportSettings.from_config(config.get("report"))
    info = Path(experiment) / "tables" / "paper.json" if experiment is not None else None
    if info is not None and info.is_file():
        settings = json.loads(info.read_text()).get("settings") or {}
        return ReportSettings.from_config(settings)
    return ReportSettings()


def evaluate(
    pairs: Sequence[tuple[SplitFile, Sequence[Path]]],
    name: str,
    out: str | Path,
    *,
    compare: str | Path | None = None,
    config: Mapping | None = None,
) -> Evaluation:
    """Check and import one model's predictions on each split file, then write agiqa's tables
    (``main``, ``significance``, and ``protocols`` with several protocols) under ``out/tables``.

    With ``compare`` (an experiment folder, ``results/<experiment>``), the experiment's runs on
    the same split files are rows of the same tables, compared with the same tests.
    """
    from agiqa.report.aggregate import results_of
    from agiqa.report.results import load_runs
    from agiqa.report.tables import render_all

    check_name(name)
    out = Path(out)
    settings = report_settings_of(compare, config)
    split_files = [split_file for split_file, _ in pairs]
    seen = [(s.protocol, s.dataset) for s in split_files]
    if len(set(seen)) < len(seen):
        raise ConfigError(f"two split files for the same protocol and dataset: {seen}")
    compared = comparable_runs(compare, split_files, name) if compare is not None else []
    imported, warnings = [], []
    for split_file, sources in pairs:
        runs, found = import_predictions(split_file, sources, name, out / "runs")
        imported += runs
        warnings += found
    results = results_of(load_runs([*compared, *imported]), settings)
    tables = render_all(
        results.summary,
        results.comparisons,
        results.marks,
        results.sensitivity,
        out / "tables",
        settings,
        results.types,
        results.contrasts,
    )
    record = {
        "name": name,
        "split_files": [
            {
                "path": str(s.path),
                "sha256": s.sha256,
                "protocol": s.protocol,
                "dataset": s.dataset,
                "manifest": str(s.manifest_path),
            }
            for s in split_files
        ],
        "predictions": {str(p): file_sha256(p) for _, sources in pairs for p in _files(sources)},
        "compared_with": str(compare) if compare is not None else None,
        "compared_runs": len(compared),
        "warnings": warnings,
        "settings": {k: v for k, v in asdict(settings).items() if k != "display_names"},
        "commit": git_commit(),
    }
    tables["evaluation.json"] = out / "evaluation.json"
    tables["evaluation.json"].write_text(json.dumps(record, indent=2, default=list) + "\n")
    return Evaluation(tables, imported, compared, warnings)


def _files(sources: Sequence[str | Path]) -> list[Path]:
    return [f for source in sources for f in prediction_files(source)]


def pair_inputs(
    splits: Sequence[Path], predictions: Sequence[Path], manifests: Sequence[Path] = ()
) -> list[tuple[SplitFile, list[Path]]]:
    """``--splits`` and ``--predictions`` as the command gives them: one split file takes every
    predictions source; several are paired in order. ``manifests`` replace the ground truth the
    split files' descriptions name, matched by dataset."""
    if not splits or not predictions:
        raise ConfigError("give --splits and --predictions")
    if len(splits) > 1 and len(predictions) != len(splits):
        raise ConfigError(
            f"{len(splits)} --splits but {len(predictions)} --predictions: with several split "
            "files, give one predictions file (or model folder) per split file, in the same order"
        )
    by_dataset = {_manifest_dataset(m): m for m in manifests}
    pairs = []
    for index, path in enumerate(splits):
        split_file = _load_split_file(path, by_dataset)
        sources = list(predictions) if len(splits) == 1 else [predictions[index]]
        pairs.append((split_file, sources))
    return pairs


def _load_split_file(path: Path, manifests: Mapping[str, Path]) -> SplitFile:
    return SplitFile.load(path, manifests.get(str(read_info(path)["dataset"])))


def _manifest_dataset(path: Path) -> str:
    described = Path(path).with_suffix(".json")
    if not described.is_file():
        raise DataError(
            f"no {described.name} beside the manifest (agiqa's manifest has one)", file=path
        )
    return str(json.loads(described.read_text())["dataset"])


def summary_line(evaluation: Evaluation) -> str:
    count = len(evaluation.tables)
    compared = (
        f", compared with {len(evaluation.compared)} agiqa runs" if evaluation.compared else ""
    )
    return f"{len(evaluation.runs)} splits evaluated{compared}; {count} files written"


__all__ = [
    "Evaluation",
    "check_predictions",
    "comparable_runs",
    "evaluate",
    "import_predictions",
    "pair_inputs",
    "read_predictions",
    "scale_warnings",
    "write_runs",
]
