"""Fixtures for the fault tests: a MariaDB in its own network namespace, behind a veth
pair that nftables can turn into a misbehaving middlebox."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from exporter.throwaway import MariaDBUnavailable
from tests.support.netns import NamespacedMariaDB, NetnsPair, NetnsServer
from tests.support.scrapes import create_users

NETNS_WAIT_TIMEOUT = 60

@pytest.fixture(scope="session")
def netns_server() -> Iterator[NetnsServer]:
    """One server namespace with MariaDB on its veth address and one client namespace,
    shared by the netns tests; each test lifts its own nftables rules when it ends."""
    with NetnsPair() as pair:
        db = NamespacedMariaDB(pair, [f"--wait-timeout={NETNS_WAIT_TIMEOUT}"])
        try:
            try:
                db.start()
            except MariaDBUnavailable as error:
                pytest.fail(f"cannot start MariaDB in namespace {pair.server_ns}: {error}")
            password = secrets.token_hex(8)
            create_users(db, password)
            yield NetnsServer(pair, db, password)
        finally:
            db.destroy()


@pytest.fixture
def netns(netns_server: NetnsServer) -> Iterator[NetnsServer]:
    """The shared namespaces with no nftables rule left over from an earlier test."""
    netns_server.pair.unblock()
    yield netns_server
    netns_server.pair.unblock()
