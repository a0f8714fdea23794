"""The web config in force, re-read when its files change, and on SIGHUP.

exporter-toolkit re-reads its web config on every request, so a new password or a
certificate rotated by cert-manager takes effect without a restart. Parsing per request
would cost milliseconds here, so the files are watched instead: before each request and
each TLS handshake, one stat() per file (the config, certificate, key, client CA). When
one changed, the config is read again on the spot (a few milliseconds: YAML, certificates
and bcrypt hashes checked at cost 4), so the very request or connection that follows a
change already sees it.

A config that has become invalid leaves the last good one in force; that shows in
`mysql_idle_web_config_last_reload_successful` (as Prometheus's own
`prometheus_config_last_reload_successful`) and in one log line per change of the files.

TLS: the listening socket keeps one SSLContext. A reloaded certificate, key or client CA
reaches new connections through its SNI callback, which runs at every handshake (with or
without a server name) and hands the connection the current context; the protocol
versions and client-certificate mode are copied onto the listening context, where they
apply from the connection after the one that noticed the change. Turning TLS on or off
needs a new listening socket: such a reload is refused (restart the exporter).
"""

from __future__ import annotations

import hashlib
import logging
import os
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from exporter.web.config import WebConfig, WebConfigError, load_web_config

log = logging.getLogger(__name__)

# stat() alone misses a same-size rewrite in place within one tick of the filesystem's
# clock (a few milliseconds); a file modified this recently is compared by content too.
SETTLE_SECONDS = 2.0


@dataclass(frozen=True)
class _FileState:
    stat: tuple[int, ...]  # (errno,) when it cannot be read
    digest: bytes | None  # content, while the file is young


def _observe(path: Path, now: float) -> _FileState:
    try:
        st = os.stat(path)  # follows symlinks: a Kubernetes secret mount swaps a link
    except OSError as error:
        return _FileState((error.errno or -1,), None)
    stat = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    return _FileState(stat, _content(path) if now - st.st_mtime < SETTLE_SECONDS else None)


def _content(path: Path) -> bytes:
    try:
        return hashlib.sha256(path.read_bytes()).digest()
    except OSError:
        return b""


def describe_changes(old: WebConfig, new: WebConfig) -> list[str]:
    """What a reload changed, for one log line; never a hash, key or password."""
    changes: list[str] = []
    before, after = old.tls_identity, new.tls_identity
    if before.get("certificate") != after.get("certificate"):
        changes.append(f"certificate changed (sha256 {after.get('certificate', '')[:16]})")
    for part in ("key", "client CA"):
        if before.get(part) != after.get(part):
            changes.append(f"{part} changed")
    for setting in ("min_version", "max_version", "client_auth_type"):
        if before.get(setting) != after.get(setting):
            changes.append(f"{setting} {before.get(setting)} -> {after.get(setting)}")
    users_before = dict(old.basic_auth.users) if old.basic_auth else {}
    users_after = dict(new.basic_auth.users) if new.basic_auth else {}
    added = sorted(set(users_after) - set(users_before))
    removed = sorted(set(users_before) - set(users_after))
    rehashed = sorted(u for u in set(users_before) & set(users_after)
                      if users_before[u] != users_after[u])
    for label, names in (("users added", added), ("users removed", removed),
                         ("password changed", rehashed)):
        if names:
            changes.append(f"{label}: {', '.join(names)}")
    if dict(old.headers) != dict(new.headers):
        changes.append("headers changed")
    return changes


