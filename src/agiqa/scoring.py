"""Score new images with a trained fold checkpoint: ``agiqa score`` and ``agiqa.load``.

A fold job's ``checkpoint.pt`` is self-contained (agiqa.train.checkpoint): it holds the trained
parameters, the resolved model entry, the dimensions (name, kind, native scale range) and the
preprocessing, so scoring needs no manifest and no config. Weights the model does not train are
not copied into it:

- pretrained backbones named by a standard id (``openai``, ``Salesforce/blip-itm-base-coco``,
  torchvision's weights) load the standard way (open_clip, transformers, torch hub caches);
- weight files named in the entry by path (the stand-in backbones of ``pretrained_backbones``;
  an ImageReward state dict) travel beside the checkpoint, in the run folder's ``weights/``.
  The scorer looks there first, then at the recorded path, then in ``weights_dir``, and refuses
  a file whose sha256 differs;
- randomly initialised frozen weights are rebuilt from the job's seed.

Whatever their source, the frozen tensors are checked against a sha256 recorded at training time,
so a checkpoint never scores with other weights than it was trained with.

Scoring runs the model's own evaluation path (``make_dataset(train=False)``, ``collate``,
``forward_batch``, ``reduce_predictions``), clips to [0, 1] and maps each dimension back to its
native scale, exactly as the fold job's ``predict``; the same images give the same numbers as the
job's ``predictions.csv``. Given a protocol's model folder (``runs/<protocol>/<dataset>/<model>``)
the scorer averages the folds' checkpoints (an ensemble).
"""

from __future__ import annotations

import logging
import os
import pickle
import posixpath
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader

from agiqa.data.decode import UnsupportedImage, to_rgb
from agiqa.data.manifest import Dimension
from agiqa.errors import AgiqaError, ConfigError
from agiqa.provenance import file_sha256
from agiqa.score_inputs import (
    ScoringError,
    Source,
    as_sources,
    positive_batch_size,
    torch_device,
)
from agiqa.train.checkpoint import CHECKPOINT, FORMAT, VERSION, frozen_fingerprint

if TYPE_CHECKING:
    from agiqa.models import AgiqaModel
    from agiqa.train.data import DecodedImages

log = logging.getLogger(__name__)

HEX = frozenset("0123456789abcdef")
#: Image files ``agiqa score`` picks up from a folder.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
#: Images decoded at a time; bounds memory when scoring thousands of images.
CHUNK_IMAGES = 512

#: One image, or a batch (agiqa.score_inputs says what each form means).
ImageInput = str | Path | Image.Image | torch.Tensor | np.ndarray


# --- reading ----------------------------------------------------------------------------------


def checkpoint_files(source: str | Path) -> list[Path]:
    """The checkpoint(s) behind ``source``: a file, a run folder, or a protocol's model folder.

    A model folder (``runs/<protocol>/<dataset>/<model>``) gives every ``split*/checkpoint.pt``
    in it, in split order: the folds' ensemble.
    """
    path = Path(source)
    if path.is_file():
        return [path]
    if (path / CHECKPOINT).is_file():
        return [path / CHECKPOINT]
    members = sorted(path.glob(f"split*/{CHECKPOINT}"), key=_split_number)
    if not members:
        raise ScoringError(
            f"{path}: no {CHECKPOINT} here, nor in split*/ below it (give a checkpoint file, a "
            "run folder runs/<protocol>/<dataset>/<model>/split<k>, or the model folder above "
            "the splits for an ensemble)"
        )
    return members


def _split_number(path: Path) -> tuple[int, str]:
    name = path.parent.name.removeprefix("split")
    return (int(name), "") if name.isdigit() else (1 << 30, name)


