"""Both flavors of throwaway server behind one door, for tests parametrised over them.

    server = start_server("mysql", ["--wait-timeout=8"])   # fails the test if it cannot
    ...
    server.cleanup()

`FLAVORS` are the parameter values (and test ids: ``-k mysql``); tests/conftest.py builds
the ``db_flavor``, ``db_server`` and ``db_server_factory`` fixtures on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from tests.support.mariadb import ThrowawayMariaDB
from tests.support.mysql import ThrowawayMySQL

TestServer = ThrowawayMariaDB | ThrowawayMySQL

_CLASSES: dict[str, type[TestServer]] = {
    ThrowawayMariaDB.flavor: ThrowawayMariaDB,
    ThrowawayMySQL.flavor: ThrowawayMySQL,
}
FLAVORS = tuple(_CLASSES)

# The parameter values, each with its marker (so ``-m mysql`` works too).
FLAVOR_PARAMS = [pytest.param(flavor, marks=getattr(pytest.mark, flavor), id=flavor)
                 for flavor in FLAVORS]


def server_class(flavor: str) -> type[TestServer]:
    try:
        return _CLASSES[flavor]
    except KeyError:
        raise ValueError(f"unknown server flavor {flavor!r}: one of {', '.join(FLAVORS)}"
                         ) from None


def make_server(flavor: str, extra_args: Sequence[str] = (), **kwargs: Any) -> TestServer:
    """A server of `flavor`, not started (kwargs: host, port, command_prefix, via_socket,
    startup_timeout, base_dir)."""
    return server_class(flavor)(extra_args, **kwargs)


def start_server(flavor: str, extra_args: Sequence[str] = (), *, monitor_user: bool = False,
                 **kwargs: Any) -> TestServer:
    """A started server of `flavor` (the test fails, with the reason, if it cannot start;
    the server's directory is removed then). With `monitor_user`, 'exporter'@'%' with
    PROCESS exists (``.monitor``)."""
    server = make_server(flavor, extra_args, **kwargs)
    try:
        server.start()
        if monitor_user:
            server.create_monitor_user()
    except BaseException:
        server.cleanup()
        raise
    return server
