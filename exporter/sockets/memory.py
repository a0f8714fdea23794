"""What a socket reader remembers between reads, which --state.dir keeps across restarts
(exporter.persistence). A module of its own so that the socket readers need not import
persistence, which a sidecar with default flags never loads."""

from __future__ import annotations

from dataclasses import dataclass

from exporter.model import Socket
from exporter.sockets.owners import Owner

Held = tuple[Socket, Owner]  # a socket with the owner that held it
GoneAt = tuple[Socket, Owner, float]  # a socket gone from the table, and when last seen


@dataclass(frozen=True, slots=True)
class SocketMemory:
    """What the socket reader remembers between reads (exporter.sockets.reader)."""

    held: tuple[Held, ...]  # the last read's sockets with owners
    seen_at: float  # when that read was made (monotonic)
    gone: tuple[GoneAt, ...]  # sockets that left the table while still held