def read_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint with ``weights_only=True`` (never unpickles code) and check its format."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ScoringError(f"{path}: no such checkpoint") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as error:
        first = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise ScoringError(f"{path}: not a loadable agiqa checkpoint ({first})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ScoringError(
            f"{path}: written by an older agiqa without the model entry, dimensions and "
            "preprocessing inside; rerun its training job to score with it"
        )
    version = payload.get("version")
    if isinstance(version, int) and not isinstance(version, bool) and version > VERSION:
        raise ScoringError(f"{path}: checkpoint version {version} is newer than this agiqa")
    problem = payload_problem(payload)
    if problem is not None:
        raise ScoringError(
            f"{path}: not a valid agiqa checkpoint ({problem}); it was damaged or edited: use "
            "the checkpoint.pt its training job wrote, or rerun that job"
        )
    return payload


def payload_problem(payload: dict) -> str | None:
    """What is wrong with a checkpoint's content (``checkpoint_payload``'s schema), or None."""
    checks = (
        ("version", _is_int(payload.get("version")) and payload["version"] == VERSION,
         f"the integer {VERSION}"),
        ("trained_state", _tensor_dict(payload.get("trained_state")),
         "a mapping of parameter names to finite tensors"),
        ("model", _model_section(payload.get("model")),
         "{name: <model name>, entry: {type: <registered model type>, ...}}"),
        ("dimensions", _dimensions_section(payload.get("dimensions")),
         "a non-empty list of {name, kind, low, high} with a known kind and low < high"),
        ("preprocessing", _preprocessing_section(payload.get("preprocessing")),
         "{short_side: null or a positive integer, transform: <text>, ...}"),
        ("frozen", _frozen_section(payload.get("frozen")),
         "{sha256: <64 hex digits>, tensors: <count>}"),
        ("weight_files", _weight_files_section(payload.get("weight_files", [])),
         "a list of {slot, path, sha256}"),
        ("seed", _is_int(payload.get("seed", 0)), "an integer"),
        ("best_epoch", payload.get("best_epoch") is None or _is_int(payload["best_epoch"]),
         "null or an integer"),
    )  # fmt: skip
    for key, valid, expected in checks:
        if not valid:
            found = payload.get(key, "<missing>")
            shown = f"{type(found).__name__}" if key == "trained_state" else repr(found)[:80]
            return f"'{key}' must be {expected}; found {shown}"
    return None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value)


def _tensor_dict(state: object) -> bool:
    if not isinstance(state, dict):
        return False
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            return False
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return False  # a NaN weight would score every image NaN
    return True


def _model_section(model: object) -> bool:
    if not isinstance(model, dict) or not isinstance(model.get("name"), str):
        return False
    entry = model.get("entry")
    return isinstance(entry, dict) and isinstance(entry.get("type"), str)


def _dimensions_section(dimensions: object) -> bool:
    from agiqa.data.manifest import DIMENSION_KINDS

    if not isinstance(dimensions, list) or not dimensions:
        return False
    for dim in dimensions:
        if not isinstance(dim, dict) or not isinstance(dim.get("name"), str):
            return False
        if dim.get("kind") not in DIMENSION_KINDS:
            return False
        low, high = dim.get("low"), dim.get("high")
        if not (_is_number(low) and _is_number(high) and low < high):
            return False
    return len({dim["name"] for dim in dimensions}) == len(dimensions)


def _preprocessing_section(preprocessing: object) -> bool:
    if not isinstance(preprocessing, dict) or "short_side" not in preprocessing:
        return False
    side = preprocessing["short_side"]
    return (side is None or (_is_int(side) and side > 0)) and all(
        isinstance(preprocessing.get(key, ""), str) for key in ("decode", "decoder", "transform")
    )


def _frozen_section(frozen: object) -> bool:
    if not isinstance(frozen, dict) or not _is_int(frozen.get("tensors")):
        return False
    digest = frozen.get("sha256")
    return isinstance(digest, str) and len(digest) == 64 and all(c in HEX for c in digest)


def _weight_files_section(files: object) -> bool:
    keys = ("slot", "path", "sha256")
    return isinstance(files, list) and all(
        isinstance(ref, dict) and all(isinstance(ref.get(k), str) for k in keys) for ref in files
    )


