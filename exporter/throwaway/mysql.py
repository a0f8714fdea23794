"""A private MySQL 9.7 from Debian sid's packages, unpacked into a prefix by
scripts/fetch-mysql.sh (run by scripts/setup) and started through the prefix's own loader.

Debian bookworm has no MySQL server; sid's `mysql-server-core` and the sid libraries it
links against run here from a private prefix, without installing anything system-wide:
``PREFIX/bin/mysqld`` is a symlink to the prefix's ``ld-linux`` (so the process is named
mysqld), started as ``PREFIX/bin/mysqld --library-path PREFIX/usr/lib/TRIPLET
PREFIX/usr/sbin/mysqld ...``. The prefix is checked once per process: every library mysqld
loads must resolve inside it.

``mysqld --initialize-insecure`` takes about 3 s, so it runs once per prefix and set of
initialisation flags into a template data directory cached next to the prefix; every server
copies it (about 0.05 s on tmpfs) without its ``auto.cnf``, so each gets its own server_uuid.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import ClassVar

from exporter.throwaway.server import ServerUnavailable, ThrowawayServer, as_root

SERIES = "9.7"
PREFIX_ENV = "MYSQL_IDLE_EXPORTER_MYSQL_PREFIX"
_TRIPLETS = {
    "x86_64": ("x86_64-linux-gnu", "ld-linux-x86-64.so.2"),
    "aarch64": ("aarch64-linux-gnu", "ld-linux-aarch64.so.1"),
}
# With --skip-name-resolve a TCP client from 127.0.0.1 is not root@localhost (that account
# matches unix-socket clients only): root gets loopback TCP accounts too, without password.
INIT_SQL = (
    "CREATE USER 'root'@'127.0.0.1' IDENTIFIED BY '';\n"
    "GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;\n"
    "CREATE USER 'root'@'::1' IDENTIFIED BY '';\n"
    "GRANT ALL PRIVILEGES ON *.* TO 'root'@'::1' WITH GRANT OPTION;\n"
)


class MySQLUnavailable(ServerUnavailable):
    """The MySQL prefix is missing or broken, or the server would not start."""


def default_prefix() -> Path:
    """Where scripts/fetch-mysql.sh puts MySQL (the same rule as the script's)."""
    explicit = os.environ.get(PREFIX_ENV)
    if explicit:
        return Path(explicit)
    cache_home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache_home) / "mysql-idle-exporter" / f"mysql-{SERIES}"


@dataclass(frozen=True)
class MySQLPrefix:
    """An unpacked MySQL: the paths mysqld needs."""

    root: Path

    @property
    def libdir(self) -> Path:
        return self.root / "usr" / "lib" / _triplet()[0]

    @property
    def launcher(self) -> Path:
        """The prefix's loader under the name mysqld."""
        return self.root / "bin" / "mysqld"

    @property
    def mysqld(self) -> Path:
        return self.root / "usr" / "sbin" / "mysqld"

    @property
    def version(self) -> str:
        """What scripts/fetch-mysql.sh fetched (its first line: package and version)."""
        try:
            return (self.root / ".complete").read_text().splitlines()[0].split()[-1]
        except (OSError, IndexError):
            return ""

    def executable(self) -> list[str]:
        return [str(self.launcher), "--library-path", str(self.libdir), str(self.mysqld)]

    def server_args(self) -> list[str]:
        """Flags every mysqld from the prefix needs: nothing from the host's MySQL/MariaDB
        configuration or paths."""
        return [
            f"--basedir={self.root / 'usr'}",
            f"--lc-messages-dir={self.root / 'usr' / 'share' / 'mysql'}",
            f"--plugin-dir={self.root / 'usr' / 'lib' / 'mysql' / 'plugin'}",
            "--secure-file-priv=NULL",
            "--mysqlx=OFF",
        ]


def _triplet() -> tuple[str, str]:
    machine = platform.machine()
    if machine not in _TRIPLETS:
        raise MySQLUnavailable(f"no MySQL prefix for machine {machine}")
    return _TRIPLETS[machine]


def _not_installed(root: Path, why: str) -> MySQLUnavailable:
    return MySQLUnavailable(
        f"MySQL {SERIES} is not usable from {root} ({why}): run scripts/setup, which "
        f"fetches Debian sid's mysql-server-core there (scripts/fetch-mysql.sh; set "
        f"{PREFIX_ENV} for another place)"
    )


