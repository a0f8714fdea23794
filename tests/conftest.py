"""Shared fixtures: throwaway MariaDB and MySQL servers (never the machine's own server).

Server-facing tests take ``db_server`` (shared for the whole run, one per flavor) or
``db_server_factory`` (private servers for one test) and so run once per flavor, with ids
``[mariadb]`` and ``[mysql]`` (``-k mysql``, ``-m mysql``). A module-scoped fixture that
starts its own server takes ``db_flavor`` and calls tests.support.servers.start_server.
``mariadb`` and ``mariadb_factory`` are for the tests about MariaDB alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.support.mariadb import ThrowawayMariaDB
from tests.support.servers import FLAVOR_PARAMS, TestServer, start_server

MariaDBFactory = Callable[..., ThrowawayMariaDB]
ServerFactory = Callable[..., TestServer]


class SharedServers:
    """One server per flavor, started on first use and kept for the whole run."""

    def __init__(self) -> None:
        self._servers: dict[str, TestServer] = {}

    def get(self, flavor: str) -> TestServer:
        if flavor not in self._servers:
            self._servers[flavor] = start_server(flavor, monitor_user=True)
        return self._servers[flavor]

    def close(self) -> None:
        for server in self._servers.values():
            server.cleanup()


@pytest.fixture(scope="session")
def shared_servers() -> Iterator[SharedServers]:
    servers = SharedServers()
    try:
        yield servers
    finally:
        servers.close()


@pytest.fixture(scope="session", params=FLAVOR_PARAMS)
def db_flavor(request: pytest.FixtureRequest) -> str:
    """``mariadb`` or ``mysql``: every test that uses it runs once per flavor."""
    return str(request.param)


@pytest.fixture(scope="session")
def db_server(shared_servers: SharedServers, db_flavor: str) -> TestServer:
    """One server of each flavor for the whole run, with the monitoring user
    'exporter'@'%' (PROCESS) in ``.monitor`` / ``.exporter_user`` / ``.exporter_password``.
    Tests that change globals must restore them."""
    return shared_servers.get(db_flavor)


@pytest.fixture(scope="session")
def mariadb(shared_servers: SharedServers) -> TestServer:
    """The shared MariaDB (``db_server`` for tests about MariaDB alone)."""
    return shared_servers.get("mariadb")


def _factory(flavor: str) -> Iterator[ServerFactory]:
    servers: list[TestServer] = []

    def start(*extra_args: str, monitor_user: bool = True) -> TestServer:
        server = start_server(flavor, extra_args, monitor_user=monitor_user)
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.cleanup()


@pytest.fixture
def db_server_factory(db_flavor: str) -> Iterator[ServerFactory]:
    """``db_server_factory(*extra_args, monitor_user=True)`` starts a private server of the
    test's flavor (e.g. ``"--performance-schema=ON"``); all are removed after the test."""
    yield from _factory(db_flavor)


@pytest.fixture
def mariadb_factory() -> Iterator[MariaDBFactory]:
    """``db_server_factory`` for tests about MariaDB alone."""
    yield from _factory("mariadb")  # type: ignore[misc]
