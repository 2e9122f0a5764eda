"""Local stand-ins for the internet the describe stage reaches (test tooling).

- ``published_mirror``: raw.githubusercontent.com for SCVA-AGIQA's published descriptions, at the
  pinned commit, on 127.0.0.1 (the fixtures are those files, byte for byte); the describer's
  ``base_url`` points at it and the pinned sha256 still applies.
- the OpenAI-compatible chat endpoint is ``agiqa.describe.fake_server.FakeOpenAIServer``.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from agiqa.describe.backends.published import BASE_URL, SOURCES

#: Where each published file is among the shared metadata fixtures.
FIXTURE_FILES = {
    "agiqa-1k": "agiqa-1k/scva-agiqa/AIGC-1K_answer.csv",
    "agiqa-3k": "agiqa-3k/scva-agiqa/data.csv",
    "aigciqa2023": "aigciqa2023/scva-agiqa/merged_output_aigciqa2023.csv",
}


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def static_server(folder: Path) -> Iterator[str]:
    """Serve ``folder`` read-only on 127.0.0.1 (a free port); yields ``http://127.0.0.1:PORT``."""
    handler = functools.partial(_Quiet, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def published_mirror(folder: Path, fixtures: Path) -> Iterator[str]:
    """The repository's files at the pinned commit under ``folder``; yields the ``base_url``."""
    prefix = BASE_URL.split("://", 1)[1].split("/", 1)[1]  # mozhu1/SCVA-AGIQA/<commit>/
    for dataset, relative in FIXTURE_FILES.items():
        target = folder / prefix / SOURCES[dataset].path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(fixtures / relative, target)
    with static_server(folder) as url:
        yield f"{url}/{prefix}"
