"""The /metrics body's encoding: written straight from the collector's families
(exporter.exposition, exporter.web.app.Exposition), byte for byte what prometheus_client's own
encoder writes for every Accept header, hostile label values and node mode included."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from exporter import exposition
from exporter.collector import SnapshotCollector
from exporter.correlate import Memory
from exporter.model import (
    Endpoint,
    Place,
    ReadCounts,
    ResolveStatus,
    Settings,
    Snapshot,
    TargetReport,
    TcpState,
)
from exporter.node.places import correlate_places
from exporter.web.app import (
    OPENMETRICS,
    TEXT,
    Exposition,
    direct_format,
    encoder_for,
    own_metrics,
)
from tests.support.builders import NOW, correlate_sockets, report, sess, snapshot_of, sock, view

# What Prometheus 2.x sends.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
ACCEPTS = (
    PROMETHEUS_ACCEPT, "application/openmetrics-text; version=1.0.0",
    "application/openmetrics-text", "text/plain", "", "*/*", "application/json",
    "application/openmetrics-text; version=1.0.0; escaping=underscores",
    "application/openmetrics-text; version=1.0.0; escaping=allow-utf-8",
    "application/openmetrics-text; version=1.0.0; escaping=dots",
    "application/openmetrics-text; version=1.0.0; escaping=values",
    "application/openmetrics-text; version=2.0.0",
    "text/plain; version=1.0.0", "text/plain; version=1.0.0; escaping=allow-utf-8",
    "text/plain; version=1.0.0; escaping=dots",
)
CLASSIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
SETTINGS = Settings(risk_headroom=60.0, network_idle_timeout=900.0)
HOSTILE = 'web \\ "quoted"\n} # fake_metric 1\n'


def rich_snapshot() -> Snapshot:
    """Two targets, one down; every state, drops, a transaction, hostile label values (a
    quote, a backslash, a newline, a lone surrogate from a process name not in UTF-8)."""
    sockets = [sock(5000, idle=100, keepalive=True, keepalive_probe_at=60.0),
               sock(5001, idle=590), sock(5002, process=HOSTILE, pid=7),
               sock(5003, state=TcpState.CLOSE_WAIT), sock(5004, gone=True, idle=700),
               sock(5005, idle=20), sock(5006, process="unknown", pid=None),
               sock(5007, idle=40, process="bad\udcffname", keepalive=True,
                    keepalive_probe_at=7200.0)]
    server = view(sess(1, 5000), sess(2, 5001, user="batch", db=None),
                  sess(3, 5002, command="Query"), sess(6, 5006, idle=30.0, user=HOSTILE),
                  sess(7, 5007, idle=40.0, transaction=95.0, rows_locked=3, db=HOSTILE),
                  idle_transaction_timeout=300.0, read_at=NOW - 2.5)
    _, memory = correlate_sockets("db:3306", [sock(5004, idle=595), sock(5005)],
                                  view(sess(4, 5004, idle=595), sess(5, 5005)), SETTINGS,
                                  Memory(), NOW - 10)
    up, _ = correlate_sockets("db:3306", sockets, server, SETTINGS, memory, NOW)
    down, _ = correlate_sockets("other:3306", [sock(6000, remote=Endpoint("10.0.0.6", 3306))],
                                view(ok=False, error="cannot resolve other"), SETTINGS,
                                Memory(), NOW)
    return Snapshot(
        reports=(report(up, 3, counts=ReadCounts(reads=12, read_errors=1, queries=13),
                        resolve=ResolveStatus(addresses=frozenset({"10.0.0.5"})),
                        durations={"sockets": 0.004, "owners": 0.001, "total": 0.02}),
                 report(down, 3, resolve=ResolveStatus(failures=2))),
        collections=7, top_sessions=3, socket_read_errors=1,
        sockets_without_owner={"no_permission": 2},
    )


def node_snapshot() -> Snapshot:
    """Node mode: the socket-side series with pod and container labels, one pod's name
    hostile."""
    pod_a = Place(netns=101, pod="shop-0", container="aaaaaaaaaaaa", pod_uid="u-a",
                  runtime="containerd")
    pod_b = Place(netns=202, pod=HOSTILE, container="bbbbbbbbbbbb", pod_uid="u-b",
                  runtime="cri-o")
    sockets = [s._replace(place=pod_a) for s in (sock(5000, idle=50.0),
                                                  sock(5001, idle=580.0, process="api"))]
    sockets += [s._replace(place=pod_b) for s in (sock(6000), sock(6001, process="api"),
                                                   sock(6002, state=TcpState.CLOSE_WAIT))]
    server = view(sess(1, 5000), sess(2, 5001, idle=580.0, transaction=120.0, rows_locked=1),
                  sess(3, 6000), sess(4, 6001, command="Query"), wait_timeout=600.0)
    target, summary, places, _ = correlate_places("db:3306", sockets, server, SETTINGS, {},
                                                  Memory(), NOW, top=5)
    return Snapshot(reports=(TargetReport(target, summary, places=places),), node=True,
                    collections=3)


SNAPSHOTS = {
    "rich": rich_snapshot,
    "node": node_snapshot,
    "one target": lambda: snapshot_of(correlate_sockets(
        "db:3306", [sock(5000)], view(sess(1, 5000)), SETTINGS, Memory(), NOW)[0]),
    "no target": lambda: Snapshot(reports=()),
}


def own() -> CollectorRegistry:
    """The process's own metrics, with values that do not move between two renderings."""
    registry = CollectorRegistry(auto_describe=False)
    PlatformCollector(registry=registry)
    return registry