def resolve_weight_files(
    payload: dict, weights_dir: str | Path | None, source: Path
) -> dict[str, str]:
    """Recorded weight-file path -> the file to load here, checked by sha256.

    Looked up beside the checkpoint (``weights/``, where the fold job bundles them), at the
    recorded path (relative to the folder the scorer runs in), then in ``weights_dir``.
    """
    resolved = {}
    for ref in payload.get("weight_files", []):
        candidates = [Path(ref["path"])]
        if ref.get("bundled"):
            candidates.insert(0, source.parent / ref["bundled"])
        if weights_dir is not None:
            candidates.append(Path(weights_dir) / Path(ref["path"]).name)
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise ScoringError(
                f"{source}: the model's {ref['slot']} loads the weight file '{ref['path']}' "
                f"(sha256 {ref['sha256'][:12]}…), which is neither beside the checkpoint "
                f"({ref.get('bundled') or 'not bundled: an older checkpoint'}) nor at that path. "
                "Copy the checkpoint with its run folder, or pass --weights-dir with a folder "
                f"holding {Path(ref['path']).name}; a stand-in backbone is rebuilt with "
                f"`snakemake {ref['path']}`."
            )
        if file_sha256(found) != ref["sha256"]:
            raise ScoringError(
                f"{source}: {found} is not the weight file the model was trained with "
                f"(sha256 differs from {ref['sha256'][:12]}…)"
            )
        resolved[ref["path"]] = str(found)
    return resolved


def _replace_paths(entry: Any, paths: dict[str, str]) -> Any:
    if isinstance(entry, dict):
        return {k: _replace_paths(v, paths) for k, v in entry.items()}
    return paths.get(entry, entry) if isinstance(entry, str) else entry


def _seed(seed: int) -> None:
    # The fold job seeds before building: randomly initialised frozen weights come out the same.
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_from_checkpoint(
    payload: dict, source: Path, weights_dir: str | Path | None = None
) -> AgiqaModel:
    """The trained model of a checkpoint, on the CPU, in eval mode, its frozen weights checked."""
    from agiqa.models import build_model

    entry = dict(payload["model"]["entry"])
    entry.pop("display_name", None)
    entry = _replace_paths(entry, resolve_weight_files(payload, weights_dir, source))
    dimensions = dimensions_of(payload)
    _seed(int(payload.get("seed", 0)))
    try:
        model = build_model(entry, dimensions)
    except ConfigError as error:
        raise ScoringError(f"{source}: the model entry inside cannot be built: {error}") from None
    built = model.state_dict()
    missing = [k for k in payload["trained_state"] if k not in built]
    if missing:
        raise ScoringError(f"{source}: parameters {missing[:5]} do not exist in the built model")
    shapes = [
        f"{key} {tuple(value.shape)} (the model's is {tuple(built[key].shape)})"
        for key, value in payload["trained_state"].items()
        if tuple(value.shape) != tuple(built[key].shape)
    ]
    if shapes:
        raise ScoringError(
            f"{source}: trained parameters of the wrong shape for the model its entry builds: "
            f"{'; '.join(shapes[:3])}; the checkpoint was damaged or edited"
        )
    model.load_state_dict(payload["trained_state"], strict=False)
    found = frozen_fingerprint(model, set(payload["trained_state"]))
    if found["sha256"] != payload["frozen"]["sha256"]:
        raise ScoringError(
            f"{source}: the frozen weights loaded here differ from those the model was trained "
            f"with ({found['tensors']} tensors, sha256 {found['sha256'][:12]}…, expected "
            f"{payload['frozen']['sha256'][:12]}…): another backbone release or cache?"
        )
    return model.eval()


def dimensions_of(payload: dict) -> tuple[Dimension, ...]:
    return tuple(
        Dimension(d["name"], d["kind"], float(d["low"]), float(d["high"]))
        for d in payload["dimensions"]
    )


