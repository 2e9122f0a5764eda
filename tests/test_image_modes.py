"""Every PIL mode decodes to the RGB a reference computed here, independently, with numpy says.

Each image is written to a real file (PNG, or TIFF or PGM where PNG cannot hold the mode), then read
back through ``load_rgb`` (training) and ``verify_images`` (the dataset check).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agiqa.data.check import verify_images
from agiqa.data.decode import (
    ImageGeometryError,
    UnsupportedImage,
    check_geometry,
    declared_bits,
    to_rgb,
)
from agiqa.data.readers import read_dataset
from agiqa.errors import DataError
from agiqa.train.data import load_rgb

SHAPE = (6, 5)


def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def grey_rgb(levels: np.ndarray) -> np.ndarray:
    return np.repeat(levels.astype(np.uint8)[..., None], 3, axis=-1)


def over_white(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Reference compositing: c a + 255 (1 - a), a in [0, 1], rounded to nearest."""
    a = alpha.astype(np.float64)[..., None] / 255.0
    return np.round(colour.astype(np.float64) * a + 255.0 * (1.0 - a)).astype(np.uint8)


def case_1() -> tuple[Image.Image, np.ndarray]:
    bits = rng().random(SHAPE) > 0.5
    return Image.fromarray(bits), grey_rgb(np.where(bits, 255, 0))


def case_l() -> tuple[Image.Image, np.ndarray]:
    grey = rng().integers(0, 256, SHAPE, dtype=np.uint8)
    return Image.fromarray(grey), grey_rgb(grey)


def case_la() -> tuple[Image.Image, np.ndarray]:
    pixels = rng().integers(0, 256, (*SHAPE, 2), dtype=np.uint8)
    pixels[0, 0, 1], pixels[0, 1, 1] = 0, 255  # fully transparent and fully opaque
    grey = np.repeat(pixels[..., :1], 3, axis=-1)
    return Image.fromarray(pixels), over_white(grey, pixels[..., 1])


def case_rgba() -> tuple[Image.Image, np.ndarray]:
    pixels = rng().integers(0, 256, (*SHAPE, 4), dtype=np.uint8)
    pixels[0, 0, 3] = 0
    return Image.fromarray(pixels), over_white(pixels[..., :3], pixels[..., 3])


def _palette_image() -> tuple[Image.Image, np.ndarray, np.ndarray]:
    palette = rng().integers(0, 256, (16, 3), dtype=np.uint8)
    index = rng().integers(0, 16, SHAPE, dtype=np.uint8)
    image = Image.new("P", (SHAPE[1], SHAPE[0]))
    image.putpalette(palette.reshape(-1).tolist())
    image.putdata(index.reshape(-1).tolist())
    return image, palette, index


def case_p() -> tuple[Image.Image, np.ndarray]:
    image, palette, index = _palette_image()
    return image, palette[index]


def case_p_trns() -> tuple[Image.Image, np.ndarray]:
    image, palette, index = _palette_image()
    # PNG tRNS: alpha of the first palette entries; the others stay opaque
    trns = np.array([0, 128, 255, 64, 10], dtype=np.uint8)
    alpha = np.full(16, 255, dtype=np.uint8)
    alpha[: len(trns)] = trns
    image.info["transparency"] = trns.tobytes()
    return image, over_white(palette[index], alpha[index])


def case_cmyk() -> tuple[Image.Image, np.ndarray]:
    cmyk = rng().integers(0, 256, (*SHAPE, 4)).astype(np.float64)
    rgb = np.round((255 - cmyk[..., :3]) * (255 - cmyk[..., 3:]) / 255.0)
    return Image.fromarray(cmyk.astype(np.uint8), "CMYK"), rgb.astype(np.uint8)


def _sixteen() -> np.ndarray:
    values = rng().integers(0, 65536, SHAPE).astype(np.uint16)
    values[0, :4] = [0, 65535, 257 * 100, 128]  # ends of the range, an exact level, a rounding
    return values


def scaled_16(values: np.ndarray) -> np.ndarray:
    return grey_rgb(np.round(values.astype(np.float64) / 257.0))


def case_i16() -> tuple[Image.Image, np.ndarray]:
    values = _sixteen()
    return Image.fromarray(values), scaled_16(values)