def prometheus_client_body(
    snapshot: Snapshot, accept: str, own_registry: CollectorRegistry | None = None,
) -> tuple[bytes, str]:
    """What prometheus_client writes for the same collectors, in the same order."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot, render_seconds=0.002))
    registry.register(own_registry if own_registry is not None else own())
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type


class Fixed(Collector):
    """Self metrics with values that do not move: the shapes prometheus_client's process,
    platform and GC collectors make (counters and gauges, with labels and without), a
    hostile help text and label value, and ``extra`` families."""

    def __init__(self, *extra: Metric) -> None:
        self.extra = extra

    def collect(self) -> list[Metric]:
        cpu = CounterMetricFamily("process_cpu_seconds", "Total user and system CPU time "
                                  "spent in seconds.", value=1.25)
        memory = GaugeMetricFamily("process_resident_memory_bytes", "Resident memory size "
                                   "in bytes.", value=42_000_000.0)
        collected = CounterMetricFamily("python_gc_objects_collected",
                                        "Objects collected during gc", labels=["generation"])
        for generation, count in (("0", 1447.0), ("1", 476.0), ("2", 13082.0)):
            collected.add_metric([generation], count)
        info = GaugeMetricFamily("python_info", HOSTILE, labels=["version", "implementation"])
        info.add_metric([HOSTILE, "CPython"], 1.0)
        return [cpu, memory, collected, info, *self.extra]


def fixed_own(*extra: Metric) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed(*extra))
    return registry


def histogram() -> Metric:
    family = HistogramMetricFamily("web_seconds", "A histogram.", labels=["path"])
    family.add_metric(["/metrics"], [("0.1", 3.0), ("+Inf", 4.0)], 0.5)
    return family


def created_counter() -> Metric:
    return CounterMetricFamily("reloads", "With its _created sample.", value=2.0,
                               created=1_700_000_000.0)


def odd_label() -> Metric:
    family = GaugeMetricFamily("odd", "A label value that is not UTF-8.", labels=["name"])
    family.add_metric(["bad\udcffname"], 1.0)
    return family


@pytest.mark.parametrize(
    "extra,direct",
    [
        ((), True),
        ((histogram(),), False),
        ((created_counter(),), False),
        ((InfoMetricFamily("build", "Build.", value={"version": "1"}),), False),
        ((GaugeMetricFamily("uptime_seconds", "With a unit.", value=3.0, unit="seconds"),),
         False),
        ((odd_label(),), False),
    ],
    ids=["counters and gauges", "histogram", "created", "info", "unit", "lone surrogate"],
)
def test_the_process_metrics_are_the_bytes_prometheus_client_would_write(
    extra: tuple[Metric, ...], direct: bool,
) -> None:
    # Written straight where they are counters and gauges; anything else falls back to
    # prometheus_client's encoder, for the same bytes.
    snapshot = SNAPSHOTS["one target"]()
    for openmetrics in (True, False):
        written = exposition.write_metrics(fixed_own(*extra).collect(), openmetrics=openmetrics)
        assert (written is not None) is direct
    if extra and extra[0].name == "odd":
        # prometheus_client itself cannot encode it (UnicodeEncodeError), nor then the body.
        with pytest.raises(UnicodeEncodeError):
            prometheus_client_body(snapshot, PROMETHEUS_ACCEPT, fixed_own(*extra))
        with pytest.raises(UnicodeEncodeError):
            Exposition(fixed_own(*extra)).render(snapshot, PROMETHEUS_ACCEPT, 0.002)
        return
    exposition_ = Exposition(fixed_own(*extra))
    for accept in ACCEPTS:
        assert exposition_.render(snapshot, accept, 0.002) == prometheus_client_body(
            snapshot, accept, fixed_own(*extra)), accept


def test_the_real_process_metrics_are_written_straight() -> None:
    # The path a scrape takes with the collectors the exporter registers (own_metrics).
    for openmetrics in (True, False):
        written = exposition.write_metrics(own_metrics().collect(), openmetrics=openmetrics)
        assert written is not None
        assert b"process_cpu_seconds_total " in written
        assert b'python_gc_objects_collected_total{generation="0"} ' in written


@pytest.mark.parametrize("name", SNAPSHOTS)
def test_the_body_is_the_bytes_prometheus_client_would_write(name: str) -> None:
    snapshot = SNAPSHOTS[name]()
    exposition = Exposition(own())
    for accept in ACCEPTS:
        assert exposition.render(snapshot, accept, 0.002) == prometheus_client_body(
            snapshot, accept), accept


def test_what_prometheus_and_curl_get_is_written_straight() -> None:
    # The comparison above would pass through prometheus_client's fallback too: the formats
    # that scrapers ask for are the ones written from the rows.
    kinds = {accept: direct_format(encoder_for(accept)[0]) for accept in ACCEPTS}
    assert kinds[PROMETHEUS_ACCEPT] == OPENMETRICS
    assert kinds["application/openmetrics-text"] == OPENMETRICS
    assert kinds["text/plain"] == kinds[""] == kinds["*/*"] == TEXT
    assert kinds["text/plain; version=1.0.0; escaping=allow-utf-8"] == TEXT
    # Escapings that rename names, and OpenMetrics 2.0: prometheus_client's own.
    assert kinds["application/openmetrics-text; version=1.0.0; escaping=dots"] is None
    assert kinds["application/openmetrics-text; version=1.0.0; escaping=values"] is None
    assert kinds["application/openmetrics-text; version=2.0.0"] is None


def test_the_cheap_escaping_for_what_prometheus_sends_writes_the_same_bytes() -> None:
    ours, ours_type = encoder_for(PROMETHEUS_ACCEPT)
    theirs, theirs_type = choose_encoder(PROMETHEUS_ACCEPT)
    assert ours.keywords["escaping"] == "allow-utf-8"  # type: ignore[attr-defined]
    assert ours_type == theirs_type
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(rich_snapshot(), render_seconds=0.002))
    assert ours(registry) == theirs(registry)


@pytest.mark.parametrize("name", ["rich", "node"])
def test_every_exposed_name_is_a_classic_prometheus_name(name: str) -> None:
    # What lets the direct writing and encoder_for skip prometheus_client's name escaping:
    # a name outside this set would be written differently by the escapings.
    body, _ = Exposition(own()).render(SNAPSHOTS[name](), PROMETHEUS_ACCEPT, 0.002)
    lines = body.decode().splitlines()
    names = {line.split()[2] for line in lines if line.startswith(("# HELP", "# TYPE"))}
    label_names = {
        pair.split("=", 1)[0]
        for line in lines if "{" in line and not line.startswith("#")
        for pair in re.findall(r'([^{},=]+)="', line)
    }
    assert names and {"target", "process", "le"} <= label_names
    if name == "node":
        assert {"pod", "container"} <= label_names
    assert all(CLASSIC_NAME.match(n) for n in names | label_names), sorted(
        n for n in names | label_names if not CLASSIC_NAME.match(n))


@pytest.mark.parametrize(
    "values",
    [
        [0.0, -0.0, 0.0, -0.0],
        [-0.0, 0.0],
        [1, 1.0, True, 1.0],
        [float("nan"), float("nan")],
        [float("inf"), float("-inf"), float("inf")],
        [1e21, 1234567.0, 12345678.9, 1e-7, -3.5, 86400.0],
    ],
)
def test_numbers_are_written_as_prometheus_client_writes_them_however_often(
    values: list[float],
) -> None:
    exposition._NUMBERS.clear()
    for value in values * 2:  # the second time from what the first one kept
        assert exposition._number(value) == floatToGoString(value), value


def test_the_numbers_kept_are_bounded() -> None:
    exposition._NUMBERS.clear()
    for n in range(1, exposition._NUMBERS_KEPT * 2):
        assert exposition._number(n / 7) == floatToGoString(n / 7)
    assert 0 < len(exposition._NUMBERS) <= exposition._NUMBERS_KEPT
