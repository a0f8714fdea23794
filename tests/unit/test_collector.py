"""Rendering: the metric contract, bounded series, histograms of current values."""

from __future__ import annotations

import dataclasses

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from exporter.collector import IDLE_BUCKETS, SnapshotCollector, histogram_buckets
from exporter.correlate import Memory
from exporter.model import ALL_STATES, ServerView, Settings, Snapshot, Socket, TcpState
from tests.support.builders import NOW, correlate_sockets, report, sess, sock, view


def render(snapshot: Snapshot) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(SnapshotCollector(snapshot))
    text = generate_latest(registry).decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def snapshot_of(sockets: list[Socket], server: ServerView, *, top: int = 20,
                settings: Settings | None = None) -> Snapshot:
    snap, _ = correlate_sockets("db:3306", sockets, server,
                                settings or Settings(risk_headroom=60), Memory(), NOW)
    return Snapshot(reports=(report(snap, top, durations={"sockets": 0.01, "server": 0.02}),),
                    top_sessions=top)


def value(samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_contract_metrics_and_values() -> None:
    sockets = [
        sock(5000, idle=100),
        sock(5001, idle=580),
        sock(5002, idle=3, process="web"),
        sock(5003, state=TcpState.CLOSE_WAIT),
    ]
    server = view(sess(1, 5000), sess(2, 5001), sess(3, 5002, command="Query"))
    samples = render(snapshot_of(sockets, server))
    t = {"target": "db:3306"}
    assert value(samples, "mysql_idle_up", **t) == 1
    assert value(samples, "mysql_idle_wait_timeout_seconds", scope="global", **t) == 600
    assert value(samples, "mysql_idle_wait_timeout_seconds", scope="interactive", **t) == 28800
    assert value(samples, "mysql_idle_sessions", state="idle", process="worker", **t) == 1
    assert value(samples, "mysql_idle_sessions", state="at_risk", process="worker", **t) == 1
    assert value(samples, "mysql_idle_sessions", state="dropped", process="worker", **t) == 1
    assert value(samples, "mysql_idle_sessions", state="active", process="web", **t) == 1
    # Every state is exported for every process, zeros included, so alerts see 0 not absent.
    for process in ("worker", "web"):
        for state in ALL_STATES:
            assert ("mysql_idle_sessions", tuple(sorted(
                {"state": state.value, "process": process, **t}.items()))) in samples
    assert value(samples, "mysql_idle_min_headroom_seconds", process="worker", **t) == 20
    assert ("mysql_idle_min_headroom_seconds",
            tuple(sorted({"process": "web", **t}.items()))) not in samples
    assert value(samples, "mysql_idle_session_headroom_seconds", process="worker", pid="4242",
                 session_id="2", user="app", db="shop", **t) == 20
    assert value(samples, "mysql_idle_sessions_dropped_total", process="worker", **t) == 1
    # A process that never dropped anything still has its counter, at 0.
    assert value(samples, "mysql_idle_sessions_dropped_total", process="web", **t) == 0
    assert value(samples, "mysql_idle_session_idle_seconds_count", process="worker", **t) == 2
    assert value(samples, "mysql_idle_session_idle_seconds_sum", process="worker", **t) == 680
    assert value(samples, "mysql_idle_client_idle_seconds_count", process="web", **t) == 1
    assert value(samples, "mysql_idle_scrape_duration_seconds", phase="server", **t) == 0.02
    assert value(samples, "mysql_idle_correlation_working", **t) == 1
    assert value(samples, "mysql_idle_headroom_threshold_seconds", **t) == 60


def test_process_info_gives_the_plain_process_names_behind_each_label() -> None:
    sockets = [
        sock(5000)._replace(process="shop/manage.py", comm="python3"),
        sock(5001)._replace(process="celery", comm="python3"),
        sock(5002)._replace(process="celery", comm="python3.11"),
        sock(5003)._replace(process="celery", comm="python3.11"),
        sock(5004, process="go-app")._replace(comm="go-app"),
    ]
    samples = render(snapshot_of(sockets, view()))
    info = {labels: found for (name, labels), found in samples.items()
            if name == "mysql_idle_process_info"}
    t = ("target", "db:3306")
    assert info == {
        (("comm", "python3"), ("process", "shop/manage.py"), t): 1,
        (("comm", "python3"), ("process", "celery"), t): 1,
        (("comm", "python3.11"), ("process", "celery"), t): 1,
        (("comm", "go-app"), ("process", "go-app"), t): 1,
    }


def test_down_target_has_up_zero_and_socket_metrics_still_flow() -> None:
    samples = render(snapshot_of([sock(5000), sock(5001, state=TcpState.CLOSE_WAIT)],
                                 view(ok=False)))
    assert value(samples, "mysql_idle_up", target="db:3306") == 0
    assert value(samples, "mysql_idle_sessions", target="db:3306", state="unmatched",
                 process="worker") == 1
    assert value(samples, "mysql_idle_sessions", target="db:3306", state="dropped",
                 process="worker") == 1
    assert not any(name == "mysql_idle_wait_timeout_seconds" for name, _ in samples)


def test_per_session_series_are_bounded_by_top_and_keep_the_riskiest() -> None:
    sockets = [sock(5000 + i, idle=float(i)) for i in range(200)]
    server = view(*(sess(i, 5000 + i) for i in range(200)))
    samples = render(snapshot_of(sockets, server, top=5))
    per_session = [labels for name, labels in samples
                   if name == "mysql_idle_session_headroom_seconds"]
    assert len(per_session) == 5
    ids = sorted(int(dict(labels)["session_id"]) for labels in per_session)
    assert ids == [195, 196, 197, 198, 199]
    # The per-process aggregate still covers all 200.
    assert value(samples, "mysql_idle_session_idle_seconds_count", target="db:3306",
                 process="worker") == 200


def test_histogram_buckets_are_cumulative_with_inf() -> None:
    buckets, total = histogram_buckets([0.5, 1.0, 7.0, 100_000.0])
    as_dict = dict(buckets)
    assert as_dict["1.0"] == 2
    assert as_dict["5.0"] == 2
    assert as_dict["15.0"] == 3
    assert as_dict[str(float(IDLE_BUCKETS[-1]))] == 3
    assert as_dict["+Inf"] == 4
    assert total == 100_008.5
    counts = [count for _, count in buckets]
    assert counts == sorted(counts)


def test_labels_with_quotes_newlines_and_unicode_render_in_both_formats() -> None:
    odd = sess(1, 5000)
    odd = type(odd)(id=1, client=odd.client, user='a"b\\c\nd', db="ünï\"code", command="Sleep",
                    idle_seconds=5)
    snap = snapshot_of([sock(5000, process='we"ird\nname')], view(odd))
    registry = CollectorRegistry()
    registry.register(SnapshotCollector(snap))
    text = generate_latest(registry).decode()
    parsed = {s.labels.get("user") for f in text_string_to_metric_families(text)
              for s in f.samples}
    assert 'a"b\\c\nd' in parsed
    om = generate_openmetrics(registry).decode()
    assert om.endswith("# EOF\n")


def test_only_keeps_one_target() -> None:
    snap = snapshot_of([sock(5000)], view(sess(1, 5000)))
    other = dataclasses.replace(snap.targets[0], target="other:3306")
    both = Snapshot(reports=(snap.reports[0], report(other)))
    only = both.only("other:3306")
    assert [t.target for t in only.targets] == ["other:3306"]
