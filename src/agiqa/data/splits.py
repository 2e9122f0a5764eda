"""The evaluation protocol as data: one file per dataset assigns every image a role per split.

The split file is a CSV with columns ``image``, ``prompt_group`` and one column ``split<k>`` per
split, each cell ``train``, ``val`` or ``test``. A fold job reads its column and nothing else, so
the test part is fixed before any model sees the data.

Every protocol is a repeated K-fold: ``repeats`` times, the images are partitioned into ``folds``
test folds (a fresh seeded partition per repeat), and split ``r * folds + k`` tests on fold ``k``
of repeat ``r``. So within a repeat every image is tested exactly once, test sets never overlap,
and two protocols' predictions can be paired image by image. The literature's "random 80/20
split repeated N times" is built as K-fold with K = 5 (each split is still 80/20); unlike N
independent draws, its repeats cannot share test images within a repeat.

The protocols vary three factors, so that each can be measured alone: the split unit, the part
the best epoch is selected on, and whether a validation part is carved out of the training folds
(which decides the size of the training set):

=====================================  ======  =========  ====================================
protocol                               unit    selection  training set
=====================================  ======  =========  ====================================
``kfold_grouped``                      prompt  val        training folds minus validation
``image_split``                        image   val        training folds minus validation
``grouped_test_selection_same_train``  prompt  test       kfold_grouped's (validation unused)
``image_test_selection_same_train``    image   test       image_split's (validation unused)
``grouped_test_selection``             prompt  test       all training folds (CLIP-AGIQA)
``literature_replica``                 image   test       all training folds (seed code 80/20)
=====================================  ======  =========  ====================================

``kfold_grouped`` is the default.

A ``*_same_train`` protocol draws exactly the split file of its honest twin (same seed, folds and
``val_fraction``: the same train, val and test parts), so its difference from the twin is the
selection alone; its difference from the protocol that trains on all training folds is the
training-set size alone. Test-selection protocols exist only to measure how much selecting on test
inflates the numbers; they are labelled as such in every table, and select the epoch with the
model's seed-code rule (agiqa.train.selection). ``random_split`` is a deprecated alias of
``image_split``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from agiqa.errors import ConfigError, DataError
from agiqa.registry import Registry

_logger = logging.getLogger(__name__)

ROLES = ("train", "val", "test")
DEPRECATED_TYPES = {"random_split": "image_split"}


@dataclass(frozen=True)
class ProtocolKind:
    """What distinguishes the registered protocols."""

    #: ``prompt``: whole prompt groups stay on one side of a split; ``image``: images are split.
    unit: str
    #: The part the best epoch is selected on: ``val`` (carved from training) or ``test``.
    selection: str
    #: One line for table captions.
    description: str
    #: Whether a validation part is carved out of the training folds (always when selecting on
    #: it; also in the ``*_same_train`` cells, so that their training sets equal their twins').
    carves_validation: bool = True

    @property
    def training_set(self) -> str:
        """The training-set factor: ``carved`` (folds minus validation) or ``full`` (all folds)."""
        return "carved" if self.carves_validation else "full"


#: The factors a protocol is made of (ProtocolKind attributes), in the order tables name them.
FACTORS = {"unit": "split unit", "selection": "selection", "training_set": "training-set size"}

PROTOCOLS: Registry[ProtocolKind] = Registry("protocol")
for _name, _kind in {
    "kfold_grouped": ProtocolKind(
        "prompt", "val", "prompt-grouped K-fold, selection on a validation part"
    ),
    "image_split": ProtocolKind("image", "val", "image-level K-fold, selection on validation"),
    "grouped_test_selection_same_train": ProtocolKind(
        "prompt",
        "test",
        "prompt-grouped K-fold, kfold_grouped's training sets (validation carved, unused), "
        "epoch selected on the TEST fold (inflated)",
    ),
    "image_test_selection_same_train": ProtocolKind(
        "image",
        "test",
        "image-level K-fold, image_split's training sets (validation carved, unused), "
        "epoch selected on the TEST fold (inflated)",
    ),
    "grouped_test_selection": ProtocolKind(
        "prompt",
        "test",
        "prompt-grouped K-fold, no validation part, epoch selected on the TEST fold (inflated)",
        carves_validation=False,
    ),
    "literature_replica": ProtocolKind(
        "image",
        "test",
        "image-level 80/20 as in the seed code, no validation part, epoch selected on the TEST "
        "fold by the model's seed-code rule (inflated)",
        carves_validation=False,
    ),
}.items():
    PROTOCOLS.register(_name)(_kind)


@dataclass(frozen=True)
class Protocol:
    """Settings of one evaluation protocol (see the module docstring)."""

    type: str = "kfold_grouped"
    folds: int = 5
    repeats: int = 1
    val_fraction: float = 0.1
    seed: int = 0

    @property
    def kind(self) -> ProtocolKind:
        return PROTOCOLS.get(self.type)

    @property
    def n_splits(self) -> int:
        return self.folds * self.repeats

    @property
    def selection(self) -> str:
        return self.kind.selection

    @property
    def test_train_ratio(self) -> float:
        """n_test / n_train of a split, for Nadeau and Bengio's variance correction."""
        test = 1 / self.folds
        train = 1 - test
        if self.kind.carves_validation:
            train *= 1 - self.val_fraction
        return test / train

    def settings(self) -> dict:
        """The resolved settings, as recorded with every run."""
        return asdict(self)

    @classmethod
    def from_config(cls, config: dict) -> Protocol:
        config = _translate_deprecated(dict(config))
        known = set(cls.__dataclass_fields__)
        unknown = set(config) - known
        if unknown:
            raise ConfigError(f"unknown protocol settings {sorted(unknown)}")
        protocol = cls(**config)
        protocol.kind  # noqa: B018 - raises a ConfigError naming the known protocols
        if protocol.folds < 2 or protocol.repeats < 1:
            raise ConfigError("a protocol needs at least 2 folds and 1 repeat")
        if not 0 < protocol.val_fraction < 1:
            raise ConfigError("val_fraction must lie in (0, 1)")
        return protocol


