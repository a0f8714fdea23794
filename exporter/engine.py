"""Runs collections: dumps the sockets once, gives each target its one trip to the thread
pool (exporter.target), and keeps what each target remembers between collections.

Concurrent scrapes share one collection (exporter.single_flight); name resolution runs
apart (exporter.resolver); each collection works to the deadline of the scrape that
started it (exporter.deadline). The engine holds the targets' states, each an immutable
value replaced when its collection ends, and touches them only on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Protocol

from exporter import planner
from exporter.correlate import Memory
from exporter.deadline import Clock, Deadline
from exporter.model import (
    ConnectionKey,
    ReadCounts,
    ResolveStatus,
    ServerView,
    Snapshot,
    Socket,
    TargetReport,
    TargetSnapshot,
)
from exporter.planner import ReadPolicy, TargetState
from exporter.resolver import AddressBook
from exporter.single_flight import SingleFlight
from exporter.summary import summarise
from exporter.target import EarlyRead, Target, TargetOutcome, collect_target, timed_read

log = logging.getLogger(__name__)

# Time kept back from the scrape's deadline for correlating and rendering: reads and the
# socket dump stop this long before it.
RENDER_MARGIN_SECONDS = 0.2
# A target's trip is waited for until this long before the scrape's deadline, after the
# reads' own: a read that ran to its deadline (a hung server), or reported its timeout a
# little late, still leaves its sockets the time to be correlated and reported.
TRIP_MARGIN_SECONDS = 0.05


class SocketReadingLike(Protocol):
    @property
    def sockets(self) -> tuple[Socket, ...]: ...

    @property
    def durations(self) -> dict[str, float]: ...

    @property
    def without_owner(self) -> Mapping[str, int]:
        """Sockets whose owning process cannot be read, by reason."""
        ...


class SocketSource(Protocol):
    def read(self, deadline: Deadline) -> SocketReadingLike:
        """The sockets to the watched ports, by ``deadline`` (what could not be done by
        then, such as finding every owner, is left out)."""
        ...


@dataclass(frozen=True)
class _Dump:
    """What one collection's socket dump gave (nothing when it failed)."""

    sockets: tuple[Socket, ...]
    durations: Mapping[str, float]
    without_owner: dict[str, int]
    seconds: float


@dataclass
class _Watched:
    """A target, its state after the last collection, and its last collection's trip to
    the pool while that may still be running."""

    target: Target
    state: TargetState
    trip: asyncio.Future[Any] | None = None
    # Collections that failed from a bug in the exporter (not from the server).
    bugs: int = 0


