"""The descriptions released with SCVA-AGIQA, mapped onto our manifests.

SCVA-AGIQA (``mozhu1/SCVA-AGIQA``) ships the Doubao descriptions of AGIQA-1K, AGIQA-3K and
AIGCIQA2023 inside its data CSVs (column ``answer``). Each file is downloaded once from a pinned
commit, checked against its sha256 (a mismatch keeps nothing and stops the job) and kept under
``download_dir``. Names are mapped onto manifest image paths:

- AGIQA-1K ``AIGC-1K_answer.csv``: ``name`` -> ``file/<name>``;
- AGIQA-3K ``data.csv``: ``name`` -> ``<name>``;
- AIGCIQA2023 ``merged_output_aigciqa2023.csv``: ``Controlnet\\000-1.png`` ->
  ``Image/Controlnet/000-1.png`` and the flat copy ``Image/allimg/<row>.png``.

A manifest path under an ``images`` sub-folder (a reader option) maps through its longest tail
that is one of these names: ``ACGIQA-3K/<name>`` -> ``<name>``.

A manifest image with no published description, an empty answer, or two different answers
under one name is reported as failed, never left silently empty. SCVA's failure literal
``Error`` is returned as the reply and rejected by the runner's failure patterns
(``describe/failures.py``), like a failure message from any other backend; being a table
lookup, such a failure is not retried. Images are not read: this backend bypasses the request
cache.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pandas as pd

from agiqa.describe.backends.base import (
    BACKENDS,
    Backend,
    BackendContext,
    ImageItem,
    PermanentError,
    Reply,
)
from agiqa.describe.templates import Template
from agiqa.errors import ConfigError, DataError

log = logging.getLogger("agiqa.describe")

COMMIT = "9e9da8b724ff8de91a8269c0bf2c9f160f9657d5"
BASE_URL = f"https://raw.githubusercontent.com/mozhu1/SCVA-AGIQA/{COMMIT}/"
PUBLISHED_MODEL = "doubao-1-5-vision-pro-32k-250115"
AIGCIQA2023_MODELS = ("Controlnet", "DALLE", "Glide", "Lafite", "stable-diffusion", "Unidiffuser")
AIGCIQA2023_NAME = re.compile(r"^(?P<model>[^/]+)/(?P<prompt>\d{3})-(?P<k>\d+)\.png$")


@dataclass(frozen=True)
class PublishedSource:
    """One published file: where it is, its checksum and how its names become image paths."""

    dataset: str
    path: str
    sha256: str
    size: int

    @property
    def url(self) -> str:
        return BASE_URL + self.path


SOURCES: dict[str, PublishedSource] = {
    s.dataset: s
    for s in (
        PublishedSource(
            "agiqa-1k",
            "AGIQA-1K/AIGC-1K_answer.csv",
            "40c19836a31a3d07dd3ad7f61824962fc259c23fd3ccb813eb2c0aa99fba8bbd",
            283_961,
        ),
        PublishedSource(
            "agiqa-3k",
            "AGIQA-3K/data.csv",
            "3bc556d5f65428c139568e53f71dfdbe0d7da4cef5aed8e75cf998f27e2f3975",
            1_041_356,
        ),
        PublishedSource(
            "aigciqa2023",
            "AIGCIQA2023/merged_output_aigciqa2023.csv",
            "4dcc8385e3ea82927d72e7c68814cfcea6f36c2d05292a310e8c6f6e01939fec",
            693_079,
        ),
    )
}


@dataclass(frozen=True)
class PublishedOptions:
    """Config keys of the ``published`` backend.

    Attributes:
        source: Which published table (``agiqa-1k``, ``agiqa-3k``, ``aigciqa2023``); default:
            the dataset's reader, then the dataset name.
        url: Override of the download URL (a mirror, or a ``file://`` URL of a local copy).
        sha256: Override of the expected checksum (only together with ``url``).
        base_url: A mirror of the repository at the pinned commit (``http://``, ``file://``):
            each dataset's file is read from ``base_url`` + its path there, and must still have
            the pinned sha256; one setting serves every dataset, unlike ``url``.
        download_dir: Where verified downloads are kept.
        model: Label of the model in the output table.
    """

    source: str | None = None
    url: str | None = None
    sha256: str | None = None
    base_url: str | None = None
    download_dir: str = "resources/published_descriptions"
    model: str = PUBLISHED_MODEL

    def __post_init__(self) -> None:
        if self.sha256 is not None and self.url is None:
            raise ValueError("sha256 can only be overridden together with url")


@BACKENDS.register("published")
class PublishedBackend(Backend):
    """SCVA-AGIQA's released descriptions, looked up by image path."""

    Options = PublishedOptions
    needs_image = False
    cacheable = False
    fixed_template = "scva_published"
    repeatable = True  # a table lookup: asking again gives the same text
    # Every file is checked against its sha256 (pinned, or `sha256:` beside `url:`).
    location_options = frozenset({"url", "base_url", "download_dir"})

    def __init__(self, options: PublishedOptions, context: BackendContext) -> None:
        super().__init__(options, context)
        self.source = source_for(options, context)
        url = options.url or self.source.url
        if options.base_url and not options.url:
            url = options.base_url.rstrip("/") + "/" + self.source.path
        expected = options.sha256 or self.source.sha256
        path = fetch_verified(url, expected, Path(options.download_dir), self.source)
        self.table, self.problems = load_descriptions(path, self.source.dataset)

    def describe(self, item: ImageItem, template: Template) -> Reply:
        name = self.published_name(item.image)
        problem = self.problems.get(name)
        if problem:
            raise PermanentError(problem)
        text = self.table.get(name)
        if text is None:
            raise PermanentError(f"no published description for this image ({self.source.path})")
        return Reply(text=text, model=self.options.model)

    def published_name(self, image: str) -> str:
        """The table's name for a manifest path: the path, or its longest tail the table knows.

        A reader's ``images`` option puts the images' sub-folder in front of every manifest path
        (``ACGIQA-3K/AttnGAN_normal_000.jpg``), which the published names do not carry.
        """
        parts = image.split("/")
        tails = ("/".join(parts[start:]) for start in range(len(parts)))
        return next((t for t in tails if t in self.table or t in self.problems), image)


def source_for(options: PublishedOptions, context: BackendContext) -> PublishedSource:
    for name in (options.source, context.reader, context.dataset):
        if name and name in SOURCES:
            return SOURCES[name]
    if options.source:
        raise ConfigError(
            f"no published descriptions for source '{options.source}' "
            f"(known: {', '.join(sorted(SOURCES))})"
        )
    raise ConfigError(
        f"no published descriptions for dataset '{context.dataset}' (reader "
        f"'{context.reader}'); known: {', '.join(sorted(SOURCES))}; set 'source' to pick one"
    )


def fetch_verified(url: str, sha256: str, download_dir: Path, source: PublishedSource) -> Path:
    """The verified local copy of ``url``, downloading it when no verified copy exists.

    Raises:
        DataError: When the bytes do not have the expected sha256 (nothing is kept).
    """
    target = download_dir / f"{sha256[:16]}-{PurePosixPath(source.path).name}"
    if target.is_file():
        if _sha256(target.read_bytes()) == sha256:
            return target
        log.warning("cached download %s fails its checksum; downloading again", target)
        target.unlink()
    log.info("downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=120) as response:
            data = response.read()
    except OSError as error:
        raise DataError(f"cannot download published descriptions: {error}", file=url) from None
    actual = _sha256(data)
    if actual != sha256:
        raise DataError(
            f"sha256 mismatch: expected {sha256}, got {actual} ({len(data):,} bytes); "
            "the file was not kept",
            file=url,
        )
    download_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=download_dir, delete=False, suffix=".tmp") as file:
        file.write(data)
    Path(file.name).replace(target)
    return target


def load_descriptions(path: Path, dataset: str) -> tuple[dict[str, str], dict[str, str]]:
    """(image path -> description, image path -> reason it has none) of a published file."""
    frame = pd.read_csv(
        io.BytesIO(path.read_bytes()), dtype=str, keep_default_na=False, encoding="utf-8"
    )
    for column in ("name", "answer"):
        if column not in frame.columns:
            raise DataError(f"published file has no '{column}' column", file=path)
    answers: dict[str, set[str]] = {}
    for position, (name, answer) in enumerate(zip(frame["name"], frame["answer"], strict=True)):
        for image in image_paths(dataset, name, position, path):
            answers.setdefault(image, set()).add(answer.strip())
    table: dict[str, str] = {}
    problems: dict[str, str] = {}
    for image, texts in answers.items():
        if len(texts) > 1:
            problems[image] = f"{len(texts)} different published descriptions under one name"
        elif not (text := next(iter(texts))):
            problems[image] = "published description is empty"
        else:
            table[image] = text
    return table, problems


def image_paths(dataset: str, name: str, position: int, path: Path) -> list[str]:
    """The manifest image path(s) a published name stands for."""
    name = name.strip()
    if dataset == "agiqa-1k":
        return [f"file/{name}"]
    if dataset == "agiqa-3k":
        return [name]
    match = AIGCIQA2023_NAME.match(name.replace("\\", "/"))
    if not match or match["model"] not in AIGCIQA2023_MODELS:
        raise DataError(f"unexpected AIGCIQA2023 name '{name}'", file=path, row=position + 2)
    model, prompt, k = match["model"], int(match["prompt"]), int(match["k"])
    row = AIGCIQA2023_MODELS.index(model) * 400 + prompt * 4 + (k - 1)
    return [f"Image/{model}/{prompt:03d}-{k}.png", f"Image/allimg/{row}.png"]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