# --- images and prompts -----------------------------------------------------------------------


def decode(image: Source, name: str, short_side: int | None) -> Image.Image:
    """8-bit RGB shrunk to ``short_side``, as the fold job's decoded-image cache holds it.

    A path goes through the job's own ``load_shrunk`` (a large JPEG is decoded at reduced
    scale, then resized), so its pixels are the job's. A PIL image is converted and resized
    from its full decode: for a JPEG larger than ``short_side`` that differs by a few grey
    levels, so pass paths to reproduce a fold's predictions exactly.
    """
    from agiqa.train.data import load_shrunk, shrink

    if isinstance(image, Image.Image):
        try:
            return shrink(to_rgb(image), short_side)
        except UnsupportedImage as error:
            raise ScoringError(f"image {name}: {error}") from None
    try:
        return load_shrunk(Path(image), short_side, manifest="scoring input", row=None)
    except AgiqaError as error:
        raise ScoringError(str(error)) from None


def expand_images(paths: Sequence[str | Path]) -> list[Path]:
    """Files as given, and the image files of any folder (sorted by name)."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            found.append(path)
        else:
            raise ScoringError(f"{path}: no such image file or folder")
    if not found:
        raise ScoringError(f"no images in {[str(p) for p in paths]}")
    return found


def prompts_from_csv(path: str | Path, images: Sequence[Path]) -> tuple[list[str], list[str]]:
    """Prompts (and descriptions, "" where none) of ``images`` from a table with columns
    ``image``, ``prompt`` and optionally ``description`` (a UTF-8 CSV, or an .xlsx sheet).

    A row matches an image by its path, normalised as the dataset readers do (``./a.png``,
    ``sub\\a.png``, ``sub/../a.png``), as given or absolute; or by a bare file name when exactly
    one of the images has that name.

    Raises:
        ScoringError, DataError: naming the file (and row): a missing, empty, binary, non-UTF-8
            or malformed file; a missing column; an empty prompt; two rows for one image; a file
            name that several images share; an image without a row.
    """
    from agiqa.data.readers._common import read_rows, table_with_header, text_column

    path = Path(path)
    if not path.is_file():
        raise ScoringError(f"{path}: no such prompts file")
    raw = read_rows(path)  # DataError naming the row: not UTF-8, binary, bad quoting
    header = [str(cell).strip() for cell in raw[0][1]] if raw else []
    described = "description" in header
    table = table_with_header(path, ["image", "prompt", *(["description"] * described)], raw)
    names = text_column(table, "image")
    prompts = text_column(table, "prompt")  # an empty prompt is an error, never a prompt ""
    notes = text_column(table, "description", allow_empty=True) if described else None
    index = {key: position for position, key in enumerate(map(_path_key, names))}
    if len(index) < len(names):
        _refuse_duplicate_rows(path, names, table.rows)
    chosen = [_row_of(image, index, images, path) for image in images]
    return (
        [prompts[i] for i in chosen],
        [notes[i] if notes is not None else "" for i in chosen],
    )


def _path_key(name: str) -> str:
    """A path as the readers compare names: ``/`` separators, no ``.`` or ``a/..`` segments."""
    return posixpath.normpath(str(name).strip().replace("\\", "/"))


def _refuse_duplicate_rows(path: Path, names: list[str], rows: list[int]) -> None:
    seen: dict[str, list[int]] = {}
    for name, row in zip(names, rows, strict=True):
        seen.setdefault(_path_key(name), []).append(row)
    key, lines = next((k, r) for k, r in seen.items() if len(r) > 1)
    raise ScoringError(
        f"{path}: image '{key}' has {len(lines)} rows ({', '.join(map(str, lines))}); give each "
        "image one row (which prompt would be right is not for the scorer to guess)"
    )


def _row_of(image: Path, index: dict[str, int], images: Sequence[Path], path: Path) -> int:
    for key in (_path_key(str(image)), _path_key(os.path.abspath(image))):
        if key in index:
            return index[key]
    if image.name in index:
        namesakes = [str(other) for other in images if other.name == image.name]
        if len(namesakes) > 1:
            raise ScoringError(
                f"{path}: the row for '{image.name}' (by file name) matches {len(namesakes)} "
                f"images ({', '.join(namesakes[:3])}); write their paths in the image column"
            )
        return index[image.name]
    raise ScoringError(f"{path}: no row for image '{image}' (by its path or file name)")


def _per_image(
    value: str | Sequence[str] | None, n: int, what: str, blank_ok: bool = False
) -> list[str] | None:
    """One text per image; None when no text is given. A missing entry (None, NaN, not a
    string) or, for prompts, a blank one is an error: never scored as the text "None"."""
    if value is None:
        return None
    values = [value] * n if isinstance(value, str) else list(value)
    if len(values) != n:
        raise ScoringError(f"{len(values)} {what} for {n} images")
    expected = 'a string ("" for none)' if blank_ok else f"a non-empty string, or {what}=None"
    for position, text in enumerate(values):
        if not isinstance(text, str) or (not blank_ok and not text.strip()):
            raise ScoringError(f"{what}[{position}] is {text!r}: give {expected}")
    return values


class _Decoded:
    """The image source a model's dataset reads: images already decoded in memory."""

    def __init__(self, names: list[str], images: DecodedImages) -> None:
        self.paths = names
        self.images = images

    def load(self, index: int) -> Image.Image:
        return self.images[index]