class Engine:
    def __init__(
        self,
        targets: Sequence[Target],
        sockets: SocketSource,
        policy: ReadPolicy,
        *,
        addresses: AddressBook | None = None,
        top_sessions: int = 20,
        clock: Clock = time.monotonic,
        on_collected: Callable[[], None] | None = None,
        counted: Mapping[str, frozenset[ConnectionKey]] | None = None,
    ) -> None:
        """``on_collected`` runs on the event loop after every collection (the command
        line uses it for garbage collection, see exporter.cli). ``counted``: per target,
        drops an earlier run of the exporter counted already (exporter.persistence)."""
        counted = counted or {}
        self._watched = [
            _Watched(t, TargetState(memory=Memory(dropped=counted.get(t.name, frozenset()))))
            for t in targets
        ]
        self._sockets = sockets
        self._policy = policy
        self._addresses = addresses if addresses is not None else AddressBook(clock=clock)
        self._top = top_sessions
        self._clock = clock
        # A trip per target, the early reads beside them, and the socket dump.
        self._pool = ThreadPoolExecutor(
            max_workers=2 * len(self._watched) + 1, thread_name_prefix="collect"
        )
        self._flight: SingleFlight[Snapshot] = SingleFlight(self._collect)
        self._last: Snapshot | None = None
        self._collections = 0
        self._socket_errors = 0
        self._bugs_logged: set[str] = set()
        self._on_collected = on_collected
        # Node mode (exporter.node): socket-side series carry pod and container labels.
        self._node = any(t.node for t in targets)

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def targets(self) -> list[Target]:
        return [w.target for w in self._watched]

    @property
    def target_names(self) -> list[str]:
        return [w.target.name for w in self._watched]

    @property
    def last_snapshot(self) -> Snapshot | None:
        return self._last

    def counted_drops(self) -> dict[str, frozenset[ConnectionKey]]:
        """Per target, the connections whose drop has been counted (and are still seen):
        what a restart must not count again."""
        return {w.target.name: w.state.memory.dropped for w in self._watched}

    async def collect(self, deadline: Deadline) -> Snapshot:
        """A fresh snapshot, shared with every scrape that arrives while it is being made.

        Answers by ``deadline``: a collection that is not done by then is left to finish in
        the background and this scrape gets the last snapshot with its targets down."""
        snapshot = await self._flight.wait(deadline)
        return snapshot if snapshot is not None else self._timed_out_snapshot()

    def close(self) -> None:
        for watched in self._watched:
            watched.target.sessions.close()
        close_sockets = getattr(self._sockets, "close", None)  # netlink channels
        if close_sockets is not None:
            close_sockets()
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _collect(self, deadline: Deadline) -> Snapshot:
        loop = asyncio.get_running_loop()
        work = deadline.sooner(RENDER_MARGIN_SECONDS)
        patience = deadline.sooner(TRIP_MARGIN_SECONDS)
        started = time.perf_counter()
        # Names are looked up while the kernel is dumped, each target waiting only for its
        # own (a hanging resolver holds up nobody else).
        known = [self._addresses.known(w.target.host) for w in self._watched]
        resolving = [
            _resolved(status) if status is not None
            else asyncio.ensure_future(self._addresses.addresses(w.target.host, work))
            for w, status in zip(self._watched, known, strict=True)
        ]
        # A read that is due whatever the sockets say runs while the kernel is dumped: the
        # server's time to build its list then costs no extra wall time.
        early = [self._early_read(w, work) for w in self._watched]
        lone = self._lone(known, early)
        if lone is not None:
            dump, outcome = await self._dump_and_trip(self._watched[0], lone, work, patience,
                                                      started)
            outcomes: Sequence[TargetOutcome] = [outcome]
        else:
            reading = await loop.run_in_executor(self._pool, self._dump, work)
            dump = self._dumped(reading, time.perf_counter() - started)
            outcomes = await asyncio.gather(
                *(
                    self._trip(w, status, dump.sockets, work, patience, read)
                    for w, status, read in zip(self._watched, resolving, early, strict=True)
                )
            )
        durations, without_owner, dump_seconds = dump.durations, dump.without_owner, dump.seconds
        resolved = [status.result() for status in resolving]
        self._collections += 1
        total = time.perf_counter() - started
        phases = {
            "sockets": durations.get("sockets", dump_seconds),
            "owners": durations.get("owners", 0.0),
        }
        snapshot = Snapshot(
            reports=tuple(
                TargetReport(
                    snapshot=outcome.snapshot,
                    summary=outcome.summary,
                    counts=self._counts(w),
                    resolve=status,
                    durations={**phases, **outcome.durations, "total": total},
                    places=outcome.places,
                )
                for w, status, outcome in zip(self._watched, resolved, outcomes, strict=True)
            ),
            collections=self._collections,
            top_sessions=self._top,
            socket_read_errors=self._socket_errors,
            sockets_without_owner=without_owner,
            node=self._node,
        )
        self._last = snapshot
        if self._on_collected is not None:
            self._on_collected()
        return snapshot

    def _dump(self, deadline: Deadline) -> SocketReadingLike | Exception:
        """The socket dump, in the pool; its failure is returned, to be counted on the
        event loop (_dumped)."""
        try:
            return self._sockets.read(deadline)
        except Exception as error:  # a bug, or --sockets.source=netlink refused
            return error

    def _dumped(self, reading: SocketReadingLike | Exception | None, seconds: float) -> _Dump:
        """The dump's result, its failure counted and logged (on the event loop)."""
        if isinstance(reading, Exception):
            self._socket_errors += 1
            self._log_once("socket read", reading)
        if reading is None or isinstance(reading, Exception):
            return _Dump((), {}, {}, seconds)
        return _Dump(reading.sockets, reading.durations, dict(reading.without_owner), seconds)

    def _lone(
        self, known: Sequence[ResolveStatus | None],
        early: Sequence[asyncio.Future[EarlyRead] | None],
    ) -> ResolveStatus | None:
        """A lone target's addresses when its trip can follow the dump in the same job of
        the pool: one hand-off between threads per collection instead of two (each costs
        a wake-up of a thread and of the event loop: about 0.1 ms, issue 17). Not when an
        early read is running (the trip waits for it), a name is still being looked up,
        or the last trip still runs."""
        if len(self._watched) != 1 or early[0] is not None:
            return None
        status, trip = known[0], self._watched[0].trip
        if status is None or not status.addresses or (trip is not None and not trip.done()):
            return None
        return status

    async def _dump_and_trip(
        self, watched: _Watched, resolve: ResolveStatus, deadline: Deadline,
        patience: Deadline, started: float,
    ) -> tuple[_Dump, TargetOutcome]:
        """_dump and then the target's trip (as _trip makes it) in one job of the pool,
        waited for until ``patience`` (the job's reads stop at ``deadline``)."""
        target, state = watched.target, watched.state

        def job() -> tuple[SocketReadingLike | Exception, float, TargetOutcome | Exception]:
            reading = self._dump(deadline)
            seconds = time.perf_counter() - started
            sockets = () if isinstance(reading, Exception) else reading.sockets
            try:
                outcome: TargetOutcome | Exception = collect_target(
                    target, state, resolve, sockets, deadline, self._policy, self._top)
            except Exception as error:  # a bug: handled below, as in _trip
                outcome = error
            return reading, seconds, outcome

        loop = asyncio.get_running_loop()
        trip = watched.trip = asyncio.ensure_future(loop.run_in_executor(self._pool, job))
        trip.add_done_callback(_retrieve)
        try:
            reading, seconds, outcome = await asyncio.wait_for(asyncio.shield(trip),
                                                               patience.remaining())
        except TimeoutError:
            return self._dumped(None, time.perf_counter() - started), self._stand_in(
                watched, "server read timed out")
        dump = self._dumped(reading, seconds)
        if isinstance(outcome, Exception):
            return dump, self._bug(watched, outcome)
        watched.state = outcome.state
        return dump, outcome

    def _early_read(
        self, watched: _Watched, deadline: Deadline
    ) -> asyncio.Future[EarlyRead] | None:
        if watched.trip is not None and not watched.trip.done():
            return None
        sessions = watched.target.sessions
        ips = planner.early_read(
            watched.state, self._clock(), self._policy, reads_are_fresh=sessions.always_fresh
        )
        if ips is None:
            return None

        def read() -> EarlyRead:
            view, seconds = timed_read(sessions, ips, deadline, fresh=False)
            return EarlyRead(ips, view, seconds)

        return asyncio.ensure_future(asyncio.get_running_loop().run_in_executor(self._pool, read))

    async def _trip(
        self,
        watched: _Watched,
        resolving: asyncio.Future[ResolveStatus],
        sockets: Sequence[Socket],
        deadline: Deadline,
        patience: Deadline,
        early: asyncio.Future[EarlyRead] | None,
    ) -> TargetOutcome:
        """This target's outcome, by ``patience`` whatever its trip does (its reads stop at
        ``deadline``, a little earlier)."""
        target = watched.target
        resolve = await resolving
        if watched.trip is not None and not watched.trip.done():
            # The last trip overran its deadline and is still running (a source that does
            # not keep to it): this collection reports the target down rather than start a
            # second trip on the same state.
            return self._stand_in(watched, "previous collection still running")
        if not resolve.addresses:
            # No socket can be this target's, and its server is not asked: nothing for the
            # pool to do (and no time may be left after waiting for the name).
            return self._guarded(watched, collect_target, target, watched.state, resolve, (),
                                 deadline, self._policy, self._top)
        early_read = None
        if early is not None:
            # Past the deadline, the trip reads again (and finds the reader busy).
            with contextlib.suppress(TimeoutError):
                early_read = await asyncio.wait_for(asyncio.shield(early),
                                                    patience.remaining())
        loop = asyncio.get_running_loop()
        trip = watched.trip = asyncio.ensure_future(
            loop.run_in_executor(
                self._pool, collect_target, target, watched.state, resolve, sockets,
                deadline, self._policy, self._top, early_read,
            )
        )
        # A trip abandoned at the deadline may still fail later: its error is retrieved
        # here so that asyncio does not report it as never retrieved.
        trip.add_done_callback(_retrieve)
        try:
            outcome = await asyncio.wait_for(asyncio.shield(trip), patience.remaining())
        except TimeoutError:
            return self._stand_in(watched, "server read timed out")
        except Exception as error:
            return self._bug(watched, error)
        watched.state = outcome.state
        return outcome

    def _guarded(
        self, watched: _Watched, step: Callable[..., TargetOutcome], *args: object
    ) -> TargetOutcome:
        try:
            outcome = step(*args)
        except Exception as error:
            return self._bug(watched, error)
        watched.state = outcome.state
        return outcome

    def _bug(self, watched: _Watched, error: Exception) -> TargetOutcome:
        """A target's collection that failed from a bug: reported, counted, and the last
        state kept."""
        watched.bugs += 1
        self._log_once(watched.target.name, error)
        return self._stand_in(watched, f"internal error: {type(error).__name__}")

    def _log_once(self, where: str, error: Exception) -> None:
        """The traceback of a bug, once per place: a bug must be findable, not pass for a
        server that is down; later ones are counted in mysql_idle_internal_errors_total
        (mysql_idle_socket_read_errors_total for the socket side)."""
        if where in self._bugs_logged:
            return
        self._bugs_logged.add(where)
        log.error(
            "%s failed from a bug in the exporter (later failures are only counted):\n%s",
            where,
            "".join(traceback.format_exception(error)).rstrip(),
        )

    def _stand_in(self, watched: _Watched, error: str) -> TargetOutcome:
        """An outcome for a target whose trip gave none: its last items, server down."""
        name = watched.target.name
        report = next(
            (r for r in (self._last.reports if self._last else ()) if
             r.snapshot.target == name),
            None,
        )
        down = ServerView(target=name, ok=False, error=error)
        snapshot = (
            replace(report.snapshot, server=down, server_age_seconds=None)
            if report is not None
            else self._empty(watched, down)
        )
        return TargetOutcome(snapshot, summarise(snapshot, self._top), watched.state,
                             places=report.places if report is not None else ())

    def _empty(self, watched: _Watched, server: ServerView | None) -> TargetSnapshot:
        memory = watched.state.memory
        return TargetSnapshot(
            target=watched.target.name,
            server=server,
            items=(),
            correlation_working=memory.correlation_working,
            dropped_totals=memory.dropped_totals,
            server_age_seconds=None,
            settings=self._policy.settings,
        )

    def _counts(self, watched: _Watched) -> ReadCounts:
        counts = watched.target.sessions.counts()
        if not watched.bugs:
            return counts
        return replace(counts, internal_errors=counts.internal_errors + watched.bugs)

    def _timed_out_snapshot(self) -> Snapshot:
        down = ServerView(target="", ok=False, error="collection timed out")
        reports = []
        for watched in self._watched:
            last = next(
                (r for r in (self._last.reports if self._last else ())
                 if r.snapshot.target == watched.target.name),
                None,
            )
            view = replace(down, target=watched.target.name)
            if last is None:
                snapshot = self._empty(watched, None)
                reports.append(TargetReport(snapshot, summarise(snapshot, self._top),
                                            counts=self._counts(watched)))
            else:
                reports.append(replace(
                    last,
                    snapshot=replace(last.snapshot, server=view, server_age_seconds=None),
                    counts=self._counts(watched),
                ))
        return Snapshot(
            reports=tuple(reports), collections=self._collections, top_sessions=self._top,
            socket_read_errors=self._socket_errors, node=self._node,
        )


def _resolved(status: ResolveStatus) -> asyncio.Future[ResolveStatus]:
    future: asyncio.Future[ResolveStatus] = asyncio.get_running_loop().create_future()
    future.set_result(status)
    return future


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
