"""The drop history: successive snapshots' cumulative counts become timed events."""

from __future__ import annotations

from dataclasses import replace

import pytest

from exporter.drops import DropEvent, DropHistory, DropRecorder
from exporter.model import Snapshot, TargetSnapshot
from tests.support.builders import SETTINGS, report
from tests.support.fakes import FakeClock


def snap(collections: int, **totals: dict[str, int]) -> Snapshot:
    """A snapshot whose targets (keyword = target name) have these dropped_totals."""
    targets = [
        TargetSnapshot(target=name.replace("_", ":"), server=None, items=(),
                       correlation_working=True, dropped_totals=counts,
                       server_age_seconds=None, settings=SETTINGS)
        for name, counts in totals.items()
    ]
    return Snapshot(reports=tuple(report(t) for t in targets), collections=collections)


def events(history: DropHistory) -> list[tuple[str, str, float, int]]:
    return [(e.target, e.process, e.at, e.count) for e in history.events]


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        pytest.param([(1, {}), (2, {"w": 1})], [("db:1", "w", 200.0, 1)], id="first drop"),
        pytest.param([(1, {"w": 2})], [("db:1", "w", 100.0, 2)],
                     id="counted in the first collection"),
        pytest.param([(1, {"w": 1}), (2, {"w": 1}), (3, {"w": 3})],
                     [("db:1", "w", 100.0, 1), ("db:1", "w", 300.0, 2)], id="only increases"),
        pytest.param([(1, {"w": 1}), (1, {"w": 5})], [("db:1", "w", 100.0, 1)],
                     id="the same collection again (a timed-out scrape) changes nothing"),
        pytest.param([(5, {"w": 4}), (6, {"w": 5, "x": 1})],
                     [("db:1", "w", 200.0, 1), ("db:1", "x", 200.0, 1)],
                     id="a history started late takes the first counts as its baseline"),
        pytest.param([(1, {"w": 4}), (2, {"w": 1})],
                     [("db:1", "w", 100.0, 4), ("db:1", "w", 200.0, 1)],
                     id="a count that went down restarted"),
        pytest.param([(1, {}), (2, {"w" + chr(0xDCFE): 1, "w" + chr(0xDCFF): 1})],
                     [("db:1", "w\ufffd", 200.0, 2)],
                     id="names that differ only in undecodable bytes are one process"),
    ],
)
def test_events_from_successive_counts(steps, expected) -> None:
    history = DropHistory()
    for index, (collections, totals) in enumerate(steps, start=1):
        history = history.observe(snap(collections, db_1=totals), at=100.0 * index)
    assert events(history) == expected


def test_each_target_counts_apart() -> None:
    history = DropHistory().observe(snap(1, a_1={}, b_1={"w": 1}), at=10.0)
    history = history.observe(snap(2, a_1={"w": 2}, b_1={"w": 1}), at=20.0)
    assert events(history) == [("b:1", "w", 10.0, 1), ("a:1", "w", 20.0, 2)]


def test_only_the_window_is_kept_and_recent_is_newest_first() -> None:
    history = DropHistory().observe(snap(1, db_1={"w": 1}), at=0.0)
    history = history.observe(snap(2, db_1={"w": 2}), at=3000.0)
    assert [e.at for e in history.recent(now=3500.0)] == [3000.0, 0.0]
    assert [e.at for e in history.recent(now=3700.0)] == [3000.0]
    # A later observation forgets what left the window.
    history = history.observe(snap(3, db_1={"w": 3}), at=3700.0)
    assert [e.at for e in history.events] == [3000.0, 3700.0]


def test_at_most_limit_events_per_target_newest_kept() -> None:
    history = DropHistory()
    for n in range(1, 8):
        history = history.observe(snap(n, a_1={"w": n}, b_1={"w": 1}), at=float(n), limit=3)
    assert [e.at for e in history.events if e.target == "a:1"] == [5.0, 6.0, 7.0]
    assert [e.at for e in history.events if e.target == "b:1"] == [1.0]


def test_history_is_a_value() -> None:
    before = DropHistory()
    after = before.observe(snap(1, db_1={"w": 1}), at=1.0)
    assert before.events == () and len(after.events) == 1


def test_cause_is_unknown_until_the_engine_knows() -> None:
    history = DropHistory().observe(snap(1, db_1={"w": 1}), at=1.0)
    assert history.events[0].cause is None
    assert replace(history.events[0], cause="wait_timeout") == DropEvent(
        "db:1", "w", 1.0, 1, "wait_timeout")


def test_recorder_stamps_collections_and_knows_their_age() -> None:
    clock, wall = FakeClock(50.0), FakeClock(1_000_000.0)
    recorder = DropRecorder(clock=clock, wall=wall)
    first = snap(1, db_1={"w": 1})
    recorder.observe(first)
    clock.advance(2.5)
    wall.advance(2.5)
    assert recorder.age(first) == 2.5
    recorder.observe(first)  # again: no new event, the age still counts from the first time
    assert recorder.age(first) == 2.5
    assert [e.at for e in recorder.history.events] == [1_000_000.0]
    assert recorder.age(snap(2, db_1={"w": 1})) is None  # not observed: unknown
    recorder.observe(None)  # before any collection: nothing
    assert len(recorder.history.events) == 1


def test_events_carry_their_cause_once_known() -> None:
    def with_causes(collections: int, causes: dict[tuple[str, str], int],
                    dropped: dict[str, int]) -> Snapshot:
        target = TargetSnapshot(target="db:1", server=None, items=(), correlation_working=True,
                                dropped_totals=dropped, server_age_seconds=None,
                                settings=SETTINGS, cause_totals=causes)
        return Snapshot(reports=(report(target),), collections=collections)

    history = DropHistory().observe(with_causes(1, {}, {}), at=10.0)
    # A KILL: dropped_total counts it at once, its cause waits for the next read.
    history = history.observe(with_causes(2, {("w", "idle_timeout"): 1}, {"w": 2}), at=20.0)
    history = history.observe(
        with_causes(3, {("w", "idle_timeout"): 1, ("w", "killed"): 1}, {"w": 2}), at=30.0)
    assert [(e.process, e.at, e.count, e.cause) for e in history.events] == [
        ("w", 20.0, 1, "idle_timeout"), ("w", 30.0, 1, "killed")]
