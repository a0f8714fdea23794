"""A private MariaDB from Debian's mariadb-server package (mariadbd, mariadb-install-db)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from exporter.throwaway.server import ServerUnavailable, ThrowawayServer, as_root

NOT_INSTALLED = (
    "MariaDB is not installed (mariadbd, mariadb-install-db): "
    "run 'apt-get install mariadb-server' as root"
)


def run_as_group(command: Sequence[str], *, timeout: float) -> subprocess.CompletedProcess[bytes]:
    """subprocess.run in a process group of its own, and the whole group killed if the run
    is interrupted (a stop signal raised as an exception, a timeout).

    mariadb-install-db is a shell script that starts a bootstrap mariadbd: subprocess.run
    kills only the script, and the orphaned server would go on writing into a datadir that
    is being removed (the demo, stopped while it starts, left it behind)."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise
    return subprocess.CompletedProcess(list(command), process.returncode, stdout, stderr)


class MariaDBUnavailable(ServerUnavailable):
    """mariadbd or mariadb-install-db is missing, or the server would not start."""


def find_binary(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if p.exists()), None
    )


def binaries() -> tuple[str, str]:
    """(mariadbd, mariadb-install-db), or MariaDBUnavailable saying what to install."""
    mariadbd = find_binary("mariadbd")
    install = find_binary("mariadb-install-db") or find_binary("mysql_install_db")
    if mariadbd is None or install is None:
        raise MariaDBUnavailable(NOT_INSTALLED)
    return mariadbd, install


def install_datadir(datadir: Path, tmpdir: Path, args: Sequence[str] = ()) -> None:
    """Create the system tables in `datadir` (mariadb-install-db, about 0.6 s); `args` go
    to its bootstrap server."""
    _, install = binaries()
    tmpdir.mkdir(parents=True, exist_ok=True)
    result = run_as_group(
        [
            install,
            "--no-defaults",
            f"--datadir={datadir}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            f"--tmpdir={tmpdir}",
            *as_root(),
            *args,
        ],
        timeout=120,
    )
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).decode(errors="replace").strip()[-400:]
        raise MariaDBUnavailable(f"mariadb-install-db failed ({result.returncode}): {tail}")


class ThrowawayMariaDB(ThrowawayServer):
    """One private mariadbd. `start()` it, use it, `destroy()` it (or use `with`)."""

    flavor: ClassVar[str] = "mariadb"
    product: ClassVar[str] = "MariaDB"
    process_name: ClassVar[str] = "mariadbd"
    unavailable: ClassVar[type[ServerUnavailable]] = MariaDBUnavailable
    # Small and fast: a throwaway server holds almost no data. The InnoDB sizes go to
    # mariadb-install-db too, so the server starts on the files as they were installed.
    innodb_args: tuple[str, ...] = ("--innodb-buffer-pool-size=16M", "--innodb-log-file-size=8M")

    def _executable(self) -> list[str]:
        return [binaries()[0]]

    def _install(self) -> None:
        install_datadir(self.datadir, self.tmpdir, self.innodb_args)
