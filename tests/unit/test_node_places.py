"""Node mode's correlation per place (pure): each pod's sockets judged apart, with its own
memory, and the exposition's pod and container labels."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from exporter.collector import SnapshotCollector
from exporter.correlate import Memory
from exporter.model import (
    Place,
    PlaceSummary,
    Snapshot,
    Socket,
    State,
    TargetReport,
    TargetSnapshot,
    TargetSummary,
)
from exporter.node.places import correlate_places
from tests.support.builders import NOW, SETTINGS, sess, sock, view
from tests.support.exporter_process import Metrics, parse

POD_A = Place(netns=101, pod="shop-0", container="aaaaaaaaaaaa", pod_uid="u-a",
              runtime="containerd")
POD_B = Place(netns=202, pod="shop-1", container="bbbbbbbbbbbb", pod_uid="u-b",
              runtime="containerd")


def placed(sockets: list[Socket], place: Place) -> list[Socket]:
    return [s._replace(place=place) for s in sockets]


def test_one_client_endpoint_in_two_namespaces_is_two_connections() -> None:
    # Both pods hold 10.0.0.9:5000 to the same server (two namespaces may reuse addresses;
    # a NAT shows the server one of them). One correlation over both would key them as one
    # connection; per place, pod A's reset is counted in pod A and pod B's stays idle.
    server = view(sess(1, 5000))
    first = placed([sock(5000, process="api")], POD_A) + placed(
        [sock(5000, process="api")], POD_B)
    _, _, _, kept = correlate_places("db", first, server, SETTINGS, {}, Memory(), NOW, top=5)
    assert set(kept) == {POD_A, POD_B}
    second = placed([sock(5000, process="api", gone=True)], POD_A) + placed(
        [sock(5000, process="api")], POD_B)
    snapshot, summary, places, kept = correlate_places(
        "db", second, server, SETTINGS, kept, Memory(), NOW + 15, top=5)
    assert {p.place.pod: (p.summary.processes["api"].states, dict(p.dropped_totals))
            for p in places} == {
        "shop-0": ((0, 0, 0, 1, 0, 0), {"api": 1}),  # dropped, counted
        "shop-1": ((0, 1, 0, 0, 0, 0), {}),  # idle
    }
    assert len(snapshot.items) == 2
    assert summary.processes["api"].states == (0, 1, 0, 1, 0, 0)


def test_a_drop_is_counted_in_its_own_pod_only() -> None:
    first = placed([sock(5000, process="api")], POD_A) + placed(
        [sock(6000, process="api")], POD_B)
    server = view(sess(1, 5000), sess(2, 6000))
    _, _, _, kept = correlate_places("db", first, server, SETTINGS, {}, Memory(), NOW, top=5)
    # The server resets pod A's session: its socket is gone, still held.
    second = placed([sock(5000, process="api", gone=True)], POD_A) + placed(
        [sock(6000, process="api")], POD_B)
    snapshot, _, places, kept = correlate_places(
        "db", second, view(sess(2, 6000)), SETTINGS, kept, Memory(), NOW + 15, top=5)
    assert {p.place.pod: dict(p.dropped_totals) for p in places} == {
        "shop-0": {"api": 1}, "shop-1": {}}
    assert [i.state for i in snapshot.items] == [State.DROPPED, State.IDLE]
    assert snapshot.dropped_totals == {"api": 1}


def test_a_place_with_nothing_left_is_forgotten_after_one_collection() -> None:
    sockets = placed([sock(5000)], POD_A) + placed([sock(6000)], POD_B)
    server = view(sess(1, 5000), sess(2, 6000))
    _, _, _, kept = correlate_places("db", sockets, server, SETTINGS, {}, Memory(), NOW, top=5)
    _, _, places, kept = correlate_places("db", placed([sock(5000)], POD_A), server, SETTINGS,
                                          kept, Memory(), NOW + 15, top=5)
    assert set(kept) == {POD_A}
    assert [p.place for p in places] == [POD_A]


def test_places_told_apart_only_by_namespace_share_one_series() -> None:
    # Two namespaces with one host name and no container (as `ip netns` makes them): one
    # label pair, so their figures are summed rather than sent twice.
    one = Place(netns=1, pod="host")
    two = Place(netns=2, pod="host")
    sockets = placed([sock(5000)], one) + placed([sock(6000)], two)
    _, _, places, kept = correlate_places(
        "db", sockets, view(sess(1, 5000), sess(2, 6000)), SETTINGS, {}, Memory(), NOW, top=5)
    assert len(kept) == 2
    assert [(p.place.pod, p.summary.processes["worker"].states[1]) for p in places] == [
        ("host", 2)]


def test_sessions_top_bounds_the_per_session_series_across_the_node() -> None:
    sockets = [s for port in range(5000, 5010)
               for s in placed([sock(port, idle=float(port - 4990))],
                               POD_A if port % 2 else POD_B)]
    server = view(*(sess(port, port) for port in range(5000, 5010)), wait_timeout=100.0)
    _, summary, places, _ = correlate_places(
        "db", sockets, server, SETTINGS, {}, Memory(), NOW, top=3)
    assert [i.socket.local.port for i in summary.riskiest] == [5009, 5008, 5007]
    assert all(len(p.summary.riskiest) <= 3 for p in places)


def test_node_mode_exposition_labels_socket_series_with_pod_and_container() -> None:
    sockets = placed([sock(5000, idle=50.0)], POD_A) + placed([sock(6000)], POD_B)
    snapshot, summary, places, _ = correlate_places(
        "db:3306", sockets, view(sess(1, 5000), sess(2, 6000), wait_timeout=100.0), SETTINGS,
        {}, Memory(), NOW, top=5)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(Snapshot(
        reports=(TargetReport(snapshot, summary, places=places),), node=True)))
    metrics = parse(generate_latest(registry).decode())
    assert metrics.get("mysql_idle_sessions", target="db:3306", state="at_risk",
                       process="worker", pod="shop-0", container="aaaaaaaaaaaa") == 1
    assert metrics.get("mysql_idle_sessions", target="db:3306", state="idle",
                       process="worker", pod="shop-1", container="bbbbbbbbbbbb") == 1
    assert metrics.get("mysql_idle_session_headroom_seconds", target="db:3306",
                       process="worker", pid="4242", session_id="1", user="app", db="shop",
                       pod="shop-0", container="aaaaaaaaaaaa") == 50.0
    assert metrics.get("mysql_idle_sessions_dropped_total", target="db:3306",
                       process="worker", pod="shop-1", container="bbbbbbbbbbbb") == 0
    assert metrics.get("mysql_idle_place_info", pod="shop-0", container="aaaaaaaaaaaa",
                       pod_uid="u-a", runtime="containerd") == 1
    # Series about the server keep their labels.
    assert metrics.get("mysql_idle_up", target="db:3306") == 1


def test_a_phantom_is_reported_in_its_own_pod_only() -> None:
    # Pod A's session vanishes from the server while its socket stays ESTABLISHED (a NAT
    # forgot the flow); pod B's is untouched.
    sockets = placed([sock(5000, process="api")], POD_A) + placed(
        [sock(6000, process="api")], POD_B)
    _, _, _, kept = correlate_places("db", sockets, view(sess(1, 5000), sess(2, 6000)),
                                     SETTINGS, {}, Memory(), NOW, top=5)
    snapshot, _, places, _ = correlate_places(
        "db", sockets, view(sess(2, 6000), read_at=NOW + 15), SETTINGS, kept, Memory(),
        NOW + 15, top=5)
    assert {p.place.pod: p.summary.processes["api"].states for p in places} == {
        "shop-0": (0, 0, 0, 0, 1, 0),  # phantom
        "shop-1": (0, 1, 0, 0, 0, 0),  # idle
    }
    assert [i.state for i in snapshot.items] == [State.PHANTOM, State.IDLE]


def test_a_pods_drop_count_outlives_a_collection_without_its_sockets_for_ten_minutes() -> None:
    from exporter.node.places import PLACE_MEMORY_SECONDS

    server = view(sess(1, 5000))
    _, _, _, kept = correlate_places("db", placed([sock(5000)], POD_A), server, SETTINGS, {},
                                     Memory(), NOW, top=5)
    # Reset and held: dropped, counted once.
    _, _, places, kept = correlate_places("db", placed([sock(5000, gone=True)], POD_A),
                                          view(), SETTINGS, kept, Memory(), NOW + 15, top=5)
    assert [dict(p.dropped_totals) for p in places] == [{"worker": 1}]
    # The socket is closed (or a socket read failed): the count stays, and the series with
    # it, at later collections without any socket of the pod...
    for at in (NOW + 30, NOW + 45, NOW + 30 + PLACE_MEMORY_SECONDS):
        snapshot, _, places, kept = correlate_places("db", [], view(), SETTINGS, kept,
                                                     Memory(), at, top=5)
        assert [(p.place, dict(p.dropped_totals)) for p in places] == [(POD_A, {"worker": 1})]
        assert snapshot.dropped_totals == {"worker": 1}
    # ... until it has been gone that long.
    _, _, places, kept = correlate_places("db", [], view(), SETTINGS, kept, Memory(),
                                          NOW + 31 + PLACE_MEMORY_SECONDS, top=5)
    assert places == () and kept == {}


def _exposition(snapshot: TargetSnapshot, summary: TargetSummary,
                places: tuple[PlaceSummary, ...]) -> Metrics:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(Snapshot(
        reports=(TargetReport(snapshot, summary, places=places),), node=True)))
    return parse(generate_latest(registry).decode())


def test_an_idle_transaction_is_reported_in_its_own_pod() -> None:
    sockets = placed([sock(5000, process="api", idle=40.0)], POD_A) + placed(
        [sock(6000, process="api")], POD_B)
    server = view(sess(1, 5000, idle=40.0, transaction=120.0, rows_locked=3, rows_modified=1),
                  sess(2, 6000))
    snapshot, summary, places, _ = correlate_places(
        "db:3306", sockets, server, SETTINGS, {}, Memory(), NOW, top=5)
    # The node's view of the process sums its pods'.
    api = summary.processes["api"]
    assert (api.in_transaction, api.transaction_oldest, api.rows_locked,
            api.rows_modified) == (1, 120.0, 3, 1)
    assert [i.session.id for i in summary.transactions if i.session] == [1]
    metrics = _exposition(snapshot, summary, places)
    pod_a = {"target": "db:3306", "process": "api", "pod": "shop-0",
             "container": "aaaaaaaaaaaa"}
    pod_b = {"target": "db:3306", "process": "api", "pod": "shop-1",
             "container": "bbbbbbbbbbbb"}
    assert metrics.get("mysql_idle_sessions_in_transaction", **pod_a) == 1
    assert metrics.get("mysql_idle_sessions_in_transaction", **pod_b) == 0
    assert metrics.get("mysql_idle_transaction_rows_locked", **pod_a) == 3
    assert metrics.get("mysql_idle_transaction_oldest_seconds", **pod_a) == 120.0
    assert metrics.get("mysql_idle_session_transaction_seconds", pid="4242", session_id="1",
                       user="app", db="shop", **pod_a) == 120.0
    assert metrics.get("mysql_idle_sessions_by_limit", limit="wait_timeout", **pod_b) == 1


def test_a_phantoms_cause_is_counted_in_its_own_pod_and_kept_with_it() -> None:
    sockets = placed([sock(5000, process="api")], POD_A) + placed(
        [sock(6000, process="api")], POD_B)
    _, _, _, kept = correlate_places("db:3306", sockets, view(sess(1, 5000), sess(2, 6000)),
                                     SETTINGS, {}, Memory(), NOW, top=5)
    # Pod A's session vanishes from the server, its socket stays ESTABLISHED: a phantom,
    # counted as the network's once a second read confirms it.
    for at in (NOW + 15, NOW + 30):
        snapshot, summary, places, kept = correlate_places(
            "db:3306", sockets, view(sess(2, 6000), read_at=at), SETTINGS, kept, Memory(),
            at, top=5)
    assert {p.place.pod: dict(p.cause_totals) for p in places} == {
        "shop-0": {("api", "network"): 1}, "shop-1": {}}
    assert dict(snapshot.cause_totals) == {("api", "network"): 1}
    metrics = _exposition(snapshot, summary, places)
    assert metrics.get("mysql_idle_sessions_dropped_by_cause_total", target="db:3306",
                       process="api", cause="network", pod="shop-0",
                       container="aaaaaaaaaaaa") == 1
    assert metrics.get("mysql_idle_sessions_dropped_by_cause_total", target="db:3306",
                       process="api", cause="network", pod="shop-1",
                       container="bbbbbbbbbbbb") == 0
    # The phantom's socket closes: its pod keeps the count (a phantom is not in
    # dropped_totals, only in the causes), as a pod's drop count is kept.
    _, _, places, kept = correlate_places(
        "db:3306", placed([sock(6000, process="api")], POD_B), view(sess(2, 6000)),
        SETTINGS, kept, Memory(), NOW + 45, top=5)
    _, _, places, kept = correlate_places(
        "db:3306", placed([sock(6000, process="api")], POD_B), view(sess(2, 6000)),
        SETTINGS, kept, Memory(), NOW + 60, top=5)
    assert POD_A in kept
    assert {p.place.pod: dict(p.cause_totals) for p in places}["shop-0"] == {
        ("api", "network"): 1}
