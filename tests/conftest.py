"""Shared fixtures: throwaway MariaDB servers (never the machine's own server)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.mariadb import MariaDBFactory, ThrowawayMariaDB


@pytest.fixture(scope="session")
def mariadb() -> Iterator[ThrowawayMariaDB]:
    """One MariaDB for the whole run, with the monitoring user 'exporter'@'%' (PROCESS)
    in ``.monitor`` / ``.exporter_user`` / ``.exporter_password``. Tests that change
    globals must restore them."""
    server = ThrowawayMariaDB()
    try:
        server.start()
        server.create_monitor_user()
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def mariadb_factory() -> Iterator[MariaDBFactory]:
    """``mariadb_factory(*extra_args, monitor_user=True)`` starts a private server for
    one test (e.g. ``"--performance-schema=ON"``); all are removed after the test."""
    servers: list[ThrowawayMariaDB] = []

    def start(*extra_args: str, monitor_user: bool = True) -> ThrowawayMariaDB:
        server = ThrowawayMariaDB(extra_args)
        servers.append(server)
        server.start()
        if monitor_user:
            server.create_monitor_user()
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.cleanup()