# --- the scorer -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scale:
    """A dimension's native score range, as pyiqa metrics expose theirs."""

    low: float
    high: float
    #: MOS dimensions rate higher = better; the flag is here so callers need not know that.
    lower_better: bool = False


@dataclass
class Scorer:
    """A trained model (or the folds' ensemble) that scores images on the native scales.

    Use ``agiqa.load`` to make one. Call it like a pyiqa metric: ``scorer(images)`` returns a
    tensor of scores; ``scorer.score(images)`` returns a table with the image names.
    """

    model: AgiqaModel
    states: list[dict[str, torch.Tensor]]
    members: list[Path]
    dimensions: tuple[Dimension, ...]
    short_side: int | None
    batch_size: int
    device: torch.device
    amp: torch.dtype | None
    model_name: str

    @property
    def ensemble(self) -> bool:
        return len(self.members) > 1

    @property
    def dimension_names(self) -> list[str]:
        """The dimensions scored, in the order of the score tensor's columns."""
        return [d.name for d in self.dimensions]

    @property
    def scales(self) -> dict[str, Scale]:
        """Each dimension's native score range and direction."""
        return {d.name: Scale(float(d.low), float(d.high)) for d in self.dimensions}

    @property
    def score_range(self) -> dict[str, tuple[float, float]]:
        """Each dimension's (lowest, highest) possible score."""
        return {name: (scale.low, scale.high) for name, scale in self.scales.items()}

    @property
    def lower_better(self) -> bool:
        """False: a higher score means a better image on every dimension (MOS)."""
        return any(scale.lower_better for scale in self.scales.values())

    def describe(self) -> str:
        """One line saying what scores: a checkpoint, or an average of N fold checkpoints."""
        if not self.ensemble:
            return f"{self.model_name} ({self.members[0]})"
        folder = self.members[0].parent.parent
        splits = ", ".join(m.parent.name for m in self.members)
        return (
            f"{self.model_name}, the average of {len(self.members)} fold checkpoints "
            f"({splits}) in {folder}"
        )

    def __call__(
        self,
        images: ImageInput | Sequence[ImageInput],
        prompts: str | Sequence[str] | None = None,
        descriptions: str | Sequence[str] | None = None,
        batch_size: int | None = None,
        dimension: str | None = None,
    ) -> torch.Tensor:
        """Scores as a float64 CPU tensor of shape (N, D), columns in ``dimension_names`` order;
        with ``dimension``, that dimension's column, shape (N,).

        Takes what ``score`` takes; N counts every image, a batch tensor's included.
        """
        table = self.score(images, prompts, descriptions, batch_size)
        if dimension is not None:
            if dimension not in self.dimension_names:
                raise ScoringError(
                    f"dimension '{dimension}': this model scores {self.dimension_names}"
                )
            return torch.from_numpy(table[dimension].to_numpy(np.float64, copy=True))
        return torch.from_numpy(table[self.dimension_names].to_numpy(np.float64, copy=True))

    def score(
        self,
        images: ImageInput | Sequence[ImageInput],
        prompts: str | Sequence[str] | None = None,
        descriptions: str | Sequence[str] | None = None,
        batch_size: int | None = None,
    ) -> pd.DataFrame:
        """One row per image: ``image`` and one column per dimension on its native scale.

        Args:
            images: One image or a list of them: paths, PIL images, torch tensors (C x H x W or
                a batch N x C x H x W, floats in [0, 1] or uint8) or numpy arrays (H x W x C or
                N x H x W x C); see agiqa.score_inputs.
            prompts: The generation prompt, one for all images or one per image. Without it,
                dimensions of kind ``alignment`` or ``overall`` (which need the prompt) are NaN
                and models that read the prompt see an empty one.
            descriptions: VLM descriptions for models that read them (one or one per image).
            batch_size: Images per forward pass (default: the model's ``eval_batch_size``).
        """
        sources, names = as_sources(images)
        batch = positive_batch_size(self.batch_size if batch_size is None else batch_size)
        texts = _per_image(prompts, len(sources), "prompts")
        notes = _per_image(descriptions, len(sources), "descriptions", blank_ok=True)
        chunks = []
        for start in range(0, len(sources), CHUNK_IMAGES):
            stop = start + CHUNK_IMAGES
            chunks.append(
                self._predict(
                    sources[start:stop],
                    names[start:stop],
                    texts[start:stop] if texts else None,
                    notes[start:stop] if notes else None,
                    batch,
                )
            )
        return self._table(names, np.concatenate(chunks), prompts_given=texts is not None)

    def _predict(
        self,
        images: list[Source],
        names: list[str],
        prompts: list[str] | None,
        descriptions: list[str] | None,
        batch_size: int,
    ) -> np.ndarray:
        """Normalised predictions, [len(images), len(dimensions)], averaged over members."""
        from agiqa.models.base import PartData
        from agiqa.train.data import DecodedImages

        decoded = DecodedImages(
            [
                np.asarray(decode(image, name, self.short_side))
                for image, name in zip(images, names, strict=True)
            ]
        )
        frame = pd.DataFrame({"image": names, "prompt": prompts or [""] * len(images)})
        if type(self.model).uses_descriptions:
            descriptions = descriptions or [""] * len(images)
        else:
            descriptions = None
        targets = np.zeros((len(images), len(self.dimensions)), dtype=np.float32)
        data = PartData(
            "score", frame, _Decoded(names, decoded), targets, descriptions, decoded, None
        )
        dataset = self.model.make_dataset(data, train=False)
        loader = DataLoader(
            dataset, batch_size=batch_size, shuffle=False, collate_fn=self.model.collate
        )
        total = np.zeros((len(images), len(self.dimensions)), dtype=np.float64)
        for state in self.states:
            self.model.load_state_dict(state, strict=False)
            total += self._forward(loader, len(images))
        return total / len(self.states)

    @torch.no_grad()
    def _forward(self, loader: DataLoader, n_rows: int) -> np.ndarray:
        # The fold trainer's predict, step by step: same hooks, same clipping.
        from agiqa.train import recipe

        self.model.eval()
        outputs, rows = [], []
        for inputs, _, index in loader:
            with recipe.autocast(self.amp, self.device):
                pred = self.model.forward_batch(_to(inputs, self.device))
            outputs.append(pred.float().cpu().numpy())
            rows.append(np.asarray(index))
        predictions = self.model.reduce_predictions(
            np.concatenate(outputs), np.concatenate(rows), n_rows
        )
        if np.isnan(predictions).any():
            raise ScoringError(f"{type(self.model).__name__} left images without a prediction")
        return np.clip(predictions, 0.0, 1.0)

    def _table(self, names: list[str], normalised: np.ndarray, prompts_given: bool) -> pd.DataFrame:
        table = pd.DataFrame({"image": names})
        for column, dim in enumerate(self.dimensions):
            values = dim.denormalise(normalised[:, column].astype(np.float64))
            if not prompts_given and dim.kind != "quality":
                values = np.full(len(names), np.nan)  # needs the prompt it was generated from
            table[dim.name] = values
        return table


