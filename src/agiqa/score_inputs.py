"""What the scorer accepts as images, the way pyiqa's metrics do, and what it refuses clearly.

- a path (``str`` or ``Path``) to an image file;
- a PIL image (open; any mode agiqa.data.decode converts);
- a torch tensor, ``C x H x W`` or a batch ``N x C x H x W`` (C = 1, 3 or 4), RGB values as floats
  in [0, 1] (pyiqa's convention) or as uint8 in [0, 255];
- a numpy array, ``H x W x C`` or a batch ``N x H x W x C`` (PIL's and OpenCV's axis order;
  OpenCV's BGR must be turned to RGB first), or ``H x W`` grey, with the same value ranges;
- a list or tuple of any of these (batches inside it are unrolled).

Anything else (encoded ``bytes``, a closed PIL image, NaN pixels, floats outside [0, 1], an array
whose axes cannot be told apart) raises a ScoringError that says what to pass instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from agiqa.errors import AgiqaError

#: One image as the scorer reads it after conversion: a file path or an open PIL image.
Source = Path | Image.Image
CHANNELS = (1, 3, 4)
_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


class ScoringError(AgiqaError):
    """A checkpoint that cannot be scored with, or bad scoring input."""


def as_sources(images: object) -> tuple[list[Source], list[str]]:
    """The images of a scoring call, one source per image, and their names for the result.

    A path keeps its text as name, a PIL image its file name; an image made in memory (a
    tensor, an array or a PIL image without a file) is named ``image<k>`` by its position.
    """
    items = list(images) if isinstance(images, list | tuple) else [images]
    if not items:
        raise ScoringError("no images to score")
    sources: list[Source] = []
    names: list[str] = []
    for item in items:
        for source in _unroll(item, len(sources)):
            names.append(_name(source, item, len(sources)))
            sources.append(source)
    return sources, names


def _name(source: Source, item: object, index: int) -> str:
    if isinstance(item, str | Path):
        return str(item)
    if isinstance(source, Image.Image) and isinstance(item, Image.Image):
        return str(getattr(source, "filename", "") or f"image{index}")
    return f"image{index}"


def _unroll(item: object, first: int) -> list[Source]:
    """One input item -> its images (a batch tensor or array gives several)."""
    if isinstance(item, bytes | bytearray | memoryview):
        raise ScoringError(
            f"image {first}: got {type(item).__name__}, not an image. Pass a path, a PIL image, "
            "a tensor or an array; encoded file contents open with "
            "PIL.Image.open(io.BytesIO(data))"
        )
    if isinstance(item, str | Path):
        return [Path(item)]
    if isinstance(item, Image.Image):
        return [_open_image(item, first)]
    if isinstance(item, torch.Tensor):
        return _from_tensor(item, first)
    if isinstance(item, np.ndarray):
        return _from_array(item, first)
    raise ScoringError(
        f"image {first}: cannot score a {type(item).__name__}; pass a path, a PIL image, a torch "
        "tensor (C x H x W or N x C x H x W) or a numpy array (H x W x C or N x H x W x C)"
    )


def _open_image(image: Image.Image, index: int) -> Image.Image:
    try:
        image.load()
    except (ValueError, AttributeError, OSError) as error:
        name = getattr(image, "filename", "") or f"image{index}"
        raise ScoringError(
            f"image {name}: the PIL image cannot be read ({error}); was it closed? Pass it "
            "before closing it, or pass its path"
        ) from None
    return image


def _from_tensor(tensor: torch.Tensor, first: int) -> list[Source]:
    """C x H x W, N x C x H x W or H x W -> PIL images (channels first, pyiqa's layout)."""
    array = tensor.detach().cpu()
    if array.ndim == 2:
        array = array.unsqueeze(0)
    if array.ndim == 3:
        array = array.unsqueeze(0)
    if array.ndim != 4 or array.shape[1] not in CHANNELS:
        raise ScoringError(
            f"image {first}: a tensor of shape {tuple(tensor.shape)}; tensors are read as "
            "C x H x W or N x C x H x W with C = 1, 3 or 4 (numpy arrays are H x W x C)"
        )
    values = array.permute(0, 2, 3, 1).numpy()
    return [_to_pil(image, first + k, "tensor") for k, image in enumerate(values)]


def _from_array(array: np.ndarray, first: int) -> list[Source]:
    """H x W x C, N x H x W x C or H x W -> PIL images (channels last, PIL's layout)."""
    values = array
    if values.ndim == 2:
        values = values[:, :, None]
    if values.ndim == 3:
        values = values[None]
    if values.ndim != 4 or values.shape[-1] not in CHANNELS:
        hint = ""
        if values.ndim == 4 and values.shape[1] in CHANNELS:
            hint = " (channels first? transpose it, or pass a torch tensor)"
        raise ScoringError(
            f"image {first}: an array of shape {array.shape}; arrays are read as H x W x C or "
            f"N x H x W x C with C = 1, 3 or 4{hint}"
        )
    return [_to_pil(image, first + k, "array") for k, image in enumerate(values)]


def _to_pil(values: np.ndarray, index: int, what: str) -> Image.Image:
    """H x W x C values (uint8, or floats in [0, 1]) -> a PIL image of the matching mode."""
    if values.shape[0] < 1 or values.shape[1] < 1:
        height, width = values.shape[:2]
        raise ScoringError(f"image {index}: an empty {what} ({height} x {width})")
    if values.dtype == np.uint8:
        pixels = values
    elif np.issubdtype(values.dtype, np.floating):
        if not np.isfinite(values).all():
            raise ScoringError(f"image {index}: the {what} holds NaN or infinite values")
        low, high = float(values.min()), float(values.max())
        if low < 0.0 or high > 1.0:
            raise ScoringError(
                f"image {index}: {what} values run from {low:g} to {high:g}; floats must lie in "
                "[0, 1] (divide 8-bit values by 255, or pass them as uint8)"
            )
        pixels = np.round(values * 255.0).astype(np.uint8)
    else:
        raise ScoringError(
            f"image {index}: a {what} of {values.dtype}; pass uint8 (0-255) or floats in [0, 1]"
        )
    channels = pixels.shape[-1]
    plane = pixels[:, :, 0] if channels == 1 else pixels
    return Image.fromarray(np.ascontiguousarray(plane), mode=_MODES[channels])


def positive_batch_size(value: object) -> int:
    """``batch_size`` as given by a caller: a positive integer, or a clear error."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or int(value) < 1:
        raise ScoringError(f"batch_size must be a positive integer, got {value!r}")
    return int(value)


def torch_device(requested: object) -> torch.device:
    """``auto`` (a GPU when torch sees one, else the CPU), ``cpu``, ``cuda[:N]`` or ``mps``."""
    if isinstance(requested, torch.device):
        requested = str(requested)
    if not isinstance(requested, str):
        raise ScoringError(f"device must be a string such as 'auto', got {requested!r}")
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    try:
        device = torch.device(requested)
    except (RuntimeError, ValueError):
        raise ScoringError(
            f"device '{requested}' is not a torch device: use auto, cpu, cuda, cuda:N or mps"
        ) from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index is not None and device.index >= count):
            raise ScoringError(
                f"device '{requested}' asked for, but torch sees {count} CUDA device(s)"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ScoringError("device 'mps' asked for, but torch sees no MPS device")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ScoringError(f"device '{requested}': agiqa scores on auto, cpu, cuda[:N] or mps")
    return device
