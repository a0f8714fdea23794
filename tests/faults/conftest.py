"""Fixtures for the fault tests: a server (MariaDB, then MySQL: ``db_flavor``) in its own
network namespace, behind a veth pair that nftables can turn into a misbehaving
middlebox."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.faults.common import create_users
from tests.support.netns import NetnsPair, server_in_namespace
from tests.support.servers import TestServer, server_class

NETNS_WAIT_TIMEOUT = 60


@dataclass
class NetnsServer:
    pair: NetnsPair
    db: TestServer
    password: str

    @property
    def target(self) -> str:
        return f"{self.db.host}:{self.db.port}"


@pytest.fixture(scope="session")
def netns_server(db_flavor: str) -> Iterator[NetnsServer]:
    """One server namespace with a server of the test's flavor on its veth address and one
    client namespace, shared by the netns tests; each test lifts its own nftables rules
    when it ends."""
    with NetnsPair() as pair:
        db = server_in_namespace(server_class(db_flavor), pair,
                                 [f"--wait-timeout={NETNS_WAIT_TIMEOUT}"])
        try:
            db.start()  # fails the test, with the reason, if it cannot
            password = secrets.token_hex(8)
            create_users(db, password)
            yield NetnsServer(pair, db, password)
        finally:
            db.cleanup()


@pytest.fixture
def netns(netns_server: NetnsServer) -> Iterator[NetnsServer]:
    """The shared namespaces with no nftables rule left over from an earlier test."""
    netns_server.pair.unblock()
    yield netns_server
    netns_server.pair.unblock()
