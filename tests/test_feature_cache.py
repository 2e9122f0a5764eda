"""Frozen-encoder features: computed once, hit by later folds, same predictions as uncached."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agiqa.bench import run_bench
from agiqa.models.clip_backbone import ClipModel
from agiqa.train.feature_cache import FeatureCache, FileHashes
from agiqa.train.fold import run_fold
from test_train import TINY_BACKBONE, job, prepare

ZERO_SHOT = {"type": "clip_zeroshot", "backbone": TINY_BACKBONE}
LINEAR_PROBE = {
    "type": "clip_residual",
    "backbone": TINY_BACKBONE,
    "freeze": {"mode": "full"},
    "train": {"epochs": 2, "batch_size": 16, "lr": 1e-3},
}


@pytest.fixture()
def encode_calls(monkeypatch) -> list[int]:
    calls: list[int] = []
    original = ClipModel.encode

    def counting(self, images, tokens):
        calls.append(len(images))
        return original(self, images, tokens)

    monkeypatch.setattr(ClipModel, "encode", counting)
    return calls


def test_second_fold_reads_every_feature_from_the_cache(tmp_path: Path, encode_calls) -> None:
    paths = prepare(tmp_path, n_prompts=12, folds=3)
    run_fold(job(tmp_path, paths, LINEAR_PROBE, split=0))
    first = sum(encode_calls)
    assert first == len(pd.read_csv(paths[1]))  # every labelled image encoded exactly once
    encode_calls.clear()
    run_fold(job(tmp_path, paths, LINEAR_PROBE, split=1))
    assert sum(encode_calls) == 0


def test_cached_and_uncached_paths_predict_the_same(tmp_path: Path) -> None:
    paths = prepare(tmp_path, n_prompts=12, folds=3)
    uncached = {**ZERO_SHOT, "train": {"feature_cache": False}}
    run_fold(job(tmp_path / "a", paths, uncached))
    run_fold(job(tmp_path / "b", paths, ZERO_SHOT))
    plain = pd.read_csv(tmp_path / "a" / "run" / "predictions.csv")
    cached = pd.read_csv(tmp_path / "b" / "run" / "predictions.csv")
    assert plain["image"].tolist() == cached["image"].tolist()
    for column in ("pred_quality", "pred_align"):
        np.testing.assert_allclose(plain[column], cached[column], rtol=1e-5, atol=1e-6)


def test_a_fine_tuned_backbone_is_never_cached(tmp_path: Path, encode_calls) -> None:
    paths = prepare(tmp_path, n_prompts=12, folds=3)
    fine_tuned = {**LINEAR_PROBE, "freeze": {"mode": "none"}, "train": {"epochs": 1}}
    run_fold(job(tmp_path, paths, fine_tuned))
    assert not (tmp_path / "features").exists()


def test_cache_entries_survive_reload_and_broken_files_count_as_missing(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path, "key")
    cache.put("image", "ab" * 32, np.arange(4, dtype=np.float32))
    np.testing.assert_array_equal(
        FeatureCache(tmp_path, "key").get("image", "ab" * 32), np.arange(4, dtype=np.float32)
    )
    cache.path("image", "cd" * 32).parent.mkdir(parents=True, exist_ok=True)
    cache.path("image", "cd" * 32).write_bytes(b"\x93NUMPY truncated")
    assert cache.get("image", "cd" * 32) is None


def test_a_planted_cache_entry_never_runs_code_or_feeds_nan(tmp_path: Path) -> None:
    """An object array (a pickle) in the feature cache is not loaded; NaN features are redone."""
    cache = FeatureCache(tmp_path, "key")
    marker = tmp_path / "pwned"
    path = cache.path("image", "ef" * 32)
    path.parent.mkdir(parents=True, exist_ok=True)
    planted = np.empty(1, dtype=object)
    planted[0] = _Payload(marker)
    np.save(path, planted, allow_pickle=True)
    assert cache.get("image", "ef" * 32) is None and not marker.exists()
    cache.put("image", "12" * 32, np.array([1.0, np.nan], dtype=np.float32))
    assert cache.get("image", "12" * 32) is None


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def test_file_hashes_are_content_hashes_and_memoised(tmp_path: Path) -> None:
    first, second = tmp_path / "a.jpg", tmp_path / "b.jpg"
    first.write_bytes(b"same bytes")
    second.write_bytes(b"same bytes")
    hashes = FileHashes(tmp_path / "hashes.json")
    assert hashes.sha256(first) == hashes.sha256(second)
    hashes.save()
    assert len(FileHashes(tmp_path / "hashes.json").memo) == 2


def test_bench_reports_both_paths_on_the_same_work() -> None:
    reference, cold, warm = run_bench(
        "linear_probe", LINEAR_PROBE, epochs=1, n_images=24, repeats=1
    )
    assert reference.images == cold.images == warm.images > 0
    assert min(reference.seconds, cold.seconds, warm.seconds) > 0
