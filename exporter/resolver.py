"""Name resolution for the watched hosts, which must never hold up a collection.

A target given by name (``db.internal:3306``) needs its addresses to tell its sockets
from the others. Looking them up on every collection, in the pool that also reads the
servers, let one hanging resolver starve every target. Here each name is looked up:

- off the collection's workers, in a thread of its own;
- at most once at a time (a lookup that hangs occupies one thread, never more);
- within a time bound, after which the lookup counts as failed (the thread is left to
  finish, and its answer is still taken when it comes);
- again only when its addresses are older than the refresh period;

and the last good addresses stay in use while later lookups fail. A failure shows as a
count in a metric and one log line when the name stops (and starts again) resolving.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

from exporter.addresses import normalise_ip
from exporter.deadline import Clock, Deadline
from exporter.model import ResolveStatus

log = logging.getLogger(__name__)

Lookup = Callable[[str], frozenset[str]]

REFRESH_SECONDS = 60.0
LOOKUP_TIMEOUT_SECONDS = 5.0


def lookup_host(host: str) -> frozenset[str]:
    """IP addresses of a host name, normalised (the system resolver; may block)."""
    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    return frozenset(normalise_ip(str(info[4][0])) for info in infos)


def literal_address(host: str) -> frozenset[str] | None:
    """The address itself when ``host`` is an IP literal (nothing to look up)."""
    try:
        return frozenset({normalise_ip(str(ipaddress.ip_address(host.strip("[]"))))})
    except ValueError:
        return None


@dataclass
class _Entry:
    """What is known of one name. Written only on the event loop."""

    status: ResolveStatus
    resolved_at: float | None = None
    pending: asyncio.Future[frozenset[str]] | None = None
    started_at: float = 0.0
    failing: bool = False


class AddressBook:
    """Addresses of the watched hosts, by name. Used from the event loop only."""

    def __init__(
        self,
        lookup: Lookup = lookup_host,
        *,
        clock: Clock,
        refresh_seconds: float = REFRESH_SECONDS,
        timeout_seconds: float = LOOKUP_TIMEOUT_SECONDS,
    ) -> None:
        self._lookup = lookup
        self._clock = clock
        self._refresh = refresh_seconds
        self._timeout = timeout_seconds
        self._entries: dict[str, _Entry] = {}

    def status(self, host: str) -> ResolveStatus:
        entry = self._entries.get(host)
        if entry is None:
            literal = literal_address(host)
            return ResolveStatus(addresses=literal or frozenset())
        return entry.status

    def known(self, host: str) -> ResolveStatus | None:
        """The host's addresses for this collection when they need no waiting (a due
        refresh starts in the background), else None: its first lookup is still running."""
        literal = literal_address(host)
        if literal is not None:
            return ResolveStatus(addresses=literal)
        entry = self._entries.setdefault(host, _Entry(ResolveStatus()))
        now = self._clock()
        self._expire(host, entry, now)
        due = entry.resolved_at is None or now - entry.resolved_at >= self._refresh
        if due and entry.pending is None:
            self._start(host, entry, now)
        if entry.status.addresses or entry.pending is None:
            return entry.status
        return None

    async def addresses(self, host: str, deadline: Deadline) -> ResolveStatus:
        """The host's addresses for this collection: at once when some are known (a due
        refresh starts in the background), else after waiting for the first lookup, but
        never past the deadline."""
        known = self.known(host)
        if known is not None:
            return known
        entry = self._entries[host]
        pending = entry.pending
        assert pending is not None  # known() said so
        now = self._clock()
        # Nothing known yet: the first lookup decides, within its bound and the deadline.
        wait = min(deadline.remaining(), self._timeout - (now - entry.started_at))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(pending), max(wait, 0.0))
        self._expire(host, entry, self._clock())
        return entry.status

    def _start(self, host: str, entry: _Entry, now: float) -> None:
        loop = asyncio.get_running_loop()
        pending: asyncio.Future[frozenset[str]] = loop.create_future()
        entry.pending, entry.started_at = pending, now

        def run() -> None:
            found: frozenset[str] | None = None
            error: Exception | None = None
            try:
                found = self._lookup(host)
            except Exception as failure:  # any failure is the lookup's, reported as such
                error = failure
            # The exporter may have stopped meanwhile (the loop is closed): nobody waits.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._finish, host, pending, found, error)

        # A daemon thread per lookup, at most one per name: a resolver that never answers
        # costs one parked thread, and neither the collection's pool nor the exit waits.
        threading.Thread(target=run, name=f"resolve {host}", daemon=True).start()

    def _finish(
        self,
        host: str,
        pending: asyncio.Future[frozenset[str]],
        found: frozenset[str] | None,
        error: BaseException | None,
    ) -> None:
        entry = self._entries[host]
        if entry.pending is pending:
            entry.pending = None
        entry.resolved_at = self._clock()
        if found:
            self._succeeded(host, entry, found)
        else:
            reason = str(error) if error is not None else "no addresses"
            if isinstance(error, socket.gaierror) and error.strerror:
                reason = error.strerror
            # A lookup already counted as timed out is not counted a second time.
            self._failed(host, entry, reason, count=entry.status.error != _TIMED_OUT)
        if not pending.done():
            pending.set_result(found or frozenset())

    def _expire(self, host: str, entry: _Entry, now: float) -> None:
        """A lookup running longer than the bound counts as failed, once; it keeps its
        place (one lookup per name) until it returns."""
        pending = entry.pending
        if (
            pending is not None
            and not pending.done()
            and now - entry.started_at >= self._timeout
            and entry.status.error != _TIMED_OUT
        ):
            self._failed(host, entry, _TIMED_OUT)

    def _succeeded(self, host: str, entry: _Entry, found: frozenset[str]) -> None:
        if entry.failing:
            log.info("%s resolves again: %s", host, ", ".join(sorted(found)))
        elif found != entry.status.addresses and entry.status.addresses:
            log.info("%s now resolves to %s", host, ", ".join(sorted(found)))
        entry.failing = False
        entry.status = ResolveStatus(addresses=found, failures=entry.status.failures)

    def _failed(self, host: str, entry: _Entry, reason: str, *, count: bool = True) -> None:
        if not entry.failing:
            kept = entry.status.addresses
            log.warning(
                "cannot resolve %s: %s; %s", host, reason,
                f"keeping {', '.join(sorted(kept))}" if kept else "its sockets cannot be told",
            )
        entry.failing = True
        entry.status = ResolveStatus(
            addresses=entry.status.addresses,
            failures=entry.status.failures + (1 if count else 0),
            error=reason,
        )


_TIMED_OUT = "lookup timed out"
