"""The /metrics body's encoding: prometheus_client's own, made cheap where it can be
without changing a byte (exporter.web.app.encoder_for)."""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.platform_collector import PlatformCollector

from exporter.collector import SnapshotCollector
from exporter.correlate import Memory
from exporter.model import Settings, Snapshot, TcpState
from exporter.web.app import encoder_for, render
from tests.support.builders import NOW, correlate_sockets, sess, snapshot_of, sock, view

# What Prometheus 2.x sends.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
CLASSIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


def fixed_snapshot() -> Snapshot:
    """Every kind of series: idle, at risk, active, dropped, phantom, unmatched."""
    sockets = [sock(5000, idle=100, keepalive=True), sock(5001, idle=590),
               sock(5002, process="web \\ \"quoted\"\n", pid=7),
               sock(5003, state=TcpState.CLOSE_WAIT), sock(5006, process="unknown", pid=None)]
    server = view(sess(1, 5000), sess(2, 5001, user="batch", db=None),
                  sess(3, 5002, command="Query"))
    target, _ = correlate_sockets("db:3306", sockets, server, Settings(60.0, 900.0), Memory(),
                                  NOW)
    return snapshot_of(target, top=3, collections=7)


def registry() -> CollectorRegistry:
    fixed = CollectorRegistry(auto_describe=False)
    fixed.register(SnapshotCollector(fixed_snapshot(), render_seconds=0.002))
    PlatformCollector(registry=fixed)
    return fixed


def test_prometheus_gets_the_bytes_prometheus_client_would_write() -> None:
    for accept in (PROMETHEUS_ACCEPT, "application/openmetrics-text; version=1.0.0",
                   "application/openmetrics-text", "text/plain", "",
                   "application/openmetrics-text; version=1.0.0; escaping=underscores"):
        ours, ours_type = encoder_for(accept)
        theirs, theirs_type = choose_encoder(accept)
        if accept == PROMETHEUS_ACCEPT:  # the cheap escaping, for the same bytes
            assert ours.keywords["escaping"] == "allow-utf-8"  # type: ignore[attr-defined]
        assert ours_type == theirs_type, accept
        assert ours(registry()) == theirs(registry()), accept


def test_every_exposed_name_is_a_classic_prometheus_name() -> None:
    # What lets encoder_for skip the per-character escaping: a name outside this set would
    # be written differently by the two escapings (see encoder_for).
    body, _ = render(fixed_snapshot(), PROMETHEUS_ACCEPT, 0.002)
    lines = body.decode().splitlines()
    names = {line.split()[2] for line in lines if line.startswith(("# HELP", "# TYPE"))}
    label_names = {
        pair.split("=", 1)[0]
        for line in lines if "{" in line and not line.startswith("#")
        for pair in re.findall(r'([^{},=]+)="', line)
    }
    assert names and label_names
    assert all(CLASSIC_NAME.match(name) for name in names | label_names), sorted(
        n for n in names | label_names if not CLASSIC_NAME.match(n))
