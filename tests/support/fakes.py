"""Fake sources and a fake clock, for driving the engine without a kernel, a server or
real waiting."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from exporter.cli import Exporter
from exporter.deadline import Clock, Deadline
from exporter.engine import Engine
from exporter.fleet import DEFAULT_FRESH_INTERVAL_SECONDS
from exporter.fleet.server import FleetServer
from exporter.model import ReadCounts, ServerView, Session, Settings, Socket
from exporter.planner import ReadPolicy
from exporter.sessions.source import SessionSource
from exporter.target import Target
from tests.support.builders import DB, view


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


@dataclass
class Reading:
    sockets: tuple[Socket, ...]
    durations: dict[str, float] = field(default_factory=dict)
    without_owner: dict[str, int] = field(default_factory=dict)


class FakeSockets:
    """The kernel's table: whatever ``sockets`` holds; records the deadlines it gets."""

    def __init__(self, sockets: list[Socket]) -> None:
        self.sockets = sockets
        self.reads = 0
        self.deadlines: list[Deadline] = []

    def read(self, deadline: Deadline) -> Reading:
        self.reads += 1
        self.deadlines.append(deadline)
        return Reading(tuple(self.sockets))


class FakeSessions:
    """A session source answering ``make_view(deadline)``. With ``hold``, a read blocks
    until ``release`` is set or the deadline passes (then it fails, as a real reader
    whose statement timed out, ``overrun`` seconds after the deadline, as a real one reports
    its timeout a little late); ``started`` is set whenever a read begins."""

    always_fresh = True

    def __init__(
        self,
        make_view: Callable[[Deadline], ServerView],
        *,
        hold: bool = False,
        keep_deadline: bool = True,
        queries_per_read: int = 1,
        overrun: float = 0.0,
    ) -> None:
        self.make_view = make_view
        self.overrun = overrun
        self.hold = hold
        self.keep_deadline = keep_deadline
        self.queries_per_read = queries_per_read
        self.reads = 0
        self.errors = 0
        self.queries_sent = 0
        self.asked_ips: list[frozenset[str] | None] = []
        self.fresh_asked: list[bool] = []
        self.deadlines: list[Deadline] = []
        self.release = threading.Event()
        self.started = threading.Event()
        self.pings = 0
        # A ping's answer: None (the server answers) or why it does not.
        self.down: str | None = None

    def read(
        self, client_ips: frozenset[str] | None, deadline: Deadline, *, fresh: bool = False
    ) -> ServerView:
        self.reads += 1
        self.queries_sent += self.queries_per_read
        self.asked_ips.append(client_ips)
        self.fresh_asked.append(fresh)
        self.deadlines.append(deadline)
        self.started.set()
        if self.hold:
            # A real reader's statement times out at the deadline; a misbehaving source
            # (keep_deadline=False) holds on until released.
            wait = deadline.remaining() if self.keep_deadline else None
            if not self.release.wait(wait):
                self.errors += 1
                if self.overrun:
                    threading.Event().wait(self.overrun)
                return ServerView(target="db:3306", ok=False, error="timed out",
                                  read_at=deadline.now())
        view = self.make_view(deadline)
        if not view.ok:
            self.errors += 1
        return view

    def ping(self, deadline: Deadline) -> ServerView | None:
        """Alive unless ``down`` says why not."""
        self.pings += 1
        if self.down is None:
            return None
        return ServerView(target="db:3306", ok=False, error=self.down, read_at=deadline.now())

    def counts(self) -> ReadCounts:
        return ReadCounts(reads=self.reads, read_errors=self.errors, queries=self.queries_sent,
                          pings=self.pings)

    def close(self) -> None:
        self.release.set()


class CachedSessions(FakeSessions):
    """A fleet-like source: its answers may come from a cache."""

    always_fresh = False


def reading(*sessions: Session, **kw: object) -> Callable[[Deadline], ServerView]:
    """A FakeSessions ``make_view``: a successful read of these sessions, when asked."""
    return lambda deadline: view(*sessions, read_at=deadline.now(), **kw)


def fake_engine(
    sources: Mapping[str, SessionSource],
    sockets: list[Socket] | None = None,
    *,
    interval: float = 0.0,
    settings: Settings | None = None,
    clock: Clock = time.monotonic,
) -> Engine:
    """An engine over fake sockets with one target per source, each at DB (the name is
    only its label)."""
    targets = [Target(name, DB.ip, DB.port, source) for name, source in sources.items()]
    return Engine(targets, FakeSockets(sockets or []),
                  ReadPolicy(interval, settings or Settings(risk_headroom=60)), clock=clock)


def fleet_exporter(
    database: SessionSource,
    *,
    interval: float = 30.0,
    fresh_interval: float = DEFAULT_FRESH_INTERVAL_SECONDS,
    clock: Clock = time.monotonic,
) -> Exporter:
    """A standalone exporter with --fleet.serve over one target, "db:3306"."""
    engine = fake_engine({"db:3306": database}, interval=interval, clock=clock)
    fleet = FleetServer({"db:3306": database}, clock=clock, interval=interval,
                        fresh_interval=fresh_interval)
    return Exporter(engine, fleet)
