"""The protocol: grouped folds never cut a prompt group, are deterministic, never select on test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from agiqa.data.splits import (
    MIN_VAL_IMAGES,
    Protocol,
    make_splits,
    read_split,
    split_column,
    train_val_split,
    write_splits,
)
from agiqa.errors import ConfigError, DataError


def frame_with_groups(n_groups: int = 40, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 12, size=n_groups)  # uneven groups, as in AGIQA-1K and -3K
    groups = np.repeat([f"g{i}" for i in range(n_groups)], sizes)
    return pd.DataFrame(
        {"image": [f"img{i}.jpg" for i in range(len(groups))], "prompt_group": groups}
    )


def test_grouped_folds_keep_each_prompt_on_one_side() -> None:
    frame = frame_with_groups()
    splits = make_splits(frame, Protocol(type="kfold_grouped", folds=5, val_fraction=0.15))
    for k in range(5):
        roles = splits[split_column(k)]
        for role_a, role_b in [("train", "test"), ("val", "test"), ("train", "val")]:
            groups_a = set(splits.loc[roles == role_a, "prompt_group"])
            groups_b = set(splits.loc[roles == role_b, "prompt_group"])
            assert not groups_a & groups_b, (k, role_a, role_b)


def test_each_image_is_tested_exactly_once_and_folds_are_balanced() -> None:
    frame = frame_with_groups()
    splits = make_splits(frame, Protocol(type="kfold_grouped", folds=5))
    tested = (splits[[split_column(k) for k in range(5)]] == "test").sum(axis=1)
    assert (tested == 1).all()
    fold_sizes = [(splits[split_column(k)] == "test").sum() for k in range(5)]
    assert max(fold_sizes) - min(fold_sizes) <= 11  # at most one (largest) group apart


def test_validation_is_carved_from_training_folds() -> None:
    frame = frame_with_groups()
    splits = make_splits(frame, Protocol(type="kfold_grouped", folds=5, val_fraction=0.2))
    for k in range(5):
        roles = splits[split_column(k)]
        n_pool = (roles != "test").sum()
        assert (roles == "val").sum() >= 0.2 * n_pool
        assert (roles == "val").sum() <= 0.2 * n_pool + 11
        assert (roles == "train").sum() > 0


@pytest.mark.parametrize("kind", ["kfold_grouped", "image_split"])
def test_a_small_pool_still_gets_a_scorable_validation_part(kind: str) -> None:
    """12 images in 2-image groups, 2 folds (the paper rehearsal's amounts): 10% of a 6-image
    pool is one group, 2 images, on which no SRCC can select an epoch; the fold job stopped
    with "need at least 3 samples". The split now carves MIN_VAL_IMAGES and keeps training."""
    frame = pd.DataFrame(
        {
            "image": [f"i{n}.png" for n in range(12)],
            "prompt_group": [f"g{n // 2}" for n in range(12)],
        }
    )
    splits = make_splits(frame, Protocol(type=kind, folds=2, val_fraction=0.1))
    for k in range(2):
        roles = splits[split_column(k)]
        assert (roles == "val").sum() >= MIN_VAL_IMAGES
        assert (roles == "train").sum() > 0
    cross = train_val_split(frame, 0.1, seed=0)[split_column(0)]
    assert (cross == "val").sum() >= MIN_VAL_IMAGES and (cross == "train").sum() > 0
    # a pool of two one-image groups keeps one group for training
    tiny = frame.iloc[:2].assign(prompt_group=["a", "b"])
    assert (train_val_split(tiny, 0.1, seed=0)[split_column(0)] == "train").sum() == 1


@pytest.mark.parametrize(
    "kind",
    [
        "kfold_grouped",
        "image_split",
        "grouped_test_selection",
        "literature_replica",
        "grouped_test_selection_same_train",
        "image_test_selection_same_train",
    ],
)
def test_splits_are_deterministic_for_a_seed(kind: str) -> None:
    frame = frame_with_groups()
    first = make_splits(frame, Protocol(type=kind, folds=5, repeats=3, seed=7))
    second = make_splits(frame, Protocol(type=kind, folds=5, repeats=3, seed=7))
    other = make_splits(frame, Protocol(type=kind, folds=5, repeats=3, seed=8))
    pd.testing.assert_frame_equal(first, second)
    assert not first.equals(other)


def test_image_split_is_a_repeated_image_level_kfold() -> None:
    frame = frame_with_groups()
    splits = make_splits(frame, Protocol(type="image_split", folds=5, repeats=2))
    columns = [split_column(k) for k in range(10)]
    assert [c for c in splits.columns if c.startswith("split")] == columns
    for repeat in range(2):
        block = splits[columns[repeat * 5 : repeat * 5 + 5]]
        assert ((block == "test").sum(axis=1) == 1).all()  # each image tested once per repeat
        sizes = (block == "test").sum(axis=0)
        assert sizes.max() - sizes.min() <= 1
    # Image level: prompt groups land on both sides; repeats are different partitions.
    roles = splits[split_column(0)]
    groups = set(splits.loc[roles == "test", "prompt_group"])
    assert groups & set(splits.loc[roles == "train", "prompt_group"])
    assert not splits[split_column(0)].equals(splits[split_column(5)])


@pytest.mark.parametrize(
    ("kind", "grouped"), [("grouped_test_selection", True), ("literature_replica", False)]
)
def test_test_selection_protocols_have_no_validation_part(kind: str, grouped: bool) -> None:
    frame = frame_with_groups()
    protocol = Protocol.from_config({"type": kind, "folds": 5, "repeats": 2})
    assert protocol.selection == "test"
    splits = make_splits(frame, protocol)
    for k in range(protocol.n_splits):
        roles = splits[split_column(k)]
        assert set(roles) == {"train", "test"}
        crossing = set(splits.loc[roles == "test", "prompt_group"]) & set(
            splits.loc[roles == "train", "prompt_group"]
        )
        assert bool(crossing) is not grouped


@pytest.mark.parametrize(
    ("kind", "twin"),
    [
        ("grouped_test_selection_same_train", "kfold_grouped"),
        ("image_test_selection_same_train", "image_split"),
    ],
)
@pytest.mark.parametrize("seed", [0, 3])
def test_same_train_cells_draw_their_twins_split_file(kind: str, twin: str, seed: int) -> None:
    # The cell that separates selection from training-set size: the same train, val and test
    # parts as the honest twin, split by split; only the part the epoch is selected on differs.
    frame = frame_with_groups()
    settings = {"folds": 5, "repeats": 2, "val_fraction": 0.15, "seed": seed}
    cell = Protocol.from_config({"type": kind, **settings})
    honest = Protocol.from_config({"type": twin, **settings})
    pd.testing.assert_frame_equal(make_splits(frame, cell), make_splits(frame, honest))
    assert cell.selection == "test" and honest.selection == "val"
    assert cell.kind.unit == honest.kind.unit and cell.kind.training_set == "carved"
    assert cell.test_train_ratio == pytest.approx(honest.test_train_ratio)
    # Its no-validation sibling trains on the validation part too (more images, same test).
    full = make_splits(
        frame,
        Protocol(
            type="grouped_test_selection" if cell.kind.unit == "prompt" else "literature_replica",
            folds=5,
            repeats=2,
            seed=seed,
        ),
    )
    same = make_splits(frame, cell)
    for k in range(10):
        column = split_column(k)
        pd.testing.assert_series_equal(full[column] == "test", same[column] == "test")
        assert (full[column] == "train").sum() > (same[column] == "train").sum()


def test_random_split_is_a_deprecated_alias(caplog: pytest.LogCaptureFixture) -> None:
    protocol = Protocol.from_config({"type": "random_split", "repeats": 10, "test_fraction": 0.2})
    assert protocol == Protocol(type="image_split", folds=5, repeats=2)
    assert "deprecated" in caplog.text
    with pytest.raises(ConfigError, match="test_fraction is gone"):
        Protocol.from_config({"type": "image_split", "test_fraction": 0.2})


def test_nadeau_bengio_ratio() -> None:
    assert Protocol(folds=5, val_fraction=0.1).test_train_ratio == pytest.approx(0.2 / 0.72)
    replica = Protocol(type="literature_replica", folds=5)
    assert replica.test_train_ratio == pytest.approx(0.25)
    # Validation carved but unused: the honest protocol's training set, so its ratio.
    same_train = Protocol(type="grouped_test_selection_same_train", folds=5, val_fraction=0.1)
    assert same_train.test_train_ratio == pytest.approx(0.2 / 0.72)


def test_split_file_round_trip_and_bad_role(tmp_path) -> None:
    frame = frame_with_groups(10)
    splits = make_splits(frame, Protocol(type="kfold_grouped", folds=2))
    path = tmp_path / "splits.csv"
    write_splits(splits, path)
    roles = read_split(path, 1)
    assert roles.index.tolist() == frame["image"].tolist()
    text = path.read_text().splitlines()
    text[3] = text[3].rsplit(",", 1)[0] + ",holdout"
    path.write_text("\n".join(text) + "\n")
    with pytest.raises(DataError, match=r"splits.csv, row 4: role 'holdout'"):
        read_split(path, 1)
    with pytest.raises(DataError, match="no column 'split5'"):
        read_split(path, 5)


def test_bad_protocols_are_refused() -> None:
    with pytest.raises(ConfigError, match="unknown protocol 'loo'"):
        Protocol.from_config({"type": "loo"})
    with pytest.raises(ConfigError, match="unknown protocol settings"):
        Protocol.from_config({"type": "kfold_grouped", "fold": 5})
    with pytest.raises(DataError, match="cannot fill 5 folds"):
        make_splits(frame_with_groups(3), Protocol(type="kfold_grouped", folds=5))
