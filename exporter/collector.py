"""Renders a collection snapshot as metric families (exporter.families: plain values that
exporter.exposition writes as text, and prometheus_client's own families for every other
use). It computes nothing new."""

from __future__ import annotations

import math
import platform
from collections.abc import Iterable, Iterator, Mapping, Sequence

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.causes import ALL_CAUSES
from exporter.families import AnyFamily, Counter, Gauge, Histogram
from exporter.model import (
    ALL_STATES,
    Classified,
    Session,
    Snapshot,
    TargetReport,
    TargetSnapshot,
    TargetSummary,
)
from exporter.sockets.owners import WITHOUT_OWNER_REASONS
from exporter.summary import utf8_label

IDLE_BUCKETS: tuple[float, ...] = (
    1, 5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400,
)


def histogram_buckets(values: Iterable[float]) -> tuple[list[tuple[str, float]], float]:
    """Cumulative buckets (with +Inf) and the sum, for values that are a current distribution."""
    ordered = sorted(values)
    buckets: list[tuple[str, float]] = []
    position = 0
    for bound in IDLE_BUCKETS:
        while position < len(ordered) and ordered[position] <= bound:
            position += 1
        buckets.append((_bound_text(bound), float(position)))
    buckets.append(("+Inf", float(len(ordered))))
    return buckets, float(math.fsum(ordered))


def _bound_text(bound: float) -> str:
    return str(float(bound))


# A target's snapshot, a summary of (part of) its sockets, their drop totals, the values
# of the place labels (node mode: pod, container; local mode: none), and their drops by
# (process, cause).
_Summarised = tuple[TargetSnapshot, TargetSummary, Mapping[str, int], list[str],
                    Mapping[tuple[str, str], int]]

PLACE_LABELS = ["pod", "container"]


def _place_values(item: Classified) -> list[str]:
    place = item.socket.place
    return ["", ""] if place is None else [place.pod, place.container]


def _session_labels(target: str, item: Classified, session: Session) -> list[str]:
    """The leading labels of a per-session series: target, process, pid, session_id."""
    pid = item.socket.pid
    return [target, utf8_label(item.socket.process), "" if pid is None else str(pid),
            str(session.id)]


