"""The driver matrix's bookkeeping (tests/support/drivers/): how what was seen becomes the
README's rows, how the README's table is found, and that a missing toolchain fails with
what to install instead of skipping."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.drivers import matrix, programs

IDLE, RISK, DROPPED, NONE = (frozenset({"idle"}), frozenset({"at_risk"}),
                             frozenset({"dropped"}), frozenset())


@pytest.mark.parametrize(("snapshots", "seen"), [
    ([IDLE, IDLE, RISK, RISK, DROPPED, DROPPED], "idle → at_risk → dropped"),
    # A state seen by one scrape only (the instant between a reset and the driver closing
    # its socket) is left out; so is a flicker back to an earlier state.
    ([IDLE, IDLE, RISK, RISK, DROPPED, NONE, NONE], "idle → at_risk → (none)"),
    ([IDLE, IDLE, RISK, IDLE, RISK, RISK], "idle → at_risk"),
    ([IDLE, IDLE, IDLE | DROPPED, IDLE | DROPPED], "idle → dropped+idle"),
    ([IDLE], ""),
    ([], ""),
])
def test_states_seen_keeps_states_that_lasted_two_scrapes(
    snapshots: list[frozenset[str]], seen: str
) -> None:
    assert matrix.states_seen(snapshots) == seen


def run(result: str, *, events: tuple[tuple[float, str], ...] = (), dropped: float = 1,
        variant: matrix.Variant | None = None) -> matrix.Run:
    done = matrix.Run(matrix.DRIVERS[0], variant or matrix.DRIVERS[0].variants[0],
                      session_id=7, query_at=100.0, result=result, dropped=dropped)
    done.events = list(events)
    return done


def test_what_the_application_saw() -> None:
    assert matrix.application_saw(run("error 2006 OperationalError (2006, 'gone')")) == (
        "error 2006 `OperationalError`")
    assert matrix.application_saw(run("ok 8")) == "no error: a new session"
    assert matrix.application_saw(run("ok 7")) == "no error, the same session"
    assert matrix.application_saw(run(
        "error - - Can't add new command when connection is in closed state",
        events=((90.0, "ECONNRESET"),))) == (
        "`ECONNRESET` event when the server drops it; then "
        "`Can't add new command when connection is in closed state`")
    assert matrix.application_saw(run("ok 9", events=((100.5, "ERROR 2006"),))) == (
        "prints `ERROR 2006`, then runs it again on a new session")
    assert matrix.application_saw(run("error 4031 ERROR ERROR 4031 (HY000): The client")) == (
        "prints `ERROR 4031`")


def test_what_a_setting_changes() -> None:
    base = run("error 2006 OperationalError x")
    assert matrix.setting_changes(base, base) == "(the defaults)"
    assert matrix.setting_changes(base, run("ok 8")) == (
        "the session still dies idle (counted); no error")
    assert matrix.setting_changes(base, run("ok 8", dropped=0)) == (
        "no drop: the session is closed before the timeout; no error")
    assert matrix.setting_changes(base, run("error 2013 OperationalError y")) == (
        "the session still dies idle (counted); still an error")
    quiet = run("ok 8")
    assert matrix.setting_changes(quiet, run("ok 9")) == "the session still dies idle (counted)"
    # An event before the query is an error the application was told of.
    told = run("ok 8", events=((50.0, "ECONNRESET"),))
    assert matrix.setting_changes(told, run("ok 9")) == (
        "the session still dies idle (counted); no error")


def test_servers_are_planned_so_that_no_driver_meets_itself() -> None:
    runs = [matrix.Run(driver, variant) for driver in matrix.DRIVERS
            for variant in driver.variants]
    plan = matrix.plan_servers(runs)
    assert sorted(len(members) for _, members in plan) == [1, 1, 1, 4, 6]
    for timeout, members in plan:
        assert len({member.driver.title for member in members}) == len(members)
        assert {member.variant.wait_timeout for member in members} == {timeout}


def test_the_readme_table_is_read_and_written_between_its_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- driver-matrix:mysql -->\nold\n<!-- /driver-matrix:mysql -->\n"
                      "after\n")
    assert matrix.documented("mysql", readme) == "old"
    assert matrix.documented("mariadb", readme) is None
    table = matrix.render([("a", "b|c", "`x`", "idle", "1", "no error", "(the defaults)")])
    matrix.write("mysql", table, readme)
    assert matrix.documented("mysql", readme) == table
    assert "b\\|c" in table and readme.read_text().endswith("after\n")
    with pytest.raises(AssertionError, match="no <!-- driver-matrix:mariadb -->"):
        matrix.write("mariadb", table, readme)


def test_the_readme_has_a_table_for_every_flavor_tested() -> None:
    for flavor in matrix.FLAVORS:
        table = matrix.documented(flavor)
        assert table is not None and table.startswith(matrix.render([])), flavor


def test_a_missing_toolchain_fails_saying_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(pytest.fail.Exception, match="apt-get install golang-go"):
        programs.go_command()
    with pytest.raises(pytest.fail.Exception, match="apt-get install default-jdk-headless"):
        programs.java_command()
    with pytest.raises(pytest.fail.Exception, match="apt-get install mariadb-client"):
        programs.cli_command()
    with pytest.raises(pytest.fail.Exception, match=r"no_such_driver is missing: pip install"):
        programs._python(["app.py"], "no_such_driver")
    monkeypatch.setattr(programs, "CACHE", tmp_path)
    with pytest.raises(pytest.fail.Exception, match="run scripts/setup"):
        programs.node_modules()