def _translate_deprecated(config: dict) -> dict:
    """``random_split`` (repeats of a test_fraction split) -> ``image_split`` (repeated K-fold)."""
    old = config.get("type")
    if old not in DEPRECATED_TYPES:
        if "test_fraction" in config:
            raise ConfigError(
                "test_fraction is gone: every protocol is a (repeated) K-fold, "
                "test fraction = 1/folds"
            )
        return config
    fraction = float(config.pop("test_fraction", 0.2))
    folds = max(2, round(1 / fraction))
    repeats = max(1, math.ceil(int(config.get("repeats", 10)) / folds))
    new = DEPRECATED_TYPES[old]
    _logger.warning(
        "protocol type %s is deprecated: using %s with folds=%d and repeats=%d (%d splits of "
        "test fraction %.2f); write `type: %s` to silence this",
        old,
        new,
        folds,
        repeats,
        folds * repeats,
        1 / folds,
        new,
    )
    return {**config, "type": new, "folds": folds, "repeats": repeats}


#: The fewest images a validation part gets when its pool has more (metrics.MIN_SAMPLES): with
#: fewer, the epoch selection's correlation cannot be computed and the fold job stopped.
MIN_VAL_IMAGES = 3


def split_column(k: int) -> str:
    return f"split{k}"


def _group_fold_assignment(groups: pd.Series, folds: int, rng: np.random.Generator) -> pd.Series:
    """Assign whole groups to folds, balancing image counts (largest groups first)."""
    sizes = groups.value_counts()
    # Shuffle before the stable sort so equal-sized groups land in random folds.
    order = sizes.index.to_numpy()[rng.permutation(len(sizes))]
    sizes = sizes.loc[order].sort_values(ascending=False, kind="stable")
    load = np.zeros(folds, dtype=int)
    fold_of_group: dict[str, int] = {}
    for group, size in sizes.items():
        # Ties between equally loaded folds are broken at random, not always towards fold 0.
        candidates = np.flatnonzero(load == load.min())
        fold = int(rng.choice(candidates))
        fold_of_group[str(group)] = fold
        load[fold] += int(size)
    return groups.map(fold_of_group)


def _image_fold_assignment(n_images: int, folds: int, rng: np.random.Generator) -> np.ndarray:
    """Assign images to folds of equal size (differing by at most one) in random order."""
    fold = np.empty(n_images, dtype=int)
    fold[rng.permutation(n_images)] = np.arange(n_images) % folds
    return fold