class SnapshotCollector(Collector):
    """A prometheus_client collector over one immutable snapshot."""

    def __init__(
        self,
        snapshot: Snapshot,
        *,
        include_build_info: bool = True,
        render_seconds: float | None = None,
    ) -> None:
        self._snapshot = snapshot
        self._include_build_info = include_build_info
        self._render_seconds = render_seconds
        # Node mode: socket-side series say where the socket lives.
        self._place = PLACE_LABELS if snapshot.node else []

    def _item_place(self, item: Classified) -> list[str]:
        """A per-session series' place labels: pod and container in node mode."""
        return _place_values(item) if self._place else []

    def collect(self) -> Iterator[Metric]:
        """The families as prometheus_client's, for its registries and encoders."""
        for family in self.families():
            yield to_metric(family)

    def families(self) -> Iterator[AnyFamily]:
        """The families as plain values; label values are as they come (exporter.exposition
        and to_metric make them valid UTF-8)."""
        reports = self._snapshot.reports
        targets = [r.snapshot for r in reports]
        summaries: list[_Summarised] = []
        for r in reports:
            if self._snapshot.node:
                summaries.extend((r.snapshot, p.summary, p.dropped_totals,
                                  [p.place.pod, p.place.container], p.cause_totals)
                                 for p in r.places)
            else:
                summaries.append((r.snapshot, r.summary, r.snapshot.dropped_totals, [],
                                  r.snapshot.cause_totals))
        yield from self._up(targets)
        yield from self._server(targets)
        yield from self._sessions(summaries)
        yield from self._headroom(summaries)
        yield from self._histograms(summaries)
        yield from self._drops(summaries)
        yield from self._transactions(summaries)
        yield from self._limits(summaries)
        if self._snapshot.node:
            yield self._places(reports)
        yield self._without_owner()
        yield from self._self_metrics(reports)

    def _up(self, targets: Sequence[TargetSnapshot]) -> Iterator[AnyFamily]:
        up = Gauge(
            "mysql_idle_up",
            "1 if the server answered at this scrape (its read, or between reads its ping).",
            labels=["target"],
        )
        for t in targets:
            up.add_metric([t.target], 1.0 if t.server is not None and t.server.ok else 0.0)
        yield up

    def _server(self, targets: Sequence[TargetSnapshot]) -> Iterator[AnyFamily]:
        timeouts = Gauge(
            "mysql_idle_wait_timeout_seconds",
            "The server's global idle limits: wait_timeout (scope global), "
            "interactive_timeout, and MariaDB's idle_transaction_timeout, "
            "idle_readonly_transaction_timeout and idle_write_transaction_timeout (scopes "
            "transaction, readonly_transaction, write_transaction; only where set).",
            labels=["target", "scope"],
        )
        info = Gauge(
            "mysql_idle_server_info",
            "Server flavor, version and the processlist source in use.",
            labels=["target", "flavor", "version", "source"],
        )
        full = Gauge(
            "mysql_idle_full_processlist",
            "1 when the exporter sees every session (PROCESS), 0 for its own sessions only.",
            labels=["target"],
        )
        per_session = Gauge(
            "mysql_idle_per_session_timeouts",
            "1 when each session's own wait_timeout is read, 0 when the global one is assumed.",
            labels=["target"],
        )
        working = Gauge(
            "mysql_idle_correlation_working",
            "1 when sockets of this target match server sessions (phantoms need this).",
            labels=["target"],
        )
        threshold = Gauge(
            "mysql_idle_headroom_threshold_seconds",
            "Sessions with headroom at or below this are at_risk (--risk.headroom).",
            labels=["target"],
        )
        network = Gauge(
            "mysql_idle_network_idle_timeout_seconds",
            "The configured idle limit of the network path (--network.idle-timeout).",
            labels=["target"],
        )
        age = Gauge(
            "mysql_idle_server_read_age_seconds",
            "Age of the server-side facts used by the last collection.",
            labels=["target"],
        )
        for t in targets:
            server = t.server
            threshold.add_metric([t.target], t.settings.risk_headroom)
            if t.settings.network_idle_timeout is not None:
                network.add_metric([t.target], t.settings.network_idle_timeout)
            working.add_metric([t.target], 1.0 if t.correlation_working else 0.0)
            if server is None or not server.ok:
                continue
            if server.wait_timeout is not None:
                timeouts.add_metric([t.target, "global"], server.wait_timeout)
            if server.interactive_timeout is not None:
                timeouts.add_metric([t.target, "interactive"], server.interactive_timeout)
            for scope, value in (
                ("transaction", server.idle_transaction_timeout),
                ("readonly_transaction", server.idle_readonly_transaction_timeout),
                ("write_transaction", server.idle_write_transaction_timeout),
            ):
                if value:
                    timeouts.add_metric([t.target, scope], value)
            flavor = server.flavor.value if server.flavor is not None else "unknown"
            info.add_metric([t.target, flavor, server.version, server.source], 1.0)
            full.add_metric([t.target], 1.0 if server.full_view else 0.0)
            per_session.add_metric([t.target], 1.0 if server.per_session_timeouts else 0.0)
            if t.server_age_seconds is not None:
                age.add_metric([t.target], t.server_age_seconds)
        yield from (timeouts, info, full, per_session, working, threshold, network, age)

    def _sessions(self, summaries: Sequence[_Summarised]) -> Iterator[AnyFamily]:
        sessions = Gauge(
            "mysql_idle_sessions",
            "Sockets and sessions by state and owning process.",
            labels=["target", "state", "process", *self._place],
        )
        keepalive = Gauge(
            "mysql_idle_sockets_keepalive",
            "Sockets with the kernel's TCP keepalive timer armed.",
            labels=["target", "process", *self._place],
        )
        names = Gauge(
            "mysql_idle_process_info",
            "1 per process label and the plain process name (comm) of its owners.",
            labels=["target", "process", "comm", *self._place],
        )
        for t, summary, _, place, _ in summaries:
            for process, totals in summary.processes.items():
                for state, count in zip(ALL_STATES, totals.states, strict=True):
                    sessions.add_metric([t.target, state.value, process, *place], float(count))
                keepalive.add_metric([t.target, process, *place], float(totals.keepalive))
                for comm in totals.comms:
                    names.add_metric([t.target, process, comm, *place], 1.0)
        yield sessions
        yield keepalive
        yield names

    def _headroom(self, summaries: Sequence[_Summarised]) -> Iterator[AnyFamily]:
        minimum = Gauge(
            "mysql_idle_min_headroom_seconds",
            "Smallest headroom (timeout minus idle) among a process's idle sessions.",
            labels=["target", "process", *self._place],
        )
        per_session = Gauge(
            "mysql_idle_session_headroom_seconds",
            "Headroom of the riskiest idle sessions (at most --sessions.top series).",
            labels=["target", "process", "pid", "session_id", "user", "db", *self._place],
        )
        for t, summary, _, place, _ in summaries:
            for process, totals in summary.processes.items():
                if totals.min_headroom is not None:
                    minimum.add_metric([t.target, process, *place], totals.min_headroom)
        # The riskiest of each target as a whole: --sessions.top bounds them across places.
        for report in self._snapshot.reports:
            t, summary = report.snapshot, report.summary
            for item in summary.riskiest:
                assert item.session is not None and item.headroom_seconds is not None
                per_session.add_metric(
                    [*_session_labels(t.target, item, item.session), item.session.user,
                     item.session.db or "", *self._item_place(item)],
                    item.headroom_seconds,
                )
        yield minimum
        yield per_session

    def _histograms(self, summaries: Sequence[_Summarised]) -> Iterator[AnyFamily]:
        server_idle = Histogram(
            "mysql_idle_session_idle_seconds",
            "Idle seconds of matched idle sessions (the current distribution, not cumulative).",
            labels=["target", "process", *self._place],
        )
        client_idle = Histogram(
            "mysql_idle_client_idle_seconds",
            "Client-side silence per socket from tcp_info (the current distribution).",
            labels=["target", "process", *self._place],
        )
        for t, summary, _, place, _ in summaries:
            for process, totals in summary.processes.items():
                if totals.server_idle:
                    buckets, total = histogram_buckets(totals.server_idle)
                    server_idle.add_metric([t.target, process, *place], buckets, total)
                buckets, total = histogram_buckets(totals.client_idle)
                client_idle.add_metric([t.target, process, *place], buckets, total)
        yield server_idle
        yield client_idle

    def _drops(self, summaries: Sequence[_Summarised]) -> Iterator[AnyFamily]:
        drops = Counter(
            "mysql_idle_sessions_dropped",
            "Sessions seen to die idle (became dropped, or vanished after their timeout).",
            labels=["target", "process", *self._place],
        )
        for t, summary, dropped_totals, place, _ in summaries:
            # Zero from a process's first sighting, so increase() sees its first drop.
            totals: dict[str, int] = dict.fromkeys(summary.processes, 0)
            for process, total in dropped_totals.items():
                totals[utf8_label(process)] = totals.get(utf8_label(process), 0) + total
            for process in sorted(totals):
                drops.add_metric([t.target, process, *place], float(totals[process]))
        yield drops
        causes = Counter(
            "mysql_idle_sessions_dropped_by_cause",
            "Sessions seen to die, by cause: idle_timeout, transaction_timeout, network "
            "(the path's limit, or a phantom), killed, restart, unknown. Every drop of "
            "mysql_idle_sessions_dropped_total once its cause is known, and phantoms.",
            labels=["target", "process", "cause", *self._place],
        )
        for t, summary, _, place, cause_totals in summaries:
            counted: dict[tuple[str, str], int] = {}
            for (raw, why), total in cause_totals.items():
                key = (utf8_label(raw), why)
                counted[key] = counted.get(key, 0) + total
            processes = set(summary.processes) | {process for process, _ in counted}
            for process in sorted(processes):
                for cause in ALL_CAUSES:
                    causes.add_metric([t.target, process, cause.value, *place],
                                      float(counted.get((process, cause.value), 0)))
        yield causes

    def _transactions(self, summaries: Sequence[_Summarised]) -> Iterator[AnyFamily]:
        count = Gauge(
            "mysql_idle_sessions_in_transaction",
            "Matched sessions asleep inside an open InnoDB transaction: they hold its locks "
            "and undo history while their process does something else.",
            labels=["target", "process", *self._place],
        )
        oldest = Gauge(
            "mysql_idle_transaction_oldest_seconds",
            "Age of the oldest open transaction among a process's idle sessions.",
            labels=["target", "process", *self._place],
        )
        idle = Gauge(
            "mysql_idle_transaction_idle_seconds",
            "Longest idle time among a process's sessions asleep inside a transaction.",
            labels=["target", "process", *self._place],
        )
        locked = Gauge(
            "mysql_idle_transaction_rows_locked",
            "Rows locked by the open transactions of a process's idle sessions.",
            labels=["target", "process", *self._place],
        )
        modified = Gauge(
            "mysql_idle_transaction_rows_modified",
            "Rows modified by the open transactions of a process's idle sessions.",
            labels=["target", "process", *self._place],
        )
        per_session = Gauge(
            "mysql_idle_session_transaction_seconds",
            "Age of the open transaction of the idle sessions inside the oldest ones (at "
            "most --sessions.top series).",
            labels=["target", "process", "pid", "session_id", "user", "db", *self._place],
        )
        for t, summary, _, place, _ in summaries:
            for process, totals in summary.processes.items():
                count.add_metric([t.target, process, *place], float(totals.in_transaction))
                if totals.in_transaction:
                    labels = [t.target, process, *place]
                    oldest.add_metric(labels, totals.transaction_oldest or 0.0)
                    idle.add_metric(labels, totals.transaction_idle or 0.0)
                    locked.add_metric(labels, float(totals.rows_locked))
                    modified.add_metric(labels, float(totals.rows_modified))
        # The oldest of each target as a whole: --sessions.top bounds them across places.
        for report in self._snapshot.reports:
            for item in report.summary.transactions:
                session = item.session
                assert session is not None and session.transaction_seconds is not None
                per_session.add_metric(
                    [*_session_labels(report.snapshot.target, item, session), session.user,
                     session.db or "", *self._item_place(item)],
                    session.transaction_seconds,
                )
        yield from (count, oldest, idle, locked, modified, per_session)

    def _limits(self, summaries: Sequence[_Summarised]) -> Iterator[AnyFamily]:
        by_limit = Gauge(
            "mysql_idle_sessions_by_limit",
            "Idle sessions by the limit that governs them (the smallest that applies): "
            "wait_timeout, session_wait_timeout, interactive_timeout, "
            "idle_transaction_timeout, idle_readonly_transaction_timeout, "
            "idle_write_transaction_timeout, network_idle_timeout.",
            labels=["target", "process", "limit", *self._place],
        )
        per_session = Gauge(
            "mysql_idle_session_timeout_seconds",
            "The limit of the riskiest idle sessions (those of "
            "mysql_idle_session_headroom_seconds), and which one it is.",
            labels=["target", "process", "pid", "session_id", "limit", *self._place],
        )
        late = Gauge(
            "mysql_idle_sockets_keepalive_late",
            "Open sockets whose keepalive is off, or sends its next probe after the path's "
            "idle limit (--network.idle-timeout; only where set): the path forgets them.",
            labels=["target", "process", *self._place],
        )
        for t, summary, _, place, _ in summaries:
            network = t.settings.network_idle_timeout is not None
            for process, totals in summary.processes.items():
                for limit, number in totals.limits:
                    by_limit.add_metric([t.target, process, limit, *place], float(number))
                if network:
                    late.add_metric([t.target, process, *place], float(totals.keepalive_late))
        # The sessions of mysql_idle_session_headroom_seconds: the target's riskiest.
        for report in self._snapshot.reports:
            for item in report.summary.riskiest:
                if item.session is None or item.timeout_kind is None:
                    continue
                per_session.add_metric(
                    [*_session_labels(report.snapshot.target, item, item.session),
                     item.timeout_kind.value, *self._item_place(item)],
                    item.timeout_seconds or 0.0,
                )
        yield from (by_limit, per_session, late)

    def _places(self, reports: Sequence[TargetReport]) -> AnyFamily:
        family = Gauge(
            "mysql_idle_place_info",
            "Node mode: 1 per pod and container holding watched sockets, with the pod's UID "
            "and the container runtime from the owner's cgroup path.",
            labels=["pod", "container", "pod_uid", "runtime"],
        )
        seen: set[tuple[str, str, str, str]] = set()
        for report in reports:
            for part in report.places:
                place = part.place
                values = (place.pod, place.container, place.pod_uid, place.runtime)
                if values not in seen:
                    seen.add(values)
                    family.add_metric(list(values), 1.0)
        return family

    def _without_owner(self) -> AnyFamily:
        family = Gauge(
            "mysql_idle_sockets_without_owner",
            "Watched sockets whose owning process cannot be read, by reason: no_permission "
            "(needs the same uid and gid, or CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH) or "
            "not_visible (not in this PID namespace: shareProcessNamespace).",
            labels=["reason"],
        )
        counts = self._snapshot.sockets_without_owner
        for reason in WITHOUT_OWNER_REASONS:
            family.add_metric([reason], float(counts.get(reason, 0)))
        return family

    def _self_metrics(self, reports: Sequence[TargetReport]) -> Iterator[AnyFamily]:
        durations = Gauge(
            "mysql_idle_scrape_duration_seconds",
            "Seconds spent per phase of the last collection.",
            labels=["target", "phase"],
        )
        for report in sorted(reports, key=lambda r: r.snapshot.target):
            for phase, seconds in sorted(report.durations.items()):
                durations.add_metric([report.snapshot.target, phase], seconds)
        yield durations
        if self._render_seconds is not None:
            render = Gauge(
                "mysql_idle_render_duration_seconds",
                "Seconds the previous answer took to render its body (after the collection).",
            )
            render.add_metric([], self._render_seconds)
            yield render
        reads = Counter(
            "mysql_idle_server_reads", "Server-side reads attempted.", labels=["target"]
        )
        errors = Counter(
            "mysql_idle_server_read_errors", "Server-side reads that failed.", labels=["target"]
        )
        queries = Counter(
            "mysql_idle_server_queries",
            "SQL statements sent to the server.",
            labels=["target"],
        )
        pings = Counter(
            "mysql_idle_server_pings",
            "Liveness checks (COM_PING, no statement) sent between server reads.",
            labels=["target"],
        )
        internal = Counter(
            "mysql_idle_internal_errors",
            "Reads and collections that failed from a bug in the exporter, not from the "
            "server (the first one's traceback is logged).",
            labels=["target"],
        )
        resolve_failures = Counter(
            "mysql_idle_resolve_failures",
            "Lookups of the target's host name that failed or timed out.",
            labels=["target"],
        )
        addresses = Gauge(
            "mysql_idle_target_addresses",
            "IP addresses known for the target (0: its sockets cannot be told).",
            labels=["target"],
        )
        for report in sorted(reports, key=lambda r: r.snapshot.target):
            target, counts = report.snapshot.target, report.counts
            reads.add_metric([target], float(counts.reads))
            errors.add_metric([target], float(counts.read_errors))
            queries.add_metric([target], float(counts.queries))
            pings.add_metric([target], float(counts.pings))
            internal.add_metric([target], float(counts.internal_errors))
            resolve_failures.add_metric([target], float(report.resolve.failures))
            addresses.add_metric([target], float(len(report.resolve.addresses)))
        yield from (reads, errors, queries, pings, internal, resolve_failures, addresses)
        socket_errors = Counter(
            "mysql_idle_socket_read_errors",
            "Collections whose socket listing failed (the first one's traceback is logged).",
        )
        socket_errors.add_metric([], float(self._snapshot.socket_read_errors))
        yield socket_errors
        collections = Counter(
            "mysql_idle_collections", "Collections run (concurrent scrapes share one)."
        )
        collections.add_metric([], float(self._snapshot.collections))
        yield collections
        if self._include_build_info:
            build = Gauge(
                "mysql_idle_build_info",
                "Build information.",
                labels=["version", "python_version"],
            )
            build.add_metric([__version__, platform.python_version()], 1.0)
            yield build


def to_metric(family: AnyFamily) -> Metric:
    """prometheus_client's family for a plain one, label values made valid UTF-8."""
    if isinstance(family, Histogram):
        histogram = HistogramMetricFamily(family.name, family.documentation,
                                          labels=family.labels)
        for values, buckets, total in family.rows:
            histogram.add_metric([utf8_label(v) for v in values], buckets, total)
        return histogram
    metric: CounterMetricFamily | GaugeMetricFamily
    if isinstance(family, Counter):
        metric = CounterMetricFamily(family.name, family.documentation, labels=family.labels)
    else:
        metric = GaugeMetricFamily(family.name, family.documentation, labels=family.labels)
    for values, value in family.rows:
        metric.add_metric([utf8_label(v) for v in values], value)
    return metric
