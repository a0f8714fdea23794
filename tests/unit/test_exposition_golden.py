"""The collector's whole exposition for a fixed snapshot, against golden files: any change
to a metric's name, labels, help text, type or order shows as a diff (see
tests/support/golden.py for how to rewrite them after a change that is meant)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from exporter.collector import SnapshotCollector
from exporter.correlate import Memory
from exporter.exposition import write
from exporter.model import (
    Endpoint,
    Flavor,
    ReadCounts,
    ResolveStatus,
    Settings,
    Snapshot,
    TcpState,
)
from tests.support.builders import NOW, correlate_sockets, report, sess, sock, view
from tests.support.golden import assert_golden


def fixed_snapshot() -> Snapshot:
    """Two targets: one up with every state, one down (name resolution failing)."""
    settings = Settings(risk_headroom=60.0, network_idle_timeout=900.0)
    sockets = [
        sock(5000, idle=100, keepalive=True, keepalive_probe_at=60.0),
        sock(5001, idle=580),
        sock(5002, idle=3, process="web", pid=77),
        sock(5003, state=TcpState.CLOSE_WAIT),
        sock(5004, state=TcpState.CLOSE, gone=True, idle=700),
        sock(5005, idle=20),
        sock(5006, idle=None, process="unknown", pid=None),
        # Asleep inside a write transaction, under idle_write_transaction_timeout.
        sock(5007, idle=40, keepalive=True, keepalive_probe_at=7200.0),
    ]
    server = view(sess(1, 5000), sess(2, 5001, user="batch", db=None),
                  sess(3, 5002, command="Query"), sess(6, 5006, idle=30.0),
                  sess(7, 5007, idle=40.0, transaction=95.0, rows_locked=3, rows_modified=2),
                  flavor=Flavor.MARIADB, version="10.11.6-MariaDB",
                  source="performance_schema.threads", idle_transaction_timeout=300.0,
                  idle_write_transaction_timeout=120.0, read_at=NOW - 2.5)
    # A first collection in which 5005 matched, so that it is a phantom now, and 5004 idled
    # 5 s from its wait_timeout, so that its reset now is counted as an idle_timeout.
    _, memory = correlate_sockets("db:3306", [sock(5004, idle=595), sock(5005)],
                                  view(sess(4, 5004, idle=595), sess(5, 5005)), settings,
                                  Memory(), NOW - 10)
    up, _ = correlate_sockets("db:3306", sockets, server, settings, memory, NOW)
    down, _ = correlate_sockets("other.example:3306",
                                [sock(6000, remote=Endpoint("10.0.0.6", 3306))],
                                view(ok=False, error="cannot resolve other.example"),
                                settings, Memory(), NOW)
    return Snapshot(
        reports=(
            report(up, 3, counts=ReadCounts(reads=12, read_errors=1, queries=13),
                   resolve=ResolveStatus(addresses=frozenset({"10.0.0.5"})),
                   durations={"sockets": 0.004, "owners": 0.001, "server": 0.0125,
                              "correlate": 0.0005, "total": 0.02}),
            report(down, 3, counts=ReadCounts(reads=3, read_errors=3, internal_errors=1),
                   resolve=ResolveStatus(failures=2, error="lookup timed out"),
                   durations={"sockets": 0.004, "owners": 0.001, "server": 0.0,
                              "correlate": 0.0001, "total": 0.006}),
        ),
        collections=42,
        top_sessions=3,
        socket_read_errors=1,
    )


def collector() -> SnapshotCollector:
    return SnapshotCollector(fixed_snapshot(), include_build_info=False, render_seconds=0.003)


def registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector())
    return registry


# Each format through prometheus_client's encoder and as /metrics writes it
# (exporter.exposition): the same bytes.
def test_text_exposition() -> None:
    body = generate_latest(registry())
    assert write(collector().families(), openmetrics=False) == body
    assert_golden("exposition.prom", body.decode())


def test_openmetrics_exposition() -> None:
    body = generate_openmetrics(registry())
    assert write(collector().families(), openmetrics=True) + b"# EOF\n" == body
    assert_golden("exposition.openmetrics", body.decode())
