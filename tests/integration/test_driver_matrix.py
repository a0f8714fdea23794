"""The driver matrix of the README: Django with mysqlclient, SQLAlchemy with PyMySQL, Node's
mysql2, Go's database/sql, Java's HikariCP with MariaDB Connector/J and the `mariadb` CLI,
each as a real process (and again with each framework setting that matters) idling into a
short wait_timeout while the real exporter watches (tests/support/drivers/matrix.py).

Every cell of the README's table is what this test measured: it fails when they differ and
prints the measured table (DRIVER_MATRIX_UPDATE=1 writes it into the README instead). The
exporter's side is checked on every run as well: each application is labelled by its own
name, and a session that died idle is counted once, one that the client closed in time never.

Both flavors are measured at once, all runs of a flavor at once too: about 50 s of wall
time for both (the longest run waits out Hikari's smallest maxLifetime, 30 s); the first
run also builds the Go and Java programs into .tools/ (about 3 s).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial

import pytest

from tests.support import servers
from tests.support.drivers import matrix

Measured = dict[str, Future[list[matrix.Run]]]


@pytest.fixture(scope="module")
def measured(request: pytest.FixtureRequest) -> Iterator[Measured]:
    """The matrix of every flavor this run selected, measured at once: each is mostly
    waiting for timeouts, so both together take hardly longer than one."""
    flavors = sorted({item.callspec.params["flavor"] for item in request.session.items
                      if getattr(item, "originalname", "") == "test_driver_matrix"})
    with ThreadPoolExecutor(max_workers=max(1, len(flavors))) as pool:
        yield {flavor: pool.submit(matrix.measure, flavor,
                                   partial(servers.start_server, flavor))
               for flavor in flavors}


@pytest.mark.parametrize("flavor", servers.FLAVOR_PARAMS)
def test_driver_matrix(flavor: str, measured: Measured) -> None:
    runs = measured[flavor].result(timeout=600)
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
