"""The test suite's throwaway MariaDB: exporter.throwaway's server, quicker to start and with
the monitoring user the tests log in as (tests/support/testserver.py). Never touches a
server it did not start.

The system tables are installed once per test run into a template directory
(``mariadb-install-db`` takes about 0.6 s) and copied for every server (about 25 ms on
tmpfs), so a server is ready in about 0.1 s.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from exporter import throwaway
from exporter.throwaway import free_port
from exporter.throwaway.mariadb import install_datadir
from tests.support.testserver import MonitorUser, TestServerMixin, scratch_dir

__all__ = ["MonitorUser", "ThrowawayMariaDB", "free_port", "scratch_dir", "template_datadir"]


_template: Path | None = None


def template_datadir() -> Path:
    """A freshly installed datadir shared by every server of this run (copied, not used)."""
    global _template
    if _template is not None and (_template / "data" / "mysql").is_dir():
        return _template / "data"
    base = Path(tempfile.mkdtemp(prefix="mariadb-template-", dir=scratch_dir()))
    atexit.register(shutil.rmtree, base, True)
    install_datadir(base / "data", base / "tmp", ThrowawayMariaDB.innodb_args)
    _template = base
    return base / "data"


class ThrowawayMariaDB(TestServerMixin, throwaway.ThrowawayMariaDB):
    """One private mariadbd for tests. ``start()`` it, use it, ``cleanup()`` it (or use
    ``with``)."""

    # Durability is worthless here; starting and writing fast is not. The InnoDB settings
    # go to the template's install too.
    innodb_args = (
        "--innodb-buffer-pool-size=16M",
        "--innodb-log-file-size=4M",
        "--innodb-flush-log-at-trx-commit=0",
        "--innodb-doublewrite=0",
    )
    server_args = (
        *throwaway.ThrowawayMariaDB.server_args,
        "--performance-schema=OFF",
        "--skip-slave-start",
        "--max-connections=500",
    )

    # Debian's MariaDB 10.11 offers no TLS unless given certificates.
    no_tls_args: tuple[str, ...] = ()

    def _install(self) -> None:
        try:
            template = template_datadir()
        except throwaway.ServerUnavailable as error:
            raise self.unavailable(f"{error}: these tests need a real MariaDB server") from None
        shutil.copytree(template, self.datadir, symlinks=True)