@cache
def _checked(root: Path) -> MySQLPrefix:
    prefix = MySQLPrefix(root)
    if not (root / ".complete").exists() or not prefix.launcher.exists():
        raise _not_installed(root, "not fetched")
    try:
        listing = subprocess.run(
            [str(prefix.launcher), "--library-path", str(prefix.libdir), "--list",
             str(prefix.mysqld)],
            capture_output=True, text=True, timeout=30, check=False,
        )
    except OSError as error:
        raise _not_installed(root, f"its loader does not run: {error}") from None
    problems = [
        line.strip() for line in listing.stdout.splitlines()
        if "not found" in line or ("=>" in line and not line.split("=>", 1)[1].strip()
                                   .startswith(str(root) + "/"))
    ]
    if listing.returncode != 0 or problems:
        detail = "; ".join(problems) or listing.stderr.strip()[-300:]
        raise _not_installed(root, f"libraries not resolved inside the prefix: {detail}")
    return prefix


def find_prefix(root: Path | None = None) -> MySQLPrefix:
    """The checked prefix, or MySQLUnavailable saying how to get it."""
    return _checked((root or default_prefix()).resolve())


def template_datadir(prefix: MySQLPrefix, init_args: tuple[str, ...]) -> Path:
    """A data directory initialised with `init_args`, made once and kept next to the prefix
    (servers copy it). Safe when several processes ask at once."""
    key = hashlib.sha256(
        "\0".join((prefix.version, str(prefix.root), INIT_SQL, *init_args)).encode()
    ).hexdigest()[:16]
    templates = Path(f"{prefix.root}-datadirs")
    ready = templates / key / "data"
    if (templates / key / ".complete").exists():
        return ready
    templates.mkdir(parents=True, exist_ok=True)
    with open(templates / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (templates / key / ".complete").exists():
            return ready
        work = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=templates))
        try:
            _initialize(prefix, work, init_args)
            (work / ".complete").touch()
            shutil.rmtree(templates / key, ignore_errors=True)
            work.rename(templates / key)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return ready


def _initialize(prefix: MySQLPrefix, work: Path, init_args: tuple[str, ...]) -> None:
    (work / "tmp").mkdir()
    init_file = work / "init.sql"
    init_file.write_text(INIT_SQL)
    log = work / "initialize.log"
    result = subprocess.run(
        [*prefix.executable(), "--no-defaults", *as_root(), *prefix.server_args(),
         f"--datadir={work / 'data'}", f"--tmpdir={work / 'tmp'}", f"--log-error={log}",
         "--initialize-insecure", f"--init-file={init_file}", "--skip-log-bin", *init_args],
        capture_output=True, timeout=300, check=False,
    )
    if result.returncode != 0:
        tail = "(no log)"
        with contextlib.suppress(OSError):
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise MySQLUnavailable(
            f"mysqld --initialize-insecure failed ({result.returncode}):\n{tail}")


def copy_datadir(template: Path, datadir: Path) -> None:
    """The template as a new server's datadir, without its server_uuid (auto.cnf): servers
    copied from one template must not share it."""
    shutil.copytree(template, datadir, symlinks=True,
                    ignore=lambda directory, names: ["auto.cnf"] if Path(directory) == template
                    else [])


class ThrowawayMySQL(ThrowawayServer):
    """One private mysqld from the prefix. `start()` it, use it, `destroy()` it (or `with`).

    Defaults as a user finds them: performance_schema ON, TLS offered (certificates that
    --initialize-insecure generates), caching_sha2_password for every account.
    """

    flavor: ClassVar[str] = "mysql"
    product: ClassVar[str] = "MySQL"
    process_name: ClassVar[str] = "mysqld"
    unavailable: ClassVar[type[ServerUnavailable]] = MySQLUnavailable
    # The template's flags: sizes that keep the datadir near 100 MB. The server itself
    # starts with the same InnoDB sizes.
    init_args: ClassVar[tuple[str, ...]] = (
        "--innodb-buffer-pool-size=16M", "--innodb-redo-log-capacity=8M")
    innodb_args: tuple[str, ...] = init_args
    prefix_root: ClassVar[Path | None] = None  # None: default_prefix()

    def _prefix(self) -> MySQLPrefix:
        return find_prefix(self.prefix_root)

    def _executable(self) -> list[str]:
        return self._prefix().executable()

    def _flavor_args(self) -> list[str]:
        return self._prefix().server_args()

    def _install(self) -> None:
        copy_datadir(template_datadir(self._prefix(), self.init_args), self.datadir)
