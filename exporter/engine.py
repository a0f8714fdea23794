"""Runs collections: reads both sides, correlates, and shares one in-flight collection
between concurrent scrapes. The only place that holds state between collections."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import socket as socketlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from exporter.addresses import normalise_ip
from exporter.collector import Snapshot, TargetCounters
from exporter.correlate import (
    ConnectionKey,
    Memory,
    Settings,
    TargetSnapshot,
    correlate,
    needs_fresh_read,
)
from exporter.fleet import DEFAULT_FRESH_INTERVAL_SECONDS, IndexedView
from exporter.model import Endpoint, ServerView, Socket, TcpState
from exporter.summary import TargetSummary, summarise

log = logging.getLogger(__name__)

# Time kept back from the scrape deadline for correlating and rendering.
RENDER_MARGIN_SECONDS = 0.2
# Why a read is due when a cached fleet answer would still do (no connection is newer).
_STALE_OK_REASONS = frozenset({"interval elapsed", "last read failed", "no read yet"})


class SocketReadingLike(Protocol):
    @property
    def sockets(self) -> tuple[Socket, ...]: ...

    @property
    def durations(self) -> dict[str, float]: ...


class SocketSource(Protocol):
    def read(self) -> SocketReadingLike: ...


class SessionSource(Protocol):
    @property
    def queries_sent(self) -> int: ...

    def read(
        self, client_ips: frozenset[str] | None, timeout: float, *, fresh: bool = False
    ) -> ServerView:
        """``fresh``: the answer must come from a server read that starts after this call
        (a connection the caller has just seen must be in it); a direct read always is."""
        ...

    def close(self) -> None: ...


def reads_are_fresh(source: SessionSource) -> bool:
    """Whether every read of ``source`` is made on the server when it is asked for (a
    direct reader), rather than possibly answered from a cache (a fleet source)."""
    return bool(getattr(source, "always_fresh", False))


Resolver = Callable[[str], frozenset[str]]


def resolve_host(host: str) -> frozenset[str]:
    """IP addresses of a host name (or the address itself), normalised."""
    if not host:
        return frozenset({"127.0.0.1", "::1"})
    infos = socketlib.getaddrinfo(host, None, proto=socketlib.IPPROTO_TCP)
    return frozenset(normalise_ip(str(info[4][0])) for info in infos)


@dataclass
class WatchedTarget:
    """One --mysql.address: where it is, how to read it, and what is remembered of it."""

    name: str
    host: str
    port: int
    sessions: SessionSource
    resolver: Resolver = resolve_host
    resolve_every: float = 60.0
    ips: frozenset[str] = frozenset()
    resolved_at: float | None = None
    last_view: ServerView | None = None
    known_at_read: frozenset[ConnectionKey] = frozenset()
    memory: Memory = field(default_factory=Memory)
    # Fleet mode: the last whole (unfiltered) read served to sidecars, indexed by client
    # address, and the one in flight.
    fleet_read: IndexedView | None = None
    fleet_inflight: asyncio.Future[IndexedView] | None = None
    # The next fresh read, not started yet, that sidecars' fresh requests share.
    fleet_pending: asyncio.Future[IndexedView] | None = None
    fleet_started_at: float | None = None
    own_endpoints: deque[Endpoint] = field(default_factory=lambda: deque(maxlen=32))
    counters: TargetCounters = field(default_factory=TargetCounters)
    # The client addresses the last read asked about, and whether the last collection saw
    # a live connection that read could not know: together they decide whether the next
    # read may start before the socket dump (Engine._early_read).
    read_ips: frozenset[str] = frozenset()
    saw_new_connection: bool = True

    def refresh_addresses(self, now: float) -> None:
        if self.resolved_at is not None and now - self.resolved_at < self.resolve_every:
            return
        try:
            self.ips = self.resolver(self.host)
        except OSError as error:
            log.warning("cannot resolve %s: %s", self.host, error)
        self.resolved_at = now

    def owns(self, sock: Socket) -> bool:
        return sock.remote.port == self.port and sock.remote.ip in self.ips


class Engine:
    def __init__(
        self,
        targets: Sequence[WatchedTarget],
        sockets: SocketSource,
        settings: Settings,
        *,
        server_interval: float = 30.0,
        top_sessions: int = 20,
        clock: Callable[[], float] = time.monotonic,
        on_collected: Callable[[], None] | None = None,
        fleet_fresh_interval: float = DEFAULT_FRESH_INTERVAL_SECONDS,
    ) -> None:
        """``on_collected`` runs on the event loop after every collection (the command
        line uses it for garbage collection, see exporter.cli). ``fleet_fresh_interval``:
        the least time between the starts of fresh fleet reads (--fleet.fresh-interval)."""
        self._targets = list(targets)
        self._sockets = sockets
        self._settings = settings
        self._interval = server_interval
        self._top = top_sessions
        self._clock = clock
        self._pool = ThreadPoolExecutor(
            max_workers=len(self._targets) + 2, thread_name_prefix="collect"
        )
        self._inflight: asyncio.Future[Snapshot] | None = None
        self._last: Snapshot | None = None
        self._collections = 0
        self._on_collected = on_collected
        self._fleet_fresh_interval = fleet_fresh_interval

    @property
    def target_names(self) -> list[str]:
        return [t.name for t in self._targets]

    @property
    def last_snapshot(self) -> Snapshot | None:
        return self._last

    @property
    def fleet_fresh_interval(self) -> float:
        return self._fleet_fresh_interval

    async def collect(self, timeout: float) -> Snapshot:
        """A fresh snapshot, shared with every scrape that arrives while it is being made.

        Answers within `timeout` seconds: a collection that is not done by then is left to
        finish in the background and this scrape gets the last snapshot with its targets down.
        """
        if self._inflight is None or self._inflight.done():
            deadline = self._clock() + timeout
            self._inflight = asyncio.ensure_future(self._collect(deadline))
        try:
            return await asyncio.wait_for(asyncio.shield(self._inflight), timeout)
        except TimeoutError:
            return self._timed_out_snapshot()

    async def fleet_read(
        self, name: str, timeout: float, *, fresh: bool = False
    ) -> IndexedView:
        """The whole processlist of one target, indexed by client address, read at most
        once per interval however many sidecars ask; concurrent askers share one read.

        A ``fresh`` request (a sidecar saw a connection that its last answer cannot know)
        gets a read that starts after it arrived; all fresh requests waiting at that moment
        share it, and such reads start at least ``fleet_fresh_interval`` apart."""
        target = next((t for t in self._targets if t.name == name), None)
        if target is None:
            return IndexedView(ServerView(target=name, ok=False, error="unknown target"))
        if fresh:
            if target.fleet_pending is None or target.fleet_pending.done():
                target.fleet_pending = asyncio.ensure_future(
                    self._fleet_fresh_read(target, timeout)
                )
            shared = target.fleet_pending
        else:
            now = self._clock()
            cached = target.fleet_read
            if (
                cached is not None
                and cached.view.ok
                and now - cached.view.read_at < max(self._interval, 1.0)
            ):
                return cached
            if target.fleet_inflight is None or target.fleet_inflight.done():
                target.fleet_inflight = asyncio.ensure_future(self._fleet_read(target, timeout))
            shared = target.fleet_inflight
        try:
            return await asyncio.wait_for(asyncio.shield(shared), timeout)
        except TimeoutError:
            return IndexedView(ServerView(target=name, ok=False, error="server read timed out"))

    async def _fleet_fresh_read(self, target: WatchedTarget, timeout: float) -> IndexedView:
        while True:
            inflight = target.fleet_inflight
            if inflight is not None and not inflight.done():
                await asyncio.wait([inflight])  # one read at a time per target
                continue
            started = target.fleet_started_at
            if started is None:
                break
            gap = self._fleet_fresh_interval - (self._clock() - started)
            if gap <= 0:
                break
            await asyncio.sleep(gap)
        # From here on, a new fresh request needs the next read: this one may be under way.
        if target.fleet_pending is asyncio.current_task():
            target.fleet_pending = None
        target.fleet_inflight = asyncio.ensure_future(self._fleet_read(target, timeout))
        return await target.fleet_inflight

    async def _fleet_read(self, target: WatchedTarget, timeout: float) -> IndexedView:
        loop = asyncio.get_running_loop()
        target.fleet_started_at = self._clock()
        before = target.sessions.queries_sent
        # Indexed in the pool with the read: it walks every session, once per read.
        read = await loop.run_in_executor(self._pool, _read_indexed, target.sessions, timeout)
        target.counters = TargetCounters(
            reads=target.counters.reads + 1,
            read_errors=target.counters.read_errors + (0 if read.view.ok else 1),
            queries=target.counters.queries + (target.sessions.queries_sent - before),
        )
        target.fleet_read = read
        return read

    def close(self) -> None:
        for target in self._targets:
            target.sessions.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _collect(self, deadline: float) -> Snapshot:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        # A read that is due whatever the sockets say runs while the kernel is dumped: the
        # server's time to build its list then costs no extra wall time.
        early = [self._early_read(t, deadline) for t in self._targets]
        reading = await loop.run_in_executor(self._pool, self._sockets.read)
        sockets_seconds = time.perf_counter() - started
        results = await asyncio.gather(
            *(
                self._collect_target(t, reading.sockets, deadline, read)
                for t, read in zip(self._targets, early, strict=True)
            )
        )
        self._collections += 1
        durations: dict[str, dict[str, float]] = {}
        total = time.perf_counter() - started
        for target, (_, phases) in zip(self._targets, results, strict=True):
            durations[target.name] = {
                "sockets": reading.durations.get("sockets", sockets_seconds),
                "owners": reading.durations.get("owners", 0.0),
                **phases,
                "total": total,
            }
        snapshot = Snapshot(
            targets=tuple(snap for (snap, _), _ in results),
            durations=durations,
            counters={t.name: t.counters for t in self._targets},
            collections=self._collections,
            top_sessions=self._top,
            summaries={snap.target: summary for (snap, summary), _ in results},
            # A reader without this count (a test's fake) reports none.
            sockets_without_owner=dict(getattr(reading, "without_owner", {})),
        )
        self._last = snapshot
        if self._on_collected is not None:
            self._on_collected()
        return snapshot

    def _early_read(
        self, target: WatchedTarget, deadline: float
    ) -> asyncio.Future[tuple[ServerView, float]] | None:
        """Start this target's read now, before the socket dump, when it is due whatever
        the dump will show (the interval has elapsed, or the last read failed) and it can
        be trusted to cover the dump: a direct read (made when asked), the same client
        addresses as the last read, and no connection newer than the last read in the
        last collection (under churn the dump would likely show one, and the read would
        have to be made again after it)."""
        view = target.last_view
        if (
            view is None
            or not target.read_ips
            or target.saw_new_connection
            or not reads_are_fresh(target.sessions)
            or (view.ok and self._clock() - view.read_at < self._interval)
        ):
            return None
        return asyncio.ensure_future(
            self._read_server(target, target.read_ips, deadline, fresh=False)
        )

    async def _collect_target(
        self,
        target: WatchedTarget,
        all_sockets: Sequence[Socket],
        deadline: float,
        early: asyncio.Future[tuple[ServerView, float]] | None = None,
    ) -> tuple[tuple[TargetSnapshot, TargetSummary], dict[str, float]]:
        loop = asyncio.get_running_loop()
        now = self._clock()
        if not target.ips:
            await loop.run_in_executor(self._pool, target.refresh_addresses, now)
        else:
            # Names are re-resolved in the background; until then the old addresses hold.
            loop.run_in_executor(self._pool, target.refresh_addresses, now)
        # Everything below walks every socket (10,000 at 10,000 sessions): it runs in the
        # pool, like the reads, so the event loop (/healthz, other scrapes) stays free.
        own = set(target.own_endpoints)
        sockets, reason, client_ips, fresh, new_connection, live_keys = (
            await loop.run_in_executor(self._pool, self._plan, target, all_sockets, own, now)
        )
        target.saw_new_connection = new_connection
        server_seconds = 0.0
        read: tuple[ServerView, float] | None = None
        if early is not None:
            read = await early
            # A connection newer than the last read may be newer than this one too, and
            # an address it did not ask about has sessions it did not return.
            if reason is None or new_connection or not client_ips <= target.read_ips:
                read = None
        if reason is not None:
            if read is None:
                read = await self._read_server(target, client_ips, deadline, fresh)
            target.read_ips = client_ips
            view, server_seconds = read
            target.last_view = view
            if view.ok:
                new_own = view.own_client_endpoints - own
                target.known_at_read, sockets = await loop.run_in_executor(
                    self._pool, _after_read, sockets, live_keys, new_own
                )
                if new_own:
                    target.own_endpoints.extend(new_own)
        started = time.perf_counter()
        snapshot, target.memory, summary = await loop.run_in_executor(
            self._pool,
            functools.partial(
                _correlate_and_summarise,
                target.name,
                sockets,
                target.last_view,
                self._settings,
                target.memory,
                self._clock(),
                self._top,
            ),
        )
        correlate_seconds = time.perf_counter() - started
        return (snapshot, summary), {"server": server_seconds, "correlate": correlate_seconds}

    def _plan(
        self,
        target: WatchedTarget,
        all_sockets: Sequence[Socket],
        own: set[Endpoint],
        now: float,
    ) -> tuple[list[Socket], str | None, frozenset[str], bool, bool, list[ConnectionKey]]:
        """This target's sockets (the exporter's own left out), why the server must be read
        (None: the last read still serves), the client addresses to ask about, whether a
        cached answer would not do, whether a live connection is newer than the last read,
        and the live connections' keys."""
        port, ips = target.port, target.ips  # target.owns(s), inline: 10,000 sockets
        sockets = [
            s for s in all_sockets
            if s.remote.port == port and s.remote.ip in ips and s.local not in own
        ]
        reason = needs_fresh_read(
            sockets, target.last_view, target.known_at_read, now, self._interval, self._settings
        )
        established = TcpState.ESTABLISHED
        live_keys = [(s.local, s.remote) for s in sockets if s.state is established and not s.gone]
        new_connection = not target.known_at_read.issuperset(live_keys)
        # A cached answer (fleet mode) will not do for a connection the last read could
        # not know, nor for one near its timeout that talked since the read.
        fresh = reason is not None and (reason not in _STALE_OK_REASONS or new_connection)
        client_ips = frozenset(s.local.ip for s in sockets) if reason is not None else frozenset()
        return sockets, reason, client_ips, fresh, new_connection, live_keys

    async def _read_server(
        self, target: WatchedTarget, client_ips: frozenset[str], deadline: float, fresh: bool
    ) -> tuple[ServerView, float]:
        loop = asyncio.get_running_loop()
        budget = deadline - self._clock() - RENDER_MARGIN_SECONDS
        started = time.perf_counter()
        before = target.sessions.queries_sent
        if budget <= 0:
            view = ServerView(target=target.name, ok=False, error="no time left for the server")
        else:
            call = loop.run_in_executor(
                self._pool, functools.partial(target.sessions.read, fresh=fresh),
                client_ips, budget,
            )
            try:
                view = await asyncio.wait_for(call, budget + RENDER_MARGIN_SECONDS / 2)
            except TimeoutError:
                view = ServerView(target=target.name, ok=False, error="server read timed out")
        elapsed = time.perf_counter() - started
        target.counters = TargetCounters(
            reads=target.counters.reads + 1,
            read_errors=target.counters.read_errors + (0 if view.ok else 1),
            queries=target.counters.queries + (target.sessions.queries_sent - before),
        )
        return view, elapsed

    def _timed_out_snapshot(self) -> Snapshot:
        if self._last is None:
            return Snapshot(
                targets=tuple(
                    TargetSnapshot(
                        target=t.name,
                        server=None,
                        items=(),
                        correlation_working=t.memory.correlation_working,
                        dropped_totals=t.memory.dropped_totals,
                        server_age_seconds=None,
                        settings=self._settings,
                    )
                    for t in self._targets
                ),
                collections=self._collections,
                top_sessions=self._top,
            )
        down = tuple(
            dataclasses.replace(
                t,
                server=ServerView(target=t.target, ok=False, error="collection timed out"),
            )
            for t in self._last.targets
        )
        return dataclasses.replace(self._last, targets=down)


def _read_indexed(sessions: SessionSource, timeout: float) -> IndexedView:
    """A whole read (no client filter), indexed for the sidecars' answers."""
    return IndexedView(sessions.read(None, timeout))


def _correlate_and_summarise(
    target: str,
    sockets: Sequence[Socket],
    server: ServerView | None,
    settings: Settings,
    memory: Memory,
    now: float,
    top: int,
) -> tuple[TargetSnapshot, Memory, TargetSummary]:
    """correlate, then the per-process totals rendering needs, in one trip to the pool."""
    snapshot, new_memory = correlate(target, sockets, server, settings, memory, now)
    return snapshot, new_memory, summarise(snapshot, top)


def _after_read(
    sockets: list[Socket], live_keys: list[ConnectionKey], new_own: frozenset[Endpoint]
) -> tuple[frozenset[ConnectionKey], list[Socket]]:
    """After a successful read: the live connections it can know (``live_keys``: those of
    ``sockets``), and the sockets without the exporter's own connections the read has just
    revealed."""
    if new_own:
        sockets = [s for s in sockets if s.local not in new_own]
    return frozenset(live_keys), sockets
