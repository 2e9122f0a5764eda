"""Decoded-image cache: each image decoded once per dataset, equal to load_rgb + shrink.

JPEGs are decoded with DCT-domain downscaling (PIL ``draft``); the difference to the full decode
plus bicubic shrink is checked to stay small. Other formats, and images that are not shrunk,
must come out bit-identical. No timing is asserted here (see docs/performance.md).
"""

from __future__ import annotations

import dataclasses
import multiprocessing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from agiqa.errors import DataError
from agiqa.train import data as train_data
from agiqa.train.data import SHRINK_DECODER, ManifestImages, load_rgb, load_shrunk, shrink
from agiqa.train.fold import run_fold
from agiqa.train.image_cache import ImageCache
from test_train import job, prepare, residual_config


def photo_like(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """Smooth gradients, edges and some texture: a JPEG-compressible stand-in for a photo."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : size[1], 0 : size[0]].astype(np.float64)
    channels = [
        128 + 90 * np.sin(x / (17 + 5 * c) + c) * np.cos(y / 23) + 20 * (x > size[0] / 2)
        for c in range(3)
    ]
    pixels = np.stack(channels, axis=-1) + rng.normal(0, 6, (size[1], size[0], 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_images(folder: Path, n: int, fmt: str = "JPEG", size: tuple[int, int] = (96, 64)):
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".jpg" if fmt == "JPEG" else ".png"
    names = []
    for i in range(n):
        name = f"img{i}{suffix}"
        photo_like(size, seed=i).save(folder / name, fmt, quality=90)
        names.append(name)
    return names


def manifest_images(folder: Path, names: list[str]) -> ManifestImages:
    frame = pd.DataFrame({"image": names, "manifest_row": np.arange(len(names)) + 2})
    return ManifestImages(frame, folder, "m.csv")


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int64)


@pytest.fixture()
def decodes(monkeypatch) -> list[Path]:
    """Every path that went through the (expensive) decoder."""
    calls: list[Path] = []
    original = train_data.load_shrunk

    def counting(path, short_side, **kwargs):
        calls.append(path)
        return original(path, short_side, **kwargs)

    monkeypatch.setattr(train_data, "load_shrunk", counting)
    return calls


@pytest.mark.parametrize(("fmt", "short_side"), [("PNG", 32), ("JPEG", 64), ("JPEG", None)])
def test_shrunk_decode_is_exact_without_dct_scaling(tmp_path: Path, fmt: str, short_side) -> None:
    # PNGs are never draft-decoded; a JPEG whose short side is already the target is not scaled
    (name,) = write_images(tmp_path, 1, fmt)
    path = tmp_path / name
    expected = shrink(load_rgb(path, manifest="m.csv", row=2), short_side)
    got = load_shrunk(path, short_side, manifest="m.csv", row=2)
    np.testing.assert_array_equal(pixels(got), pixels(expected))


@pytest.mark.parametrize("short_side", [32, 20, 7])
def test_dct_downscaled_jpeg_stays_close_to_the_full_decode(tmp_path: Path, short_side) -> None:
    (name,) = write_images(tmp_path, 1, "JPEG", size=(192, 128))
    path = tmp_path / name
    expected = pixels(shrink(load_rgb(path, manifest="m.csv", row=2), short_side))
    got = pixels(load_shrunk(path, short_side, manifest="m.csv", row=2))
    assert got.shape == expected.shape  # same size as shrink gives, whatever the DCT scale
    difference = np.abs(got - expected)
    psnr = 10 * np.log10(255**2 / max(float((difference**2).mean()), 1e-9))
    # Measured on AGIQA-3K (512 -> 256 px): mean 1.1 grey levels, PSNR >= 33 dB; bilinear
    # instead of bicubic differs from bicubic by as much.
    assert difference.mean() < 3.0 and psnr > 30.0, (difference.mean(), psnr)


def test_second_preload_reads_every_image_from_the_cache(tmp_path: Path, decodes) -> None:
    names = write_images(tmp_path / "images", 6)
    images = manifest_images(tmp_path / "images", names)
    first = images.preload(32, threads=2, cache_dir=tmp_path / "cache")
    assert len(decodes) == 6
    decodes.clear()
    second = images.preload(32, threads=2, cache_dir=tmp_path / "cache")
    assert decodes == []
    uncached = images.preload(32, threads=2)
    for a, b, c in zip(first, second, uncached, strict=True):
        assert a.mode == b.mode == "RGB"
        np.testing.assert_array_equal(pixels(a), pixels(b))
        np.testing.assert_array_equal(pixels(a), pixels(c))  # cached or not: same pixels


def test_entries_are_keyed_by_content_size_and_decoder(tmp_path: Path, decodes) -> None:
    names = write_images(tmp_path / "a", 2)
    images = manifest_images(tmp_path / "a", names)
    images.preload(32, threads=1, cache_dir=tmp_path / "cache")
    # the same bytes under another name and folder: no new decode
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "copy.jpg").write_bytes((tmp_path / "a" / names[0]).read_bytes())
    decodes.clear()
    manifest_images(tmp_path / "b", ["copy.jpg"]).preload(32, 1, tmp_path / "cache")
    assert decodes == []
    # another target size is another entry
    images.preload(16, threads=1, cache_dir=tmp_path / "cache")
    assert len(decodes) == 2
    # new content at the same path is decoded again
    decodes.clear()
    photo_like((96, 64), seed=99).save(tmp_path / "a" / names[1], "JPEG")
    images.preload(32, threads=1, cache_dir=tmp_path / "cache")
    assert decodes == [tmp_path / "a" / names[1]]
    folders = {p.name for p in (tmp_path / "cache").iterdir() if p.is_dir()}
    assert len(folders) == 2 and all(f.startswith(SHRINK_DECODER) for f in folders)


def test_a_broken_entry_is_decoded_again(tmp_path: Path, decodes) -> None:
    names = write_images(tmp_path / "images", 2)
    images = manifest_images(tmp_path / "images", names)
    expected = images.preload(32, threads=1, cache_dir=tmp_path / "cache")
    cache = ImageCache(tmp_path / "cache", 32, SHRINK_DECODER)
    digest = cache.hashes.sha256(images.paths[0])
    cache.path(digest).write_bytes(b"\x93NUMPY torn")
    decodes.clear()
    again = images.preload(32, threads=1, cache_dir=tmp_path / "cache")
    assert decodes == [images.paths[0]]
    np.testing.assert_array_equal(pixels(again[0]), pixels(expected[0]))
    assert cache.get(digest) is not None
    assert not list((tmp_path / "cache").rglob("*.tmp"))  # writes are atomic


def test_errors_still_name_the_file_and_its_manifest_row(tmp_path: Path) -> None:
    names = write_images(tmp_path / "images", 2)
    (tmp_path / "images" / names[1]).write_bytes(b"not an image")
    images = manifest_images(tmp_path / "images", names)
    with pytest.raises(DataError, match=r"m.csv, row 3: image '.*img1.jpg' cannot be decoded"):
        images.preload(32, threads=2, cache_dir=tmp_path / "cache")
    images = manifest_images(tmp_path / "images", [names[0], "missing.jpg"])
    with pytest.raises(DataError, match=r"m.csv, row 3: image '.*missing.jpg' does not exist"):
        images.preload(32, threads=2, cache_dir=tmp_path / "cache")


def _fill_in_child(folder: str, names: list[str], cache: str, queue) -> None:
    images = manifest_images(Path(folder), names)
    decoded: list[int] = []
    original = train_data.load_shrunk

    def counting(path, short_side, **kwargs):
        decoded.append(1)
        return original(path, short_side, **kwargs)

    train_data.load_shrunk = counting
    images.preload(32, threads=2, cache_dir=cache)
    queue.put(len(decoded))


def test_parallel_jobs_decode_each_image_once(tmp_path: Path) -> None:
    names = write_images(tmp_path / "images", 12)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    args = (str(tmp_path / "images"), names, str(tmp_path / "cache"), queue)
    children = [context.Process(target=_fill_in_child, args=args) for _ in range(3)]
    for child in children:
        child.start()
    counts = [queue.get(timeout=120) for _ in children]
    for child in children:
        child.join(timeout=60)
        assert child.exitcode == 0
    assert sum(counts) == len(names)  # the lock holder decoded them; the others read its entries


def test_every_fold_after_the_first_reads_the_cache(tmp_path: Path, decodes) -> None:
    paths = prepare(tmp_path, n_prompts=8, folds=2)
    config = residual_config(epochs=1, decode_cache_short_side=32)
    first = dataclasses.replace(job(tmp_path, paths, config), image_cache_dir=str(tmp_path / "ic"))
    run_fold(first)
    labelled = len(pd.read_csv(paths[1]))
    assert len(decodes) == labelled  # train, val and test parts together: each image once
    decodes.clear()
    run_fold(dataclasses.replace(first, split=1, out_dir=str(tmp_path / "run1")))
    assert decodes == []