def case_i16b() -> tuple[Image.Image, np.ndarray]:
    values = _sixteen()
    return Image.fromarray(values.astype(">u2")), scaled_16(values)


def case_i16_trns() -> tuple[Image.Image, np.ndarray]:
    values = _sixteen()
    key = int(values[2, 2])
    image = Image.fromarray(values)
    image.info["transparency"] = key
    expected = scaled_16(values)
    expected[values == key] = 255  # the transparent grey value, composited on white
    return image, expected


def case_i_pgm() -> tuple[Image.Image, np.ndarray]:
    """A 16-bit PGM: PIL reads it as mode I, its maxval declares 16 bits."""
    values = _sixteen()
    return Image.fromarray(values.astype(np.uint16)), scaled_16(values)


def case_f() -> tuple[Image.Image, np.ndarray]:
    values = rng().random(SHAPE).astype(np.float32)
    values[0, :2] = [0.0, 1.0]
    return Image.fromarray(values), grey_rgb(np.round(values.astype(np.float64) * 255.0))


CASES: dict[str, tuple[Callable[[], tuple[Image.Image, np.ndarray]], str, str]] = {
    # name: (builder, file format, mode after reading the file back)
    "1": (case_1, "PNG", "1"),
    "L": (case_l, "PNG", "L"),
    "LA": (case_la, "PNG", "LA"),
    "RGBA": (case_rgba, "PNG", "RGBA"),
    "P": (case_p, "PNG", "P"),
    "P+tRNS": (case_p_trns, "PNG", "P"),
    "CMYK": (case_cmyk, "TIFF", "CMYK"),
    "I;16": (case_i16, "PNG", "I;16"),
    "I;16+tRNS": (case_i16_trns, "PNG", "I;16"),
    "I;16B": (case_i16b, "TIFF", "I;16B"),
    "I (16-bit PGM)": (case_i_pgm, "PPM", "I"),
    "F": (case_f, "TIFF", "F"),
}


def save(image: Image.Image, path: Path, fmt: str) -> Path:
    extra = {}
    if "transparency" in image.info:
        extra["transparency"] = image.info["transparency"]
    image.save(path, format=fmt, **extra)
    return path


@pytest.mark.parametrize("name", list(CASES))
def test_each_mode_decodes_like_the_numpy_reference(name: str, tmp_path: Path) -> None:
    build, fmt, mode = CASES[name]
    image, expected = build()
    path = save(image, tmp_path / f"x.{fmt.lower()}", fmt)
    with Image.open(path) as reread:
        assert reread.mode == mode  # the file really holds the mode under test
    decoded = load_rgb(path, manifest="m.csv", row=2)
    assert decoded.mode == "RGB" and decoded.size == (SHAPE[1], SHAPE[0])
    np.testing.assert_array_equal(np.asarray(decoded), expected)


def test_sixteen_bit_grey_is_not_white(tmp_path: Path) -> None:
    # the reported bug: Image.convert("RGB") clipped 16-bit data, so mid-grey came out white
    path = tmp_path / "grey16.png"
    Image.fromarray(np.full((4, 4), 32896, dtype=np.uint16)).save(path)
    assert np.asarray(load_rgb(path, manifest="m.csv", row=2)).max() == 128


def test_little_endian_16_bit_in_memory() -> None:
    values = _sixteen()
    image = Image.frombytes("I;16L", (SHAPE[1], SHAPE[0]), values.astype("<u2").tobytes())
    np.testing.assert_array_equal(np.asarray(to_rgb(image)), scaled_16(values))


@pytest.mark.parametrize(
    ("image", "words"),
    [
        (Image.fromarray(np.full((2, 2), 2.0, dtype=np.float32)), ["[2, 2]", "only [0, 1]"]),
        (Image.fromarray(np.full((2, 2), np.nan, dtype=np.float32)), ["NaN"]),
        (Image.fromarray(np.full((2, 2), 70000, dtype=np.int32)), ["70000", "ambiguous"]),
        (Image.fromarray(np.full((2, 2), -1, dtype=np.int32)), ["-1", "ambiguous"]),
        (Image.new("HSV", (2, 2)), ["HSV", "supported"]),
    ],
    ids=["F-out-of-range", "F-nan", "I-above-16-bit", "I-negative", "HSV"],
)
def test_unconvertible_images_are_refused(image: Image.Image, words: list[str]) -> None:
    with pytest.raises(UnsupportedImage) as caught:
        to_rgb(image)
    for word in words:
        assert word in str(caught.value)