class WebConfigWatcher:
    """Owns the web config in force. Used from the event loop only: requests, handshakes
    and the SIGHUP handler all run there, so nothing here is locked."""

    def __init__(self, path: str | os.PathLike[str], *, require_authentication: bool = False,
                 clock: Callable[[], float] = time.time) -> None:
        """Loads the file; raises WebConfigError if it is unusable (the caller exits 2).
        `require_authentication`: a reload that leaves no password or client certificate
        required is refused (fleet serving without --fleet.allow-unauthenticated)."""
        self.path = Path(path)
        self._clock = clock
        self._require_authentication = require_authentication
        states = {self.path: _observe(self.path, clock())}
        referenced: list[Path] = []
        self._config = load_web_config(self.path, referenced)
        self._states = self._watch(states, referenced)
        self.last_reload_successful = True
        self.last_success_time = clock()
        # The context the listening socket keeps for its whole life.
        self.listening_context = self._config.ssl_context
        if self.listening_context is not None:
            self.listening_context.sni_callback = self._on_handshake

    @property
    def config(self) -> WebConfig:
        """The config in force, re-read first if one of its files changed."""
        if self._changed():
            self._reload("file changed")
        return self._config

    def reload(self, reason: str) -> None:
        """Re-read now whatever the files look like (SIGHUP); always logs one line."""
        self._reload(reason, forced=True)

    def _changed(self) -> bool:
        now = self._clock()
        for path, recorded in self._states.items():
            current = _observe(path, now)
            if current.stat != recorded.stat:
                return True
            if recorded.digest is not None:
                if _content(path) != recorded.digest:
                    return True
                if current.digest is None:  # settled: stat alone will do from now on
                    self._states[path] = current
        return False

    def _watch(self, before: dict[Path, _FileState], referenced: list[Path]
               ) -> dict[Path, _FileState]:
        """States to compare against: as seen before reading for the files known then (a
        change during the read is then seen next time), now for the ones found in it."""
        now = self._clock()
        return {path: before.get(path) or _observe(path, now) for path in referenced}

    def _reload(self, reason: str, *, forced: bool = False) -> None:
        now = self._clock()
        before = {path: _observe(path, now) for path in self._states}
        referenced: list[Path] = []
        try:
            config = load_web_config(self.path, referenced)
            self._check(config)
        except WebConfigError as error:
            self._states = self._watch(before, referenced)
            self.last_reload_successful = False
            log.error("web config invalid (%s), keeping the last good one: %s", reason, error)
            return
        self._states = self._watch(before, referenced)
        changes = describe_changes(self._config, config)
        self._config = config
        self.last_reload_successful = True
        self.last_success_time = self._clock()
        if config.ssl_context is not None and self.listening_context is not None:
            # Settings that a handshake cannot switch: new connections take them here.
            self.listening_context.minimum_version = config.ssl_context.minimum_version
            self.listening_context.maximum_version = config.ssl_context.maximum_version
            self.listening_context.verify_mode = config.ssl_context.verify_mode
        if changes:
            log.info("web config reloaded (%s): %s", reason, "; ".join(changes))
        elif forced:
            log.info("web config unchanged (%s)", reason)

    def _check(self, config: WebConfig) -> None:
        if (config.ssl_context is None) != (self.listening_context is None):
            raise WebConfigError(
                f"{self.path}: turning TLS {'on' if config.ssl_context else 'off'} needs a "
                "restart of the exporter"
            )
        if self._require_authentication and not config.authenticates:
            raise WebConfigError(
                f"{self.path}: --fleet.serve needs basic_auth_users or "
                "RequireAndVerifyClientCert (or --fleet.allow-unauthenticated)"
            )

    def _on_handshake(self, connection: ssl.SSLObject | ssl.SSLSocket,
                      server_name: str | None, context: ssl.SSLContext) -> None:
        current = self.config.ssl_context
        if current is not None and current is not context:
            connection.context = current


class WebConfigCollector(Collector):
    """The watcher's state as metrics, named after Prometheus's own."""

    def __init__(self, watcher: WebConfigWatcher) -> None:
        self._watcher = watcher

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "mysql_idle_web_config_last_reload_successful",
            "1 if the last reading of --web.config.file succeeded; 0 if the file became "
            "invalid and the last good one is still in force.",
            value=1.0 if self._watcher.last_reload_successful else 0.0,
        )
        yield GaugeMetricFamily(
            "mysql_idle_web_config_last_reload_success_timestamp_seconds",
            "When --web.config.file was last read successfully (Unix time).",
            value=self._watcher.last_success_time,
        )
