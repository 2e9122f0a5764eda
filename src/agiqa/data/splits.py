"""The evaluation protocol as data: one file per dataset assigns every image a role per split.

The split file is a CSV with columns ``image``, ``prompt_group`` and one column ``split<k>`` per
split, each cell ``train``, ``val`` or ``test``. A fold job reads its column and nothing else, so
the test part is fixed before any model sees the data and model selection only ever uses ``val``.

Protocols:

- ``kfold_grouped`` (default): K folds over prompt groups (no prompt on both sides of a split);
  split k tests on fold k, and a validation part, also grouped by prompt, is carved from the
  remaining folds for early stopping and best-epoch selection.
- ``random_split``: the literature's image-level random train/test split (e.g. 80/20) repeated
  N times with different seeds; prompts are shared across sides, as in most published numbers.
  Validation is still carved from the training part (image-level), never from test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from agiqa.errors import ConfigError, DataError
from agiqa.registry import Registry

ROLES = ("train", "val", "test")


@dataclass(frozen=True)
class Protocol:
    """Settings of one evaluation protocol (see the module docstring)."""

    type: str = "kfold_grouped"
    folds: int = 5
    repeats: int = 10
    test_fraction: float = 0.2
    val_fraction: float = 0.1
    seed: int = 0

    @property
    def n_splits(self) -> int:
        return self.folds if self.type == "kfold_grouped" else self.repeats

    @classmethod
    def from_config(cls, config: dict) -> Protocol:
        known = set(cls.__dataclass_fields__)
        unknown = set(config) - known
        if unknown:
            raise ConfigError(f"unknown protocol settings {sorted(unknown)}")
        protocol = cls(**config)
        PROTOCOLS.get(protocol.type)
        if protocol.type == "kfold_grouped" and protocol.folds < 2:
            raise ConfigError("kfold_grouped needs at least 2 folds")
        if not 0 < protocol.val_fraction < 1 or not 0 < protocol.test_fraction < 1:
            raise ConfigError("val_fraction and test_fraction must lie in (0, 1)")
        return protocol


SplitFn = Callable[[pd.DataFrame, Protocol], pd.DataFrame]
PROTOCOLS: Registry[SplitFn] = Registry("protocol")


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


def _carve_validation(
    pool: pd.Index, groups: pd.Series | None, fraction: float, rng: np.random.Generator
) -> pd.Index:
    """Pick about ``fraction`` of the training pool for validation, whole groups if given."""
    if groups is None:
        n_val = max(1, round(fraction * len(pool)))
        return pool[rng.permutation(len(pool))[:n_val]]
    pool_groups = groups.loc[pool]
    unique = pool_groups.unique()
    target = fraction * len(pool)
    chosen: list[str] = []
    count = 0
    for group in unique[rng.permutation(len(unique))]:
        if count >= target:
            break
        chosen.append(group)
        count += int((pool_groups == group).sum())
    return pool_groups.index[pool_groups.isin(chosen)]


@PROTOCOLS.register("kfold_grouped")
def kfold_grouped(frame: pd.DataFrame, protocol: Protocol) -> pd.DataFrame:
    groups = frame["prompt_group"].astype(str)
    if groups.nunique() < protocol.folds:
        raise DataError(
            f"{groups.nunique()} prompt groups cannot fill {protocol.folds} folds",
        )
    rng = np.random.default_rng(protocol.seed)
    fold = _group_fold_assignment(groups, protocol.folds, rng)
    out = frame[["image", "prompt_group"]].copy()
    for k in range(protocol.folds):
        roles = pd.Series("train", index=frame.index)
        roles[fold == k] = "test"
        pool = roles.index[roles == "train"]
        roles[_carve_validation(pool, groups, protocol.val_fraction, rng)] = "val"
        out[split_column(k)] = roles
    return out


@PROTOCOLS.register("random_split")
def random_split(frame: pd.DataFrame, protocol: Protocol) -> pd.DataFrame:
    out = frame[["image", "prompt_group"]].copy()
    n_test = round(protocol.test_fraction * len(frame))
    for r in range(protocol.repeats):
        rng = np.random.default_rng([protocol.seed, r])
        roles = pd.Series("train", index=frame.index)
        roles.iloc[rng.permutation(len(frame))[:n_test]] = "test"
        pool = roles.index[roles == "train"]
        roles[_carve_validation(pool, None, protocol.val_fraction, rng)] = "val"
        out[split_column(r)] = roles
    return out


def make_splits(labelled: pd.DataFrame, protocol: Protocol) -> pd.DataFrame:
    """Split the labelled rows of a manifest according to ``protocol``."""
    if labelled.empty:
        raise DataError("the manifest has no labelled rows to split")
    frame = labelled.reset_index(drop=True)
    return PROTOCOLS.get(protocol.type)(frame, protocol)


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
