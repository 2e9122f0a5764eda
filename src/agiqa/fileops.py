"""Putting a file in place: atomic, and without a second copy of a large file."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def place(source: Path, target: Path, link_above: int) -> None:
    """Put ``source``'s bytes at ``target`` atomically (a reader never sees half a file).

    Files larger than ``link_above`` bytes are hard-linked where the file system allows (no
    second copy; links never cross file systems); the others, and large files elsewhere, are
    copied. A copy is independent of the source: rewriting the source in place cannot change it.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(target.name + ".tmp")
    temporary.unlink(missing_ok=True)
    linked = False
    if source.stat().st_size > link_above:
        try:
            os.link(source, temporary)
            linked = True
        except OSError:
            pass
    if not linked:
        shutil.copyfile(source, temporary)
    os.replace(temporary, target)
