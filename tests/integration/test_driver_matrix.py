"""The driver matrix of the README: Django with mysqlclient, SQLAlchemy with PyMySQL, Node's
mysql2, Go's database/sql, Java's HikariCP with MariaDB Connector/J and the `mariadb` CLI,
each as a real process (and again with each framework setting that matters) idling into a
short wait_timeout while the real exporter watches (tests/support/drivers/matrix.py).

Every cell of the README's table is what this test measured: it fails when they differ and
prints the measured table (DRIVER_MATRIX_UPDATE=1 writes it into the README instead). The
exporter's side is checked on every run as well: each application is labelled by its own
name, and a session that died idle is counted once, one that the client closed in time never.

Costs about 40 s of wall time on MariaDB and 47 s on MySQL (the longest run waits out
Hikari's smallest maxLifetime, 30 s; all runs of a flavor go at once); the first run also
builds the Go and Java programs into .tools/ (about 3 s).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import pytest

from tests.support import servers
from tests.support.drivers import matrix


@pytest.fixture
def start_server(flavor: str) -> Iterator[matrix.ServerStarter]:
    started: list[servers.TestServer] = []

    def start(args: Sequence[str]) -> servers.TestServer:
        server = servers.start_server(flavor, args)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.cleanup()


@pytest.mark.parametrize("flavor", servers.FLAVOR_PARAMS)
def test_driver_matrix(flavor: str, start_server: matrix.ServerStarter) -> None:
    runs = matrix.measure(flavor, start_server)
    for run in runs:
        assert run.label is not None, f"{run.name}: the exporter never labelled its session"
        assert run.gone_at is not None and run.result is not None
        # Counted once: by the time the application is told to query, and no more after.
        assert run.dropped in (0, 1) and run.dropped_after == run.dropped, (
            run.name, run.dropped, run.dropped_after)
        # A session the server ended for idleness is a drop; one the client closed in
        # time (a pool's idle or lifetime limit) is not.
        died_idle = run.gone_at - run.ready_at >= run.wait_timeout - 1
        assert run.dropped == (1 if died_idle else 0), (
            run.name, run.gone_at - run.ready_at, run.dropped)
        if "dropped" in matrix.states_seen(run.snapshots):
            assert run.dropped == 1, run.name
    table = matrix.render(matrix.rows(runs))
    if os.environ.get("DRIVER_MATRIX_UPDATE") == "1":
        matrix.write(flavor, table)
    assert matrix.documented(flavor) == table, (
        f"the README's driver matrix for {flavor} is not what was measured; measured:\n"
        f"{table}")
