"""The published backend: SCVA-AGIQA's descriptions, checksum-verified and mapped onto manifests."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from agiqa.data.readers import read_dataset
from agiqa.describe.backends import BackendContext
from agiqa.describe.backends.published import SOURCES, PublishedBackend
from agiqa.describe.runner import DescribeFailed, Describer, RunSettings, run_describe
from agiqa.describe.templates import TEMPLATES
from agiqa.errors import DataError
from test_describe_support import FIXTURES, table

pytestmark = pytest.mark.skipif(
    not FIXTURES.is_dir(),
    reason=f"metadata fixtures not found at {FIXTURES} (put shared/ beside the checkout)",
)
FILES = {
    "agiqa-1k": "agiqa-1k/scva-agiqa/AIGC-1K_answer.csv",
    "agiqa-3k": "agiqa-3k/scva-agiqa/data.csv",
    "aigciqa2023": "aigciqa2023/scva-agiqa/merged_output_aigciqa2023.csv",
}


def fixture_entry(dataset: str, tmp_path: Path) -> dict:
    """A published describer reading the fixture copy through a file:// URL."""
    return {
        "backend": "published",
        "url": (FIXTURES / FILES[dataset]).as_uri(),
        "sha256": SOURCES[dataset].sha256,
        "download_dir": str(tmp_path / "downloads"),
    }


def lookup(dataset: str, images: list[str], tmp_path: Path) -> dict[str, tuple[str, str, str]]:
    """image -> (status, description, error) through the runner, without a manifest."""
    entry = fixture_entry(dataset, tmp_path)
    entry.pop("backend")
    backend = PublishedBackend.from_config(entry, BackendContext(dataset, dataset))
    describer = Describer(backend, TEMPLATES["content_first"], RunSettings(), None)
    rows, _ = describer.run(images, dataset)
    return {r.image: (r.status, r.description, r.error) for r in rows}


def test_pinned_sources_match_the_fixture_checksums() -> None:
    for dataset, relative in FILES.items():
        data = (FIXTURES / relative).read_bytes()
        assert hashlib.sha256(data).hexdigest() == SOURCES[dataset].sha256
        assert len(data) == SOURCES[dataset].size
        assert SOURCES[dataset].url.startswith("https://raw.githubusercontent.com/mozhu1/")


def test_agiqa3k_manifest_gets_every_published_description(tmp_path: Path) -> None:
    manifest = read_dataset("agiqa-3k", FIXTURES / "agiqa-3k")
    manifest.save(tmp_path / "manifest.csv")
    out = tmp_path / "agiqa-3k.csv"
    summary = run_describe(
        fixture_entry("agiqa-3k", tmp_path),
        dataset="agiqa-3k",
        out=out,
        manifest=tmp_path / "manifest.csv",
        reader="agiqa-3k",
    )
    assert summary.total == 2982 and summary.described == 2982 and summary.requests == 0
    frame = table(out)
    assert list(frame["image"]) == list(manifest.frame["image"])
    first = frame.iloc[0]
    assert first["image"] == "AttnGAN_normal_000.jpg"
    assert first["description"].startswith("A distorted, abstract - like figure")
    assert not first["description"].endswith(" ")
    assert set(frame["model"]) == {"doubao-1-5-vision-pro-32k-250115"}
    assert set(frame["template"]) == {"scva_published"}


def test_agiqa1k_maps_names_under_file_and_reports_missing_and_ambiguous(tmp_path: Path) -> None:
    root = tmp_path / "agiqa-1k"
    root.mkdir()
    shutil.copy(FIXTURES / "agiqa-1k" / "ipce" / "all.csv", root / "AIGC_MOS_Zscore.csv")
    manifest = read_dataset("agiqa-1k", root)
    result = lookup("agiqa-1k", list(manifest.frame["image"]), tmp_path)
    assert len(result) == 1078
    assert all(status == "described" for status, _, _ in result.values())
    assert result["file/deepai_0_0_0_0.jpg"][1].startswith("The cockpit of an aircraft")

    extra = lookup(
        "agiqa-1k", ["file/dreamStudio_8_9_1_1.jpg", "file/dreamStudio_8_5_0_0.jpg"], tmp_path
    )
    ambiguous, missing = (
        extra["file/dreamStudio_8_9_1_1.jpg"],
        extra["file/dreamStudio_8_5_0_0.jpg"],
    )
    assert ambiguous[0] == "failed" and "2 different published descriptions" in ambiguous[2]
    assert missing[0] == "failed" and "no published description" in missing[2]
    assert ambiguous[1] == missing[1] == ""


