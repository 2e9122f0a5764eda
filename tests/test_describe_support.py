"""Helpers shared by the describe tests (no tests here): tiny datasets and CLI runs."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pandas as pd
from PIL import Image
from typer.testing import CliRunner

from agiqa.cli import app
from shared_data import FIXTURES, REPO  # noqa: F401 - REPO is imported from here by others

HEADER = "name,prompt,adj1,adj2,style,mos_quality,std_quality,mos_align,std_align\n"
SECRET = "sk-test-DO-NOT-LEAK-4f1c2b9e77a0"
KEY_ENV = "AGIQA_TEST_API_KEY"
runner = CliRunner()


def image_bytes(index: int, fmt: str) -> bytes:
    """A small image whose content (hence sha256) differs per index."""
    buffer = io.BytesIO()
    colour = (index * 37 % 256, index * 91 % 256, index * 53 % 256)
    Image.new("RGB", (16, 12), colour).save(buffer, format=fmt)
    return buffer.getvalue()


def make_dataset(root: Path, n: int) -> dict[str, str]:
    """An AGIQA-3K-layout dataset of ``n`` images; returns name -> sha256 of the file.

    Every third image is a PNG saved under a ``.jpg`` name, so the true MIME type differs from
    the extension.
    """
    root.mkdir(parents=True, exist_ok=True)
    rows, digests = [], {}
    for i in range(n):
        name = f"gen_normal_{i:03d}.jpg"
        data = image_bytes(i, "PNG" if i % 3 == 0 else "JPEG")
        (root / name).write_bytes(data)
        digests[name] = hashlib.sha256(data).hexdigest()
        rows.append(f"{name},prompt {i // 2},,,,{1 + i % 3}.5,0.3,2.0,0.4\n")
    (root / "data.csv").write_text(HEADER + "".join(rows))
    return digests


def describe_args(root: Path, tmp: Path, base_url: str, *extra: str) -> list[str]:
    """``agiqa describe`` arguments for the openai backend against a local server."""
    return [
        "describe",
        "--dataset",
        "tiny",
        "--reader",
        "agiqa-3k",
        "--root",
        str(root),
        "--backend",
        "openai",
        "--base-url",
        base_url,
        "--model",
        "fake-vlm",
        "--api-key-env",
        KEY_ENV,
        "--cache-dir",
        str(tmp / "cache"),
        "--out",
        str(tmp / "out.csv"),
        "--timeout",
        "0.5",
        "-o",
        "backoff_base=0.01",
        "-o",
        "backoff_max=0.05",
        *extra,
    ]


def invoke(args: list[str], key: str | None = SECRET):
    """Run ``agiqa`` in-process with the API key (or none) in the environment."""
    return runner.invoke(app, args, env={KEY_ENV: key})


def table(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def cache_files(cache: Path) -> list[Path]:
    return sorted(cache.glob("*/*.json")) if cache.is_dir() else []