def write_dataset(root: Path, images: dict[str, Image.Image]) -> None:
    lines = ["name,prompt,mos_quality,std_quality,mos_align,std_align"]
    for i, (name, image) in enumerate(images.items()):
        save(image, root / name, {".tif": "TIFF", ".pgm": "PPM"}.get(Path(name).suffix, "PNG"))
        lines.append(f"{name},prompt {i},2.0,0.1,3.0,0.2")
    (root / "data.csv").write_text("\n".join(lines) + "\n")


def test_verification_converts_every_mode_and_names_the_refused(tmp_path: Path) -> None:
    images = {
        f"ok_{i}.{'pgm' if fmt == 'PPM' else 'tif'}": build()[0]
        for i, (build, fmt, _) in enumerate(CASES.values())
    }
    images["lab_0.tif"] = Image.new("LAB", (4, 4), (50, 10, 20))
    images["float_0.tif"] = Image.fromarray(np.full((4, 4), 3.5, dtype=np.float32))
    write_dataset(tmp_path, images)
    manifest = read_dataset("agiqa-3k", tmp_path, dataset="modes")
    with pytest.raises(DataError) as caught:
        verify_images(manifest, tmp_path)
    message = str(caught.value)
    assert caught.value.file == manifest.source
    assert f"2 of {len(CASES) + 2} images" in message and "2 unsupported" in message
    row = len(CASES) + 2  # header is row 1
    assert f"manifest row {row}: lab_0.tif: cannot be converted to RGB (colour mode LAB" in message
    assert f"manifest row {row + 1}: float_0.tif: cannot be converted to RGB" in message
    assert "ok_" not in message


def test_load_rgb_names_file_and_row_of_an_unconvertible_image(tmp_path: Path) -> None:
    path = tmp_path / "lab.tif"
    Image.new("LAB", (4, 4), (50, 10, 20)).save(path)
    with pytest.raises(DataError) as caught:
        load_rgb(path, manifest="results/manifests/x.csv", row=17)
    assert caught.value.file == "results/manifests/x.csv" and caught.value.row == 17
    assert str(path) in str(caught.value) and "LAB" in str(caught.value)


def test_a_32_bit_tiff_of_8_bit_data_is_refused_not_darkened(tmp_path: Path) -> None:
    """Hardening II item 7: 0-255 data in a mode I TIFF came out near black (taken as 16-bit)."""
    path = tmp_path / "eight_in_thirty_two.tif"
    Image.fromarray((np.arange(64).reshape(8, 8) * 4).astype(np.int32)).save(path)
    with Image.open(path) as image:
        assert image.mode == "I" and declared_bits(image) == 32
    with pytest.raises(DataError) as caught:
        load_rgb(path, manifest="m.csv", row=5)
    assert caught.value.file == "m.csv" and caught.value.row == 5
    message = str(caught.value)
    assert str(path) in message and "values in [0, 252]" in message
    assert "declares 32 bits per sample" in message and "ambiguous" in message


def test_images_beyond_the_size_limits_are_refused_before_decoding(tmp_path: Path) -> None:
    """Item 11: a 1 x 1,000,000 image passed verification and ran out of memory at scoring;
    verification, training and scoring now apply the same limits (``check_geometry``)."""
    path = tmp_path / "strip.png"
    Image.new("L", (1_000_000, 1)).save(path)
    with pytest.raises(DataError, match="differ by more than 10x") as caught:
        load_rgb(path, manifest="m.csv", row=2)
    assert str(path) in str(caught.value) and caught.value.row == 2
    with pytest.raises(ImageGeometryError, match="differ by more than 10x"):
        to_rgb(Image.new("L", (1, 11)))
    with pytest.raises(ImageGeometryError, match="more than the 100,000,000"):
        check_geometry((11_000, 10_000))
    check_geometry((10, 1))  # the limits themselves pass
    check_geometry((10_000, 10_000))
