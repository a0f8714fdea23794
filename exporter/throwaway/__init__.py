"""Private database servers on a temporary data directory and a free loopback port.

Used by the demo, the benchmarks and (through tests/support/) the test suite: they never
touch a server they did not start. `ThrowawayMariaDB` runs Debian's mariadbd;
`ThrowawayMySQL` runs MySQL 9.7 from the prefix scripts/fetch-mysql.sh fills. Both share
`ThrowawayServer`'s interface: start, stop, restart, pause/resume, destroy, connect,
execute, log_tail.
"""

from __future__ import annotations

from exporter.throwaway.mariadb import MariaDBUnavailable, ThrowawayMariaDB
from exporter.throwaway.mysql import MySQLUnavailable, ThrowawayMySQL
from exporter.throwaway.server import ServerUnavailable, ThrowawayServer, free_port

FLAVORS: dict[str, type[ThrowawayServer]] = {
    ThrowawayMariaDB.flavor: ThrowawayMariaDB,
    ThrowawayMySQL.flavor: ThrowawayMySQL,
}

__all__ = [
    "FLAVORS",
    "MariaDBUnavailable",
    "MySQLUnavailable",
    "ServerUnavailable",
    "ThrowawayMariaDB",
    "ThrowawayMySQL",
    "ThrowawayServer",
    "free_port",
]