def _to(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to(v, device) for v in value)
    return value


def _same_model(payloads: list[dict], members: list[Path]) -> None:
    """An ensemble averages folds of one configuration: same entry, dimensions, frozen weights."""
    first = payloads[0]
    for payload, member in zip(payloads[1:], members[1:], strict=True):
        for key in ("model", "dimensions", "preprocessing", "frozen"):
            if payload[key] != first[key]:
                raise ScoringError(
                    f"{member}: its {key} differs from {members[0]}'s; an ensemble averages the "
                    "folds of one model configuration"
                )


def _check_decoder(preprocessing: dict, source: Path) -> None:
    """Warn when this agiqa shrinks images differently from the one that trained the model."""
    from agiqa.train.data import SHRINK_DECODER

    recorded = preprocessing.get("decoder", SHRINK_DECODER)
    if preprocessing.get("short_side") is not None and recorded != SHRINK_DECODER:
        log.warning(
            "%s: trained with image decoder %s, scoring with %s: large images may score "
            "slightly differently",
            source,
            recorded,
            SHRINK_DECODER,
        )


def load(
    checkpoint: str | Path,
    device: str = "auto",
    weights_dir: str | Path | None = None,
    batch_size: int | None = None,
) -> Scorer:
    """A scorer from a checkpoint file, a run folder, or a protocol's model folder (ensemble).

    Args:
        checkpoint: ``checkpoint.pt``, its run folder, or ``runs/<protocol>/<dataset>/<model>``
            to average every fold's checkpoint.
        device: ``auto`` (a GPU when torch sees one, else the CPU), ``cpu``, ``cuda[:N]`` or
            ``mps``.
        weights_dir: A folder holding weight files the model names (stand-in backbones) when
            they are not at their recorded paths.
        batch_size: Images per forward pass (default: the model's ``eval_batch_size``).

    Raises:
        ScoringError: a checkpoint without the self-contained content, a missing or different
            weight file, frozen weights that differ from training's, an unknown device or a
            batch size that is not a positive integer.
    """
    if not isinstance(checkpoint, str | Path):
        raise ScoringError(f"checkpoint must be a path, got {type(checkpoint).__name__}")
    target = torch_device(device)
    if batch_size is not None:
        positive_batch_size(batch_size)
    members = checkpoint_files(checkpoint)
    payloads = [read_checkpoint(m) for m in members]
    _same_model(payloads, members)
    first = payloads[0]
    _check_decoder(first["preprocessing"], members[0])
    model = build_from_checkpoint(first, members[0], weights_dir)
    model.to(target)
    from agiqa.train import recipe

    train = first["model"]["entry"].get("train") or {}
    return Scorer(
        model=model,
        states=[p["trained_state"] for p in payloads],
        members=members,
        dimensions=dimensions_of(first),
        short_side=first["preprocessing"]["short_side"],
        batch_size=int(batch_size or train.get("eval_batch_size", 64)),
        device=target,
        amp=recipe.amp_dtype(train.get("amp", "bf16"), target),
        model_name=str(first["model"]["name"]),
    )
