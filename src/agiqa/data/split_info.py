"""Split files as a public format: the description beside each file, and their export.

A split file (``splits/<protocol>/<dataset>.csv``, agiqa.data.splits) is the protocol as data.
Beside it, ``<dataset>.json`` says what the file is, so anyone can evaluate a model on it without
agiqa's config (``agiqa evaluate``, agiqa.evaluate.external):

- ``format``: ``agiqa-splits/1``;
- ``dataset``, ``protocol`` (the config's names) and ``protocol_settings`` (type, folds,
  repeats, val_fraction, seed);
- ``sha256``: the split file's content hash, the one every run records and every table cites;
- ``manifest`` (the ground truth: the manifest CSV, relative to this JSON's folder) and
  ``manifest_sha256``; ``dimensions``: name, kind and native scale of each rated dimension;
- ``n_images`` and, per split, its repeat, fold and the number of train, val and test images.

``export_splits`` writes the manifests, split files and descriptions of every dataset and
protocol of a config without training anything (``agiqa splits``); its split files are
byte-identical to the workflow's.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from agiqa.data.manifest import Manifest
from agiqa.data.splits import ROLES, Protocol, make_splits, split_column, write_splits
from agiqa.errors import ConfigError, DataError
from agiqa.provenance import file_sha256

log = logging.getLogger(__name__)

FORMAT = "agiqa-splits/1"


def info_path(split_path: str | Path) -> Path:
    """Where a split file's description lives: ``<dataset>.json`` beside ``<dataset>.csv``."""
    return Path(split_path).with_suffix(".json")


def describe_split_file(
    split_path: str | Path, manifest_path: str | Path, dataset: str, protocol: str, settings: dict
) -> dict:
    """The description of a split file (see the module docstring)."""
    split_path, manifest_path = Path(split_path), Path(manifest_path)
    spec = Protocol.from_config(settings)
    roles = read_roles(split_path, spec.n_splits)
    manifest = Manifest.load(manifest_path)
    splits = []
    for k in range(spec.n_splits):
        counts = roles[split_column(k)].value_counts()
        splits.append(
            {
                "split": k,
                "repeat": k // spec.folds,
                "fold": k % spec.folds,
                **{role: int(counts.get(role, 0)) for role in ROLES},
            }
        )
    return {
        "format": FORMAT,
        "dataset": dataset,
        "protocol": protocol,
        "protocol_settings": spec.settings(),
        "split_file": split_path.name,
        "sha256": file_sha256(split_path),
        "manifest": os.path.relpath(manifest_path, split_path.parent),
        "manifest_sha256": file_sha256(manifest_path),
        "dimensions": [
            {"name": d.name, "kind": d.kind, "low": d.low, "high": d.high}
            for d in manifest.dimensions
        ],
        "n_images": len(roles),
        "splits": splits,
    }


def write_split_info(
    split_path: str | Path, manifest_path: str | Path, dataset: str, protocol: str, settings: dict
) -> Path:
    """Write the description beside the split file; returns its path."""
    info = describe_split_file(split_path, manifest_path, dataset, protocol, settings)
    path = info_path(split_path)
    path.write_text(json.dumps(info, indent=2) + "\n")
    return path


