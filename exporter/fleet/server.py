"""The serving side of fleet mode (``--fleet.serve``): each target's whole processlist,
read at most once per interval however many sidecars ask, indexed by client address so
that each answer costs in proportion to the asking sidecar's own sessions."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from exporter.deadline import Clock, Deadline
from exporter.fleet import DEFAULT_FRESH_INTERVAL_SECONDS
from exporter.fleet.wire import IndexedView
from exporter.model import ServerView
from exporter.sessions.source import SessionSource
from exporter.single_flight import SingleFlight

# A cached read serves non-fresh requests for at least this long, even with
# --server.interval 0 (which asks a sidecar's own direct reads to happen every scrape).
_MIN_CACHE_SECONDS = 1.0


@dataclass
class _Served:
    """One target's reads for sidecars. Written on the event loop only."""

    sessions: SessionSource
    reads: SingleFlight[IndexedView]
    # The next fresh read, not started yet, that sidecars' fresh requests share.
    fresh: SingleFlight[IndexedView]
    last: IndexedView | None = None
    started_at: float | None = None


class FleetServer:
    """Serves the server-side facts of the given targets to sidecars."""

    def __init__(
        self,
        targets: Mapping[str, SessionSource],
        *,
        clock: Clock,
        interval: float = 30.0,
        fresh_interval: float = DEFAULT_FRESH_INTERVAL_SECONDS,
    ) -> None:
        """``fresh_interval``: the least time between the starts of fresh reads
        (--fleet.fresh-interval)."""
        self._clock = clock
        self._interval = max(interval, _MIN_CACHE_SECONDS)
        self.fresh_interval = fresh_interval
        self._pool = ThreadPoolExecutor(
            max_workers=max(len(targets), 1), thread_name_prefix="fleet"
        )
        self._served = {
            name: _Served(
                sessions=sessions,
                reads=SingleFlight(functools.partial(self._read, name)),
                fresh=SingleFlight(functools.partial(self._fresh_read, name)),
            )
            for name, sessions in targets.items()
        }

    @property
    def target_names(self) -> list[str]:
        return list(self._served)

    async def read(self, name: str, deadline: Deadline, *, fresh: bool = False) -> IndexedView:
        """The whole processlist of one target, indexed by client address.

        A ``fresh`` request (a sidecar saw a connection that its last answer cannot know)
        gets a read that starts after it arrived; all fresh requests waiting at that moment
        share it, and such reads start at least ``fresh_interval`` apart. Other requests get
        the cached read while it is younger than the interval, else share the next one."""
        served = self._served.get(name)
        if served is None:
            return IndexedView(ServerView(target=name, ok=False, error="unknown target"))
        if fresh:
            result = await served.fresh.wait(deadline)
        else:
            cached = served.last
            if (
                cached is not None
                and cached.view.ok
                and self._clock() - cached.view.read_at < self._interval
            ):
                return cached
            result = await served.reads.wait(deadline)
        if result is None:
            return IndexedView(ServerView(target=name, ok=False, error="server read timed out"))
        return result

    async def _fresh_read(self, name: str, deadline: Deadline) -> IndexedView:
        served = self._served[name]
        while True:
            running = served.reads.running
            if running is not None:
                await asyncio.wait([running])  # one read at a time per target
                continue
            started = served.started_at
            if started is None:
                break
            gap = self.fresh_interval - (self._clock() - started)
            if gap <= 0:
                break
            await asyncio.sleep(gap)
        # From here on, a new fresh request needs the next read: this one may be under way.
        served.fresh.detach()
        return await served.reads.start(deadline)

    async def _read(self, name: str, deadline: Deadline) -> IndexedView:
        served = self._served[name]
        served.started_at = self._clock()
        loop = asyncio.get_running_loop()
        # Indexed in the pool with the read: it walks every session, once per read.
        read = await loop.run_in_executor(self._pool, _read_indexed, served.sessions, deadline)
        served.last = read
        return read

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _read_indexed(sessions: SessionSource, deadline: Deadline) -> IndexedView:
    """A whole read (no client filter), indexed for the sidecars' answers."""
    return IndexedView(sessions.read(None, deadline))
