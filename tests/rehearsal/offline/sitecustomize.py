"""No network for the rehearsal's pipeline run: every Python process refuses to connect.

The rehearsal puts this folder first on ``PYTHONPATH``, so Python imports it at start-up in
Snakemake and in every job it spawns. Internet sockets may then connect only to the addresses
listed in ``AGIQA_REHEARSAL_ALLOW`` (``host:port,...``: the local stand-ins a step is meant to
reach, such as the published descriptions' mirror); everything else, the model hub included,
gets ``ConnectionRefusedError`` naming the address. Unix sockets are not affected.
"""

from __future__ import annotations

import os
import socket

_ALLOWED = {
    entry.strip() for entry in os.environ.get("AGIQA_REHEARSAL_ALLOW", "").split(",") if entry
}
_connect, _connect_ex = socket.socket.connect, socket.socket.connect_ex


def _allowed(sock: socket.socket, address: object) -> bool:
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return True
    if not isinstance(address, tuple) or len(address) < 2:
        return False
    return f"{address[0]}:{address[1]}" in _ALLOWED


def _guarded_connect(self: socket.socket, address: object) -> None:
    if not _allowed(self, address):
        raise ConnectionRefusedError(f"rehearsal: no network ({address} is not a local stand-in)")
    return _connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: object) -> int:
    if not _allowed(self, address):
        raise ConnectionRefusedError(f"rehearsal: no network ({address} is not a local stand-in)")
    return _connect_ex(self, address)


if os.environ.get("AGIQA_REHEARSAL_OFFLINE") == "1":
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
