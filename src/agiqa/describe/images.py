"""Reading an image for a request: its bytes, content hash and true MIME type."""

from __future__ import annotations

import hashlib
from pathlib import Path

from agiqa.data.manifest import resolve_image
from agiqa.describe.backends.base import ImageItem, PermanentError
from agiqa.errors import DataError

# (magic prefix, MIME type); WEBP is checked apart (its tag sits at offset 8)
MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
)


def sniff_mime(data: bytes) -> str | None:
    """The MIME type of image bytes from their signature (the extension can lie)."""
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    for magic, mime in MAGIC:
        if data.startswith(magic):
            return mime
    return None


def load_item(root: Path | None, image: str, *, with_data: bool) -> ImageItem:
    """The ImageItem of a manifest image; a missing or unknown file is a PermanentError."""
    if not with_data:
        return ImageItem(image=image)
    if root is None:
        raise PermanentError("no dataset root given, cannot read the image")
    try:
        path = resolve_image(root, image, file="manifest", row=None)
        data = path.read_bytes()
    except DataError as error:
        raise PermanentError(error.reason) from None
    except FileNotFoundError:
        raise PermanentError(f"image file not found under {root}") from None
    except OSError as error:
        raise PermanentError(f"cannot read image: {error.strerror}") from None
    mime = sniff_mime(data)
    if mime is None:
        raise PermanentError("not a PNG, JPEG, GIF, BMP or WEBP image")
    return ImageItem(image, path, data, hashlib.sha256(data).hexdigest(), mime)
