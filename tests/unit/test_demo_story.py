"""The demo's narrator: each turn of the daily job's connection told once, then the lead
time the exporter gave."""

from __future__ import annotations

from exporter.correlate import Memory
from exporter.demo_story import Roles, Story
from exporter.model import Settings, TargetSnapshot
from tests.support.builders import NOW, correlate_sockets, sess, sock, view

SETTINGS = Settings(risk_headroom=20.0)
ROLES = Roles(daily=5001, report=5002, pool=5003)


def daily(idle: float, *, gone: bool = False) -> TargetSnapshot:
    sessions = [] if gone else [sess(1, 5001, idle=idle)]
    snapshot, _ = correlate_sockets(
        "db", [sock(5001, idle=idle, gone=gone), sock(5003, idle=1.0)],
        view(*sessions, sess(3, 5003, idle=1.0), wait_timeout=40.0), SETTINGS, Memory(), NOW)
    return snapshot


def test_roles_from_the_worker_line() -> None:
    assert Roles.parse("connections daily=5001 report=5002 pool=5003") == ROLES
    assert Roles.parse("noticed the idle connection is dead") is None
    assert Roles.parse("connections daily=x") is None


def test_each_turn_told_once_then_the_lead_time() -> None:
    story = Story(ROLES, risk_headroom=20.0, wait_timeout=40.0)
    assert story.observe(daily(10.0), 10.0) == []
    (risk,) = story.observe(daily(21.0), 21.0)
    assert "at_risk: 19s left before the server's wait_timeout (40s)" in risk
    assert story.observe(daily(23.0), 23.0) == []
    (dropped,) = story.observe(daily(41.0, gone=True), 41.0)
    assert "dropped: the server reset it (RST)" in dropped
    assert story.observe(daily(43.0, gone=True), 43.0) == []
    assert not story.complete and story.ending() == []
    (noticed,) = story.noticed(50.0, "the idle connection is dead: (2006, ...)")
    assert "(2006" in noticed and story.complete
    ending = story.ending()
    assert ("Lead time the exporter gave: at_risk 20s before the drop; dropped reported 9s "
            "before the worker noticed.") in ending
    assert any(line.startswith("The story is complete") for line in ending)
    assert story.ending() == [] and story.noticed(51.0, "again") == []


def test_a_drop_the_exporter_missed_is_said_plainly() -> None:
    story = Story(ROLES, risk_headroom=20.0, wait_timeout=40.0)
    story.noticed(50.0, "dead")
    assert "Lead time the exporter gave: none: the exporter did not see it in time." in (
        story.ending())