def _carve_validation(
    pool: pd.Index, groups: pd.Series | None, fraction: float, rng: np.random.Generator
) -> pd.Index:
    """Pick about ``fraction`` of the training pool for validation, whole groups if given.

    At least ``MIN_VAL_IMAGES`` when the pool has more (a smaller part has no selection score:
    metrics need that many samples), and never the whole pool.
    """
    if groups is None:
        wanted = max(MIN_VAL_IMAGES, round(fraction * len(pool)))
        n_val = max(1, min(wanted, len(pool) - 1))
        return pool[rng.permutation(len(pool))[:n_val]]
    pool_groups = groups.loc[pool]
    unique = pool_groups.unique()
    target = max(fraction * len(pool), MIN_VAL_IMAGES)
    chosen: list[str] = []
    count = 0
    for group in unique[rng.permutation(len(unique))]:
        if count >= target or (chosen and len(chosen) == len(unique) - 1):
            break
        chosen.append(group)
        count += int((pool_groups == group).sum())
    return pool_groups.index[pool_groups.isin(chosen)]


def make_splits(labelled: pd.DataFrame, protocol: Protocol) -> pd.DataFrame:
    """Split the labelled rows of a manifest according to ``protocol``."""
    if labelled.empty:
        raise DataError("the manifest has no labelled rows to split")
    frame = labelled.reset_index(drop=True)
    groups = frame["prompt_group"].astype(str)
    grouped = protocol.kind.unit == "prompt"
    units = groups.nunique() if grouped else len(frame)
    if units < protocol.folds:
        what = "prompt groups" if grouped else "images"
        raise DataError(f"{units} {what} cannot fill {protocol.folds} folds")
    out = frame[["image", "prompt_group"]].copy()
    for repeat in range(protocol.repeats):
        rng = np.random.default_rng([protocol.seed, repeat])
        if grouped:
            fold = _group_fold_assignment(groups, protocol.folds, rng).to_numpy()
        else:
            fold = _image_fold_assignment(len(frame), protocol.folds, rng)
        for k in range(protocol.folds):
            roles = pd.Series("train", index=frame.index)
            roles[fold == k] = "test"
            if protocol.kind.carves_validation:
                pool = roles.index[roles == "train"]
                chosen = _carve_validation(
                    pool, groups if grouped else None, protocol.val_fraction, rng
                )
                roles[chosen] = "val"
            out[split_column(repeat * protocol.folds + k)] = roles
    return out


def train_val_split(labelled: pd.DataFrame, val_fraction: float, seed: int) -> pd.DataFrame:
    """One split (``split0``) of the whole labelled set into ``train`` and ``val``, no ``test``.

    For training on one dataset and testing on another (agiqa.cross_dataset): about
    ``val_fraction`` of the images, in whole prompt groups, select the epoch; the rest trains.
    The same rows, fraction and seed give the same file.
    """
    if labelled.empty:
        raise DataError("the manifest has no labelled rows to split")
    if not 0 < val_fraction < 1:
        raise ConfigError("val_fraction must lie in (0, 1)")
    frame = labelled.reset_index(drop=True)
    groups = frame["prompt_group"].astype(str)
    if groups.nunique() < 2:
        raise DataError("a train/val split needs at least 2 prompt groups")
    rng = np.random.default_rng(seed)
    roles = pd.Series("train", index=frame.index)
    roles[_carve_validation(frame.index, groups, val_fraction, rng)] = "val"
    if not (roles == "train").any():
        raise DataError(f"val_fraction {val_fraction} leaves no prompt group to train on")
    out = frame[["image", "prompt_group"]].copy()
    out[split_column(0)] = roles
    return out


def write_splits(splits: pd.DataFrame, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    splits.to_csv(path, index=False)


def read_split(path: str | Path, k: int) -> pd.Series:
    """Return image -> role for split ``k``, checking the file is well formed."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    column = split_column(k)
    if column not in frame.columns:
        raise DataError(f"no column '{column}'", file=path)
    bad = ~frame[column].isin(ROLES)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0]) + 2
        raise DataError(
            f"role '{frame[column][bad].iloc[0]}' is not one of {ROLES}", file=path, row=row
        )
    return pd.Series(frame[column].to_numpy(), index=frame["image"], name=column)
