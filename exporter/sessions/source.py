"""What the engine needs of a session source, whatever answers it: the database itself
(``SessionReader``) or a fleet exporter (``FleetSessionSource``)."""

from __future__ import annotations

import threading
from typing import Protocol

from exporter.deadline import Deadline
from exporter.model import ReadCounts, ServerView


class SessionSource(Protocol):
    @property
    def always_fresh(self) -> bool:
        """True when every read is made on the server when it is asked for (a direct
        reader, whose read may then start before the socket dump); False when an answer
        may come from a cache (a fleet source)."""
        ...

    def read(
        self, client_ips: frozenset[str] | None, deadline: Deadline, *, fresh: bool = False
    ) -> ServerView:
        """The sessions of these client addresses (all with None, none with an empty set),
        by ``deadline``, never raising: a failure is a view with ``ok=False``. ``fresh``:
        the answer must come from a server read that starts after this call (a connection
        the caller has just seen must be in it); a direct read always is. ``read_at`` is
        stamped on the deadline's clock."""
        ...

    def ping(self, deadline: Deadline) -> ServerView | None:
        """Whether the server is still there between reads, at next to no cost to it:
        None when it answers (or when this source cannot tell without a read), else a
        failed view saying why."""
        ...

    def counts(self) -> ReadCounts:
        """Reads so far, failed ones, those failed from a bug, statements and pings sent."""
        ...

    def close(self) -> None: ...


class ReadTally:
    """The counts a source keeps of its reads. Safe to update from the thread that reads
    and to read from another."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reads = 0
        self._errors = 0
        self._internal = 0

    def record(self, view: ServerView) -> None:
        with self._lock:
            self._reads += 1
            if not view.ok:
                self._errors += 1
                if view.internal_error:
                    self._internal += 1

    def counts(self, queries: int = 0, pings: int = 0) -> ReadCounts:
        with self._lock:
            return ReadCounts(
                reads=self._reads,
                read_errors=self._errors,
                internal_errors=self._internal,
                queries=queries,
                pings=pings,
            )
