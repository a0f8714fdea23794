"""A sidecar's server side in fleet mode: asks a fleet exporter (``--fleet.url``) for its
own sessions instead of reading the database."""

from __future__ import annotations

import base64
import json
import logging
import threading
import urllib.error
import urllib.parse
import urllib.request

from exporter.deadline import Deadline
from exporter.fleet import FLEET_PATH
from exporter.fleet.wire import FleetFormatError, decode_view
from exporter.model import ReadCounts, ServerView
from exporter.sessions.source import ReadTally

log = logging.getLogger(__name__)

# The least time given to one HTTP request, however little the deadline leaves.
_MIN_REQUEST_SECONDS = 0.1


class FleetSessionSource:
    """A session source that asks the fleet exporter at ``base_url``."""

    # A fleet exporter may answer from its cached read.
    always_fresh = False

    def __init__(self, base_url: str, target: str, *, user: str | None = None,
                 password: str | None = None) -> None:
        if urllib.parse.urlsplit(base_url).scheme not in ("http", "https"):
            raise ValueError(f"fleet URL must be http:// or https://, not {base_url!r}")
        self._base = base_url.rstrip("/")
        self._target = target
        self._authorization = (
            "Basic " + base64.b64encode(f"{user}:{password or ''}".encode()).decode()
            if user
            else None
        )
        self._lock = threading.Lock()
        self._was_ok: bool | None = None
        self._tally = ReadTally()

    def ping(self, deadline: Deadline) -> ServerView | None:
        """Not checked between reads: the fleet exporter's own answers say whether its
        server is up, and asking it costs as much as a read."""
        return None

    def counts(self) -> ReadCounts:
        # The database sees no statement from a sidecar in fleet mode.
        return self._tally.counts(queries=0)

    def read(
        self, client_ips: frozenset[str] | None, deadline: Deadline, *, fresh: bool = False
    ) -> ServerView:
        """``fresh``: ask for a read that starts after the request (the fleet exporter's
        cached answer cannot know a connection this sidecar has just seen)."""
        if not self._lock.acquire(blocking=False):
            view = ServerView(target=self._target, ok=False, error="previous read still running")
        else:
            try:
                view = self._fetch(client_ips, deadline, fresh)
            finally:
                self._lock.release()
        self._tally.record(view)
        if view.ok != self._was_ok:
            if view.ok:
                log.info("fleet source %s answers for %s", self._base, self._target)
            else:
                log.warning("fleet source %s failed for %s: %s", self._base, self._target,
                            view.error)
            self._was_ok = view.ok
        return view

    def _fetch(
        self, client_ips: frozenset[str] | None, deadline: Deadline, fresh: bool
    ) -> ServerView:
        query: list[tuple[str, str]] = [("target", self._target)]
        query += [("client_ip", ip) for ip in sorted(client_ips or ())]
        if client_ips is not None and not client_ips:
            query.append(("client_ip", ""))
        if fresh:
            query.append(("fresh", "1"))
        url = f"{self._base}{FLEET_PATH}?{urllib.parse.urlencode(query)}"
        timeout = max(deadline.remaining(), _MIN_REQUEST_SECONDS)
        # The serving exporter's own deadline: what is left of ours.
        headers = {"Accept": "application/json",
                   "X-Prometheus-Scrape-Timeout-Seconds": f"{timeout:.3f}"}
        # The scheme was checked in __init__: only http and https reach here.
        request = urllib.request.Request(url, headers=headers)  # noqa: S310
        if self._authorization:
            request.add_header("Authorization", self._authorization)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                document = json.loads(response.read())
        except urllib.error.HTTPError as error:
            return ServerView(target=self._target, ok=False, error=f"fleet: HTTP {error.code}")
        except (urllib.error.URLError, OSError, TimeoutError) as error:
            reason = getattr(error, "reason", error)
            return ServerView(target=self._target, ok=False, error=f"fleet: {reason}")
        except ValueError:
            return ServerView(target=self._target, ok=False, error="fleet: answer is not JSON")
        try:
            return decode_view(document, deadline.now())
        except FleetFormatError as error:
            return ServerView(target=self._target, ok=False, error=f"fleet: {error}")

    def close(self) -> None:
        pass
