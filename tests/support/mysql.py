"""The test suite's throwaway MySQL 9.7 (exporter/throwaway/mysql.py), with the monitoring
user the tests log in as (tests/support/testserver.py). Never touches a server it did not
start.

The template datadir is cached next to the prefix (made once per machine, about 3 s), and
copied for every server (about 0.05 s on tmpfs); a server accepts connections about 0.7 s
after it is started, shuts down cleanly in about 1.6 s and is killed at once by
``cleanup()``. About 100 MB of tmpfs and 500 MB of memory per server.
"""

from __future__ import annotations

from exporter import throwaway
from tests.support.testserver import TestServerMixin

__all__ = ["ThrowawayMySQL"]


class ThrowawayMySQL(TestServerMixin, throwaway.ThrowawayMySQL):
    """One private mysqld for tests, with MySQL's defaults where they matter to the
    exporter (performance_schema ON, TLS offered, caching_sha2_password)."""

    # Durability is worthless here; starting and writing fast is not.
    innodb_args = (
        *throwaway.ThrowawayMySQL.innodb_args,
        "--innodb-flush-log-at-trx-commit=0",
        "--innodb-doublewrite=OFF",
    )
    server_args = (
        *throwaway.ThrowawayMySQL.server_args,
        "--max-connections=500",
    )
    # MySQL offers TLS out of the box (certificates made at --initialize); this turns it off.
    no_tls_args: tuple[str, ...] = ("--tls-version=",)
