"""Any decoded PIL image to 8-bit RGB, by one rule per mode, for verification and training alike.

``Image.convert("RGB")`` is wrong for several modes (a 16-bit greyscale PNG comes out white: it
clips instead of scaling), so every mode is converted explicitly here:

- ``RGB`` as is; ``RGBX`` drops its padding band; ``L`` and ``1`` repeat the grey value (``1`` is
  0 or 255); ``P`` looks up its palette; ``YCbCr`` uses JPEG's (BT.601 full-range) matrix.
- ``CMYK``: R = (255 - C)(255 - K) / 255, likewise G from M and B from Y, rounded (no colour
  management: an embedded ICC profile is ignored).
- 16-bit greyscale (``I;16``, ``I;16L``, ``I;16B``, ``I;16N``) is scaled by its bit depth:
  v / 257 rounded, so 0 -> 0, 65535 -> 255 and 257 k -> k exactly. Mode ``I`` (a 32-bit
  integer container) is scaled by the bit depth its file declares: 16 for a PGM/PPM whose
  maxval exceeds 255 (PIL scales it to 16 bits), by the rule above. A TIFF declaring 32 bits per
  sample, or an image without a file, has no known scale: 0-255 data read as 16-bit would come
  out near black, so it is refused, never guessed.
- ``F`` (32-bit float) is accepted only with every value in [0, 1] (v * 255, rounded): a float
  image could equally hold [0, 255] data, and guessing between the two scales would silently
  change the image, so any value outside [0, 1] (or NaN) is refused.
- Transparency (an alpha band in ``LA``, ``La``, ``PA``, ``RGBA``, ``RGBa``, or a transparent
  colour, PNG tRNS, in ``P``, ``L``, ``RGB`` or 16-bit greyscale) is composited over white:
  out = c a + 255 (1 - a), a = alpha / 255, rounded. White, not alpha dropped: the colour under
  transparent pixels is undefined (often black or leftovers of the editor), and viewers and
  rating tools show transparent areas on a light background.
- Any other mode (``LAB``, ``HSV``, ``I;16S``, ...) is refused with :class:`UnsupportedImage`.
- Size: more than ``MAX_PIXELS`` pixels, or a long side more than ``MAX_ASPECT`` times the short
  one, is refused (:class:`ImageGeometryError`) by verification, training and scoring alike,
  before decoding: resizing a 1 x 1,000,000 image's short side to 224 would need gigabytes.

The integer rules divide by an odd number (255 or 257), so no value falls exactly halfway and
their results are exact (integer arithmetic, no floating-point approximation).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

SIXTEEN_BIT = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
ALPHA = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
# modes whose transparent colour (info["transparency"]) PIL applies when converting to RGBA
KEYED = frozenset({"P", "L", "RGB"})
# modes PIL converts to RGB exactly as documented above
DIRECT = frozenset({"1", "L", "P", "RGB", "RGBX", "YCbCr"})
SUPPORTED = sorted(SIXTEEN_BIT | ALPHA | KEYED | DIRECT | {"I", "F", "CMYK"})
MAX_16 = 65535


#: The largest image accepted anywhere (verification, training, scoring), and the largest ratio
#: of its long side to its short side (generated images are at most about 4:1 panoramas).
MAX_PIXELS = 100_000_000
MAX_ASPECT = 10.0


class UnsupportedImage(ValueError):
    """An image whose mode or values have no faithful 8-bit RGB conversion."""


class ImageGeometryError(UnsupportedImage):
    """An image too large, or too elongated, to resize and score (``check_geometry``)."""


def check_geometry(size: tuple[int, int]) -> None:
    """Refuse an image of ``size`` (width, height) beyond ``MAX_PIXELS`` or ``MAX_ASPECT``.

    Raises:
        ImageGeometryError: Saying which limit and by how much.
    """
    width, height = size
    if width < 1 or height < 1:
        raise ImageGeometryError(f"{width} x {height} pixels: an empty image")
    if width * height > MAX_PIXELS:
        raise ImageGeometryError(
            f"{width} x {height} pixels: more than the {MAX_PIXELS:,} accepted; downscale it"
        )
    if max(width, height) / min(width, height) > MAX_ASPECT:
        raise ImageGeometryError(
            f"{width} x {height} pixels: its sides differ by more than {MAX_ASPECT:g}x, which no "
            "model input (a square crop of the resized image) can represent; crop it"
        )


def to_rgb(image: Image.Image) -> Image.Image:
    """A new 8-bit RGB image made from ``image`` by the rules in the module docstring.

    Raises:
        UnsupportedImage: an unknown mode, an ``I`` image outside [0, 65535], or an ``F`` image
            outside [0, 1].
    """
    check_geometry(image.size)
    mode = image.mode
    if mode in SIXTEEN_BIT or mode == "I":
        samples = np.asarray(image).astype(np.int64)
        if mode == "I":
            _require_16_bit_declared(image, samples)
        return _grey(_scale_16(samples, mode), _transparent(image, samples))
    if mode == "F":
        return _grey(_scale_float(np.asarray(image, dtype=np.float64)), None)
    if mode == "CMYK":
        return _from_cmyk(np.asarray(image).astype(np.int64))
    if mode in ALPHA or (mode in KEYED and image.info.get("transparency") is not None):
        return _on_white(np.asarray(image.convert("RGBA")).astype(np.int64))
    if mode in DIRECT:
        return image.convert("RGB")
    raise UnsupportedImage(
        f"colour mode {mode} has no RGB conversion here (supported: {', '.join(SUPPORTED)})"
    )


def _round_div(numerator: np.ndarray, denominator: int) -> np.ndarray:
    # exact round-half-up of a non-negative integer ratio; halves never occur (odd denominator)
    return (numerator + denominator // 2) // denominator


def _range(values: np.ndarray) -> tuple[float, float]:
    return (values.min().item(), values.max().item()) if values.size else (0, 0)


def _scale_16(samples: np.ndarray, mode: str) -> np.ndarray:
    low, high = _range(samples)
    if low < 0 or high > MAX_16:
        raise UnsupportedImage(
            f"mode {mode} with values in [{low}, {high}]: only 16-bit data in [0, {MAX_16}] has"
            " a known scale"
        )
    return _round_div(samples, 257)


def declared_bits(image: Image.Image) -> int | None:
    """Bits per sample a mode ``I`` image's file declares: 16 for a PGM/PPM (PIL scales a maxval
    above 255 to 16 bits), a TIFF's BitsPerSample; None without a file or a declaration."""
    if image.format == "PPM":
        return 16
    if image.format == "TIFF":
        bits = getattr(image, "tag_v2", {}).get(258)
        bits = bits[0] if isinstance(bits, tuple) and bits else bits
        return int(bits) if isinstance(bits, int) else None
    return None