def test_aigciqa2023_maps_backslash_names_to_per_model_and_flat_paths(tmp_path: Path) -> None:
    result = lookup(
        "aigciqa2023",
        ["Image/Controlnet/000-1.png", "Image/allimg/0.png", "Image/Unidiffuser/099-4.png"],
        tmp_path,
    )
    per_model, flat, last = (result[k] for k in result)
    assert per_model[0] == "described" and per_model[1].startswith("A detailed corgi figurine")
    assert flat == per_model
    assert last[0] == "described"
    assert (
        lookup("aigciqa2023", ["Image/allimg/2399.png"], tmp_path)["Image/allimg/2399.png"] == last
    )


def test_a_checksum_mismatch_stops_and_keeps_nothing(tmp_path: Path) -> None:
    entry = fixture_entry("agiqa-3k", tmp_path)
    entry["sha256"] = "0" * 64
    with pytest.raises(DataError, match="sha256 mismatch"):
        run_describe(
            entry, dataset="agiqa-3k", out=tmp_path / "out.csv", root=FIXTURES / "agiqa-3k"
        )
    downloads = tmp_path / "downloads"
    assert not downloads.exists() or not any(downloads.iterdir())
    assert not (tmp_path / "out.csv").exists()


def test_a_mirror_base_url_serves_every_dataset_with_the_pinned_checksums(tmp_path: Path) -> None:
    """One ``base_url`` (a mirror of the repository at the pinned commit) for all three files,
    as the paper rehearsal's local stand-in for raw.githubusercontent.com uses it."""
    mirror = tmp_path / "mirror"
    for dataset, relative in FILES.items():
        target = mirror / SOURCES[dataset].path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(FIXTURES / relative, target)
    entry = {"base_url": mirror.as_uri() + "/", "download_dir": str(tmp_path / "downloads")}
    for dataset in FILES:
        backend = PublishedBackend.from_config(dict(entry), BackendContext(dataset, dataset))
        assert backend.table
    assert len(list((tmp_path / "downloads").iterdir())) == len(FILES)
    # a mirror file with other bytes is refused: the sha256 stays pinned
    (mirror / SOURCES["agiqa-3k"].path).write_text("name,answer\nx.jpg,tampered\n")
    entry["download_dir"] = str(tmp_path / "elsewhere")
    with pytest.raises(DataError, match="sha256 mismatch"):
        PublishedBackend.from_config(entry, BackendContext("agiqa-3k", "agiqa-3k"))


def test_a_verified_download_is_reused_and_a_corrupt_one_replaced(tmp_path: Path) -> None:
    source = tmp_path / "mirror.csv"
    shutil.copy(FIXTURES / FILES["agiqa-3k"], source)
    entry = {**fixture_entry("agiqa-3k", tmp_path), "url": source.as_uri()}
    entry.pop("backend")
    PublishedBackend.from_config(entry, BackendContext("agiqa-3k", "agiqa-3k"))
    (kept,) = (tmp_path / "downloads").iterdir()
    source.unlink()  # no network needed any more
    PublishedBackend.from_config(entry, BackendContext("agiqa-3k", "agiqa-3k"))
    kept.write_text("tampered")
    with pytest.raises(DataError, match="cannot download"):
        PublishedBackend.from_config(entry, BackendContext("agiqa-3k", "agiqa-3k"))
    assert not kept.exists()


def test_error_literals_and_empty_answers_are_failures_not_descriptions(tmp_path: Path) -> None:
    crafted = tmp_path / "answers.csv"
    crafted.write_text(
        'name,prompt,answer\na.jpg,p,"A red car on a road. "\nb.jpg,p,Error\nc.jpg,p,"  "\n',
        encoding="utf-8",
    )
    digest = hashlib.sha256(crafted.read_bytes()).hexdigest()
    out = tmp_path / "out.csv"
    entry = {
        "backend": "published",
        "source": "agiqa-3k",
        "url": crafted.as_uri(),
        "sha256": digest,
        "download_dir": str(tmp_path / "downloads"),
        "allow_failed_fraction": 0.5,
    }
    images_root = tmp_path / "ds"
    images_root.mkdir()
    header = "name,prompt,adj1,adj2,style,mos_quality,std_quality,mos_align,std_align\n"
    rows = "".join(f"{n}.jpg,p,,,,1.0,0.3,2.0,0.4\n" for n in "abcd")
    (images_root / "data.csv").write_text(header + rows)
    with pytest.raises(DescribeFailed, match="3 of 4 images failed"):
        run_describe(entry, dataset="mine", out=out, root=images_root, reader="agiqa-3k")
    frame = table(out).set_index("image")
    assert frame.loc["a.jpg", "description"] == "A red car on a road."
    assert "failure message ('Error'" in frame.loc["b.jpg", "error"]
    assert "description is empty" in frame.loc["c.jpg", "error"]
    assert "no published description" in frame.loc["d.jpg", "error"]
    assert (frame.loc[["b.jpg", "c.jpg", "d.jpg"], "description"] == "").all()
