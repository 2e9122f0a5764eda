"""Where each dataset comes from: one :class:`Source` per metadata file or image archive.

Metadata files are fetched from GitHub raw URLs at pinned commits, with the sha256 listed in
``docs/datasets.md`` (section 8). The image archives' sha256 are NOT known yet (their hosts could
not be reached when this table was written): they are ``None``, and an archive without a pinned
sha256 is never extracted until someone pins one (``--sha256`` or the config's ``download``
section). Archive file names and their inner folders are unverified too; extraction drops one
single wrapping folder automatically, so both ``AGIQA-3K/x.jpg`` and ``x.jpg`` land at the root.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from agiqa.describe.credentials import url_credentials
from agiqa.errors import ConfigError

# Where archives for hosts that need a login or a browser must be put by hand.
DOWNLOADS_DIR = "resources/downloads"
DOWNLOAD_CREDENTIALS_HINT = (
    "Download the archive yourself and put it in resources/downloads/ under its file name (the "
    "next run verifies and extracts it), or use a URL without user info or tokens"
)


@dataclass(frozen=True)
class Source:
    """One file to fetch for a dataset.

    Attributes:
        url: direct download URL (or, for a manual source, the page to open in a browser).
        filename: name of the downloaded file in the downloads folder.
        sha256: expected sha256 in hex, or None when not known yet (archives then refuse).
        kind: ``archive`` is extracted, ``file`` is copied as is.
        extract_to: sub-folder of the dataset root that receives the file or the archive content.
        strip_components: wrapping folders to drop; None drops one single top-level folder.
        manual: True for hosts that need a login or a browser (Baidu, Quark, Terabox).
        manual_instructions: what to do by hand (host URLs, extraction codes).
    """

    url: str
    filename: str
    sha256: str | None = None
    kind: Literal["archive", "file"] = "file"
    extract_to: str = ""
    strip_components: int | None = None
    manual: bool = False
    manual_instructions: str = ""


def github_raw(repo: str, commit: str, path: str) -> str:
    return f"https://raw.githubusercontent.com/{repo}/{commit}/{path}"


def gdrive(file_id: str) -> str:
    """The direct-download form of a Google Drive share link (small files only, see download)."""
    return f"https://drive.google.com/uc?export=download&id={file_id}"


AGIQA_1K_COMMIT = "7a8d9f23c1426b4466d713a91c5a7a0a7a716eae"
AGIQA_3K_COMMIT = "30ded2bed96fc78070636548e811ece37e5d8f66"
IPCE_COMMIT = "10642fc2f756090d79e1f6a4b305639152f84dbb"
CHAMPION_COMMIT = "cc8c4302ca666ac41b18a7fdd3aaae9cf5a596a6"
CHAMPION_REPO = "woshidandan/Champion-Solution-for-CVPR-NTIRE-2024-Quality-Assessment-on-AIGC"

SOURCES: dict[str, tuple[Source, ...]] = {
    "agiqa-1k": (
        Source(
            url=github_raw("lcysyzxdxc/AGIQA-1k-Database", AGIQA_1K_COMMIT, "AIGC_MOS_Zscore.xlsx"),
            filename="AIGC_MOS_Zscore.xlsx",
            sha256="83706b6e46314feffd9ba5e48eba31e6585f7f5056f15cb38166b8b53e2b3323",
        ),
        Source(
            url=gdrive("158uTLMnxGlzYA11r5jOtXFAWAG_4sjia"),
            filename="file.zip",
            kind="archive",
            extract_to="file",
            manual_instructions=(
                "Google Drive: https://drive.google.com/file/d/158uTLMnxGlzYA11r5jOtXFAWAG_4sjia"
                "/view  or Baidu: https://pan.baidu.com/s/1n_-_9WPCDf8nlVeQ6OwIDg (code AIGC)"
            ),
        ),
    ),
    "agiqa-3k": (
        Source(
            url=github_raw("lcysyzxdxc/AGIQA-3k-Database", AGIQA_3K_COMMIT, "data.csv"),
            filename="data.csv",
            sha256="4b1945c2137e196d9378b9cf4a114de2267b97a4724f0743e260287eb2ddd6c0",
        ),
        Source(
            url=gdrive("1ObuOZ6YZqZuxe4oRlaf3kdOBlTRg2GE4"),
            filename="AGIQA-3K.zip",
            kind="archive",
            manual_instructions=(
                "Google Drive: https://drive.google.com/file/d/1ObuOZ6YZqZuxe4oRlaf3kdOBlTRg2GE4"
                "/view  or Quark: https://pan.quark.cn/s/10187e65d5c1"
            ),
        ),
    ),
    # The .mat score files are only in the Baidu/Terabox archive (the Hugging Face copy has
    # allimg.zip and moz*.txt instead), so the full dataset is a manual step.
    "aigciqa2023": (
        Source(
            url="https://pan.baidu.com/s/1v85j6hKJcRcHm74FDTEosA",
            filename="AIGCIQA2023.zip",
            kind="archive",
            manual=True,
            manual_instructions=(
                "Baidu: https://pan.baidu.com/s/1v85j6hKJcRcHm74FDTEosA (code q9dt)  or Terabox:"
                " https://terabox.com/s/1DtV-A9XiuQQDvVPXn6rYvg  (the archive holding DATA/MOS,"
                " DATA/STD, Image/ and AIGCIQA2023_Prompts.xlsx; see also"
                " https://huggingface.co/datasets/IntMeGroup/AIGCIQA2023)"
            ),
        ),
    ),
    # Header-less CSV conversions of info_*.xlsx (the reader accepts them when the xlsx is absent).
    "aigiqa-20k": (
        Source(
            url=github_raw("pf0607/IPCE", IPCE_COMMIT, "data/AIGCQA-30K-Image/info_train.csv"),
            filename="info_train.csv",
            sha256="6c5ab4c84f95afce22c1b8e9eb711bbde66d0afd2f341e4b35484cd6878386a0",
        ),
        Source(
            url=github_raw("pf0607/IPCE", IPCE_COMMIT, "data/AIGCQA-30K-Image/info_val.csv"),
            filename="info_val.csv",
            sha256="d0c7a2beb6fb95295d842b610e65f33be391f0a241b6ad2b63ee2a29eb1dc4fb",
        ),
        Source(
            url=github_raw(CHAMPION_REPO, CHAMPION_COMMIT, "data/AIGCQA-30K-Image/info_test.csv"),
            filename="info_test.csv",
            sha256="6d2b35ee43370fc3b1b4ce6f4e38ae9da3a39586853739cd1c05ad389733117a",
        ),
        # Archive name unverified: check the /files tab of the ModelScope dataset.
        Source(
            url=(
                "https://www.modelscope.cn/api/v1/datasets/lcysyzxdxc/AIGCQA-30K-Image/repo"
                "?Revision=master&FilePath=AIGCQA-30K-Image.zip"
            ),
            filename="AIGCQA-30K-Image.zip",
            kind="archive",
            manual_instructions=(
                "ModelScope: https://www.modelscope.cn/datasets/lcysyzxdxc/AIGCQA-30K-Image/files"
                " (the archive with train/ val/ test/ and info_*.xlsx)"
            ),
        ),
    ),
}


def sources_for(
    name: str, *, url: str | None = None, sha256: str | None = None
) -> tuple[Source, ...]:
    """The sources of a dataset, with the archive's URL and sha256 overridden when given.

    Args:
        name: a key of :data:`SOURCES`.
        url: replaces the URL of the dataset's archive (the only archive, or the only source).
        sha256: pins the sha256 of that same archive.

    Raises:
        ConfigError: unknown dataset, or an override for a dataset with several archives.
    """
    if name not in SOURCES:
        known = ", ".join(sorted(SOURCES))
        raise ConfigError(
            f"no download sources known for '{name}' (known: {known}); put the dataset in its "
            "official layout at its root and run `agiqa datasets download NAME --root DIR --adopt`"
        )
    sources = SOURCES[name]
    if url is None and sha256 is None:
        return sources
    if url is not None and (problem := url_credentials(url)):
        raise ConfigError(
            f"the download URL of '{name}' carries credentials ({problem}); it would be written "
            f"to logs. {DOWNLOAD_CREDENTIALS_HINT}"
        )
    archives = [i for i, s in enumerate(sources) if s.kind == "archive"] or list(
        range(len(sources))
    )
    if len(archives) != 1:
        raise ConfigError(f"'{name}' has {len(archives)} archives: --url/--sha256 is ambiguous")
    index = archives[0]
    pinned = replace(
        sources[index],
        url=url or sources[index].url,
        sha256=(sha256 or sources[index].sha256),
        # A user-given URL is fetched directly even if the default host needs a browser.
        manual=sources[index].manual and url is None,
    )
    return (*sources[:index], pinned, *sources[index + 1 :])