def _require_16_bit_declared(image: Image.Image, samples: np.ndarray) -> None:
    bits = declared_bits(image)
    if bits == 16:
        return
    low, high = _range(samples)
    declared = f"its file declares {bits} bits per sample" if bits else "no bit depth declared"
    raise UnsupportedImage(
        f"mode I (32-bit integer) image with values in [{low}, {high}] and {declared}: its scale "
        "is ambiguous (0-255 data read as 16-bit would come out near black), so it is not "
        "guessed; save it as an 8-bit or 16-bit image"
    )


def _scale_float(values: np.ndarray) -> np.ndarray:
    if not np.isfinite(values).all():
        raise UnsupportedImage("mode F (float) image holds NaN or infinite values")
    low, high = _range(values)
    if low < 0.0 or high > 1.0:
        raise UnsupportedImage(
            f"mode F (float) image with values in [{low:g}, {high:g}]: only [0, 1] is accepted"
            " (a float image's scale cannot be told apart otherwise); save it as 8- or 16-bit"
        )
    return np.floor(values * 255.0 + 0.5).astype(np.int64)


def _transparent(image: Image.Image, samples: np.ndarray) -> np.ndarray | None:
    """Where a 16-bit image has its transparent grey value (PNG tRNS), or None."""
    key = image.info.get("transparency")
    return samples == key if isinstance(key, int) else None


def _grey(levels: np.ndarray, transparent: np.ndarray | None) -> Image.Image:
    if transparent is not None:
        levels = np.where(transparent, 255, levels)
    grey = levels.astype(np.uint8)
    return Image.fromarray(np.stack([grey] * 3, axis=-1))


def _from_cmyk(cmyk: np.ndarray) -> Image.Image:
    ink = 255 - cmyk[..., 3:4]
    rgb = _round_div((255 - cmyk[..., :3]) * ink, 255)
    return Image.fromarray(rgb.astype(np.uint8))


def _on_white(rgba: np.ndarray) -> Image.Image:
    alpha = rgba[..., 3:4]
    rgb = _round_div(rgba[..., :3] * alpha + 255 * (255 - alpha), 255)
    return Image.fromarray(rgb.astype(np.uint8))