def read_roles(path: str | Path, n_splits: int | None = None) -> pd.DataFrame:
    """The split file as strings, checked: ``image``, ``prompt_group``, ``split0``... with roles
    ``train``/``val``/``test`` and each image once. ``n_splits`` checks the split count."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise DataError("split file not found", file=path) from None
    missing = [c for c in ("image", "prompt_group", split_column(0)) if c not in frame.columns]
    if missing:
        raise DataError(f"not a split file: no column(s) {missing}", file=path)
    columns = [c for c in frame.columns if c.startswith("split")]
    if columns != [split_column(k) for k in range(len(columns))]:
        raise DataError(
            f"split columns must be split0, split1, ... in order, got {columns}", file=path
        )
    if n_splits is not None and len(columns) != n_splits:
        raise DataError(f"{len(columns)} split columns, but the protocol has {n_splits}", file=path)
    for column in columns:
        bad = ~frame[column].isin(ROLES)
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0]) + 2
            raise DataError(
                f"{column}: role '{frame[column][bad].iloc[0]}' is not one of {ROLES}",
                file=path,
                row=row,
            )
    duplicated = frame["image"].duplicated()
    if duplicated.any():
        row = int(duplicated.to_numpy().nonzero()[0][0]) + 2
        raise DataError(
            f"image '{frame['image'][duplicated].iloc[0]}' appears twice", file=path, row=row
        )
    return frame


def read_info(split_path: str | Path) -> dict:
    """The description beside a split file; a DataError says how to get one when it is missing."""
    described = info_path(split_path)
    if not described.is_file():
        raise DataError(
            f"no description {described.name} beside the split file: it says which protocol "
            "and dataset the file is and where the ground truth is. Export split files with "
            "`agiqa splits --configfile CONFIG --out DIR` (or `snakemake splits`)",
            file=split_path,
        )
    info = json.loads(described.read_text())
    if info.get("format") != FORMAT:
        raise DataError(f"format is {info.get('format')!r}, expected {FORMAT!r}", file=described)
    return info


@dataclass(frozen=True)
class SplitFile:
    """A split file with what evaluating on it needs: its protocol, dataset and ground truth."""

    path: Path
    roles: pd.DataFrame
    sha256: str
    dataset: str
    protocol: str
    protocol_settings: dict
    manifest: Manifest
    manifest_path: Path

    @property
    def spec(self) -> Protocol:
        return Protocol.from_config(self.protocol_settings)

    @property
    def n_splits(self) -> int:
        return self.spec.n_splits

    def role_of(self, split: int) -> pd.Series:
        """image -> role in ``split``."""
        return pd.Series(self.roles[split_column(split)].to_numpy(), index=self.roles["image"])

    @classmethod
    def open(
        cls,
        path: str | Path,
        dataset: str,
        protocol: str,
        settings: Mapping,
        manifest_path: str | Path,
    ) -> SplitFile:
        """A split file whose protocol and manifest are known (the workflow's case)."""
        spec = Protocol.from_config(dict(settings))
        path, manifest_path = Path(path), Path(manifest_path)
        roles = read_roles(path, spec.n_splits)
        try:
            manifest = Manifest.load(manifest_path)
        except FileNotFoundError as error:
            raise DataError(f"manifest not found ({error.filename})", file=manifest_path) from None
        _check_against_manifest(roles, manifest, path)
        return cls(
            path,
            roles,
            file_sha256(path),
            dataset,
            protocol,
            spec.settings(),
            manifest,
            manifest_path,
        )

    @classmethod
    def load(cls, path: str | Path, manifest_path: str | Path | None = None) -> SplitFile:
        """A split file and its description (``<dataset>.json`` beside it).

        ``manifest_path`` replaces the manifest the description names (same content required).
        """
        path = Path(path)
        info, described = read_info(path), info_path(path)
        actual = file_sha256(path)
        if actual != info["sha256"]:
            raise DataError(
                f"the split file's sha256 is {actual[:12]}…, its description says "
                f"{info['sha256'][:12]}…: the file was changed after it was written; export it "
                "again instead of editing it",
                file=path,
            )
        manifest_path = Path(manifest_path or path.parent / info["manifest"])
        if not manifest_path.is_file():
            raise DataError(
                f"the manifest (ground truth) {manifest_path} is not there: pass --manifest",
                file=described,
            )
        found = file_sha256(manifest_path)
        if found != info["manifest_sha256"]:
            raise DataError(
                f"manifest {manifest_path} has sha256 {found[:12]}…, the split file was made "
                f"from {info['manifest_sha256'][:12]}…: another version of the dataset?",
                file=described,
            )
        return cls.open(
            path, info["dataset"], info["protocol"], info["protocol_settings"], manifest_path
        )


def _check_against_manifest(roles: pd.DataFrame, manifest: Manifest, path: Path) -> None:
    labelled = set(manifest.labelled()["image"])
    unknown = [image for image in roles["image"] if image not in labelled]
    missing = labelled - set(roles["image"])
    if unknown or missing:
        example = unknown[0] if unknown else sorted(missing)[0]
        raise DataError(
            f"does not match the manifest {manifest.source} ({len(unknown)} images it does not "
            f"label, {len(missing)} labelled images missing, e.g. '{example}')",
            file=path,
        )


# --- export ----------------------------------------------------------------------------------


#: The workflow's config schema (present in a source checkout, which the workflow needs anyway).
SCHEMA = Path(__file__).resolve().parents[3] / "workflow" / "schemas" / "config.schema.yaml"


def validated_config(config: dict) -> dict:
    """The config as the workflow sees it: checked against its schema (which fills in the
    defaults) and by agiqa.config_checks, so split files come out as the workflow's would."""
    from agiqa.config_checks import check_config

    if SCHEMA.is_file():
        from snakemake.exceptions import WorkflowError
        from snakemake.utils import validate

        try:
            validate(config, str(SCHEMA))
        except WorkflowError as error:
            raise ConfigError(f"the config does not match {SCHEMA.name}: {error}") from None
    check_config(config)
    return config


def export_splits(config: dict, out: str | Path) -> list[Path]:
    """Manifests, split files and their descriptions of every dataset and protocol of ``config``,
    under ``out`` in the workflow's layout (``manifests/``, ``splits/<protocol>/``).

    Nothing is trained and no image is decoded: only the datasets' metadata is read (a synthetic
    dataset is rendered under ``out/datasets`` when the workflow has not rendered it yet).
    """
    from agiqa.data.readers import read_dataset
    from agiqa.pipeline import dataset_root, layout_of, protocol_of, reader_options

    out = Path(out)
    layout = layout_of(config)
    written = []
    for dataset, entry in config["datasets"].items():
        root = Path(dataset_root(config, dataset, layout))
        if "synthesize" in entry and not (root / "data.csv").is_file():
            root = _render_synthetic(out / "datasets" / dataset, entry["synthesize"])
        elif not root.exists():
            raise ConfigError(
                f"datasets.{dataset}: root {root} does not exist; install the dataset first "
                f"(agiqa datasets download {dataset} --root {root})"
            )
        manifest = read_dataset(
            entry["reader"], root, dataset=dataset, **reader_options(config, dataset)
        )
        manifest_path = out / "manifests" / f"{dataset}.csv"
        manifest.save(manifest_path)
        written.append(manifest_path)
        for protocol in config["protocols"]:
            settings = protocol_of(config, protocol).settings()
            split_path = out / "splits" / protocol / f"{dataset}.csv"
            write_splits(
                make_splits(manifest.labelled(), Protocol.from_config(settings)), split_path
            )
            info = write_split_info(split_path, manifest_path, dataset, protocol, settings)
            written += [split_path, info]
            log.info("wrote %s (sha256 %s)", split_path, file_sha256(split_path))
    return written


def _render_synthetic(root: Path, options: dict) -> Path:
    from agiqa.data.synthetic import generate

    if not (root / "data.csv").is_file():
        generate(root, **options)
    return root


def split_info_step(
    splits: str, manifest: str, *, dataset: str, protocol: str, settings: dict, log_file: str
) -> None:
    """The workflow's split_info rule: describe one split file."""
    from agiqa.steps import job_log

    with job_log(log_file):
        path = write_split_info(splits, manifest, dataset, protocol, settings)
        log.info("wrote %s (split file sha256 %s)", path, file_sha256(splits))
