"""The matrix's drivers: what each needs, how it is built (cached in .tools/, never
committed) and how it is started. A missing toolchain fails the test with what to install;
it never skips it."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
CACHE = REPO / ".tools" / "drivers"
SETUP_HINT = "scripts/setup installs it"

# Debian's packages for the Go and Java drivers.
GO_DRIVER = Path("/usr/share/gocode/src/github.com/go-sql-driver/mysql/driver.go")
JARS = {
    "/usr/share/java/HikariCP.jar": "libhikaricp-java",
    "/usr/share/java/mariadb-java-client.jar": "libmariadb-java",
    "/usr/share/java/slf4j-api.jar": "libslf4j-java",
    # Hikari logs through slf4j: its warnings (a connection that failed validation) go to
    # standard error, where a person would see them.
    "/usr/share/java/slf4j-simple.jar": "libslf4j-java",
}
NODE_DIR = HERE / "node"


def _need(condition: bool, what: str) -> None:
    if not condition:
        pytest.fail(f"driver matrix: {what} ({SETUP_HINT})", pytrace=False)


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    _need(path is not None, f"{name} is missing: apt-get install {package}")
    assert path is not None
    return path


def _digest(*parts: bytes) -> str:
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]


def _build(name: str, digest: str, build: Callable[[Path], None]) -> Path:
    """The directory of a build, made once per digest of its inputs: built in a scratch
    directory and renamed into place, so a half-done build is never used."""
    target = CACHE / f"{name}-{digest}"
    if target.is_dir():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=CACHE))
    try:
        build(scratch)
        os.replace(scratch, target)
    except OSError:
        if not target.is_dir():  # another run built it meanwhile: use theirs
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def _run_build(argv: Sequence[str], env: Mapping[str, str] | None = None,
               cwd: Path | None = None) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=cwd,
                            env={**os.environ, **(env or {})}, check=False)
    if result.returncode != 0:
        pytest.fail(f"driver matrix: {' '.join(argv)} failed:\n{result.stderr[-2000:]}",
                    pytrace=False)


# --- one function per driver: the command that starts it --------------------------------


def _python(argv: Sequence[str], *modules: str) -> list[str]:
    """This interpreter (the .venv's) running argv, once the modules it needs are there."""
    for module in modules:
        _need(importlib.util.find_spec(module) is not None,
              f"the Python package {module} is missing: pip install -e '.[test]'")
    return [sys.executable, *argv]


def django_command() -> list[str]:
    return _python([str(HERE / "djangoapp" / "manage.py"), "idlecheck"], "django", "MySQLdb")


def sqlalchemy_command() -> list[str]:
    return _python([str(HERE / "sqlalchemy_worker.py")], "sqlalchemy", "pymysql")


def cli_command() -> list[str]:
    _tool("mariadb", "mariadb-client")
    return [sys.executable, "-m", "tests.support.drivers.mariadb_cli"]


def go_command() -> list[str]:
    go = _tool("go", "golang-go")
    _need(GO_DRIVER.is_file(), "go-sql-driver is missing: apt-get install "
          "golang-github-go-sql-driver-mysql-dev")
    source = HERE / "go" / "go-sql-client"
    version = subprocess.run([go, "version"], capture_output=True, check=True).stdout
    digest = _digest(version, *(p.read_bytes() for p in sorted(source.glob("*.go"))))

    def build(into: Path) -> None:
        # GOPATH mode against Debian's packaged sources: no module download, no network.
        _run_build([go, "build", "-o", str(into / "go-sql-client"), "."], cwd=source,
                   env={"GOPATH": "/usr/share/gocode", "GO111MODULE": "off", "GOFLAGS": "",
                        "GOCACHE": str(CACHE / "go-cache")})

    return [str(_build("go", digest, build) / "go-sql-client")]


def java_command() -> list[str]:
    javac = _tool("javac", "default-jdk-headless")
    java = _tool("java", "default-jre-headless")
    for jar, package in JARS.items():
        _need(Path(jar).is_file(), f"{jar} is missing: apt-get install {package}")
    classpath = ":".join(JARS)
    source = HERE / "java" / "HikariClient.java"
    version = subprocess.run([javac, "-version"], capture_output=True, check=True)
    digest = _digest(version.stdout + version.stderr, source.read_bytes())
    classes = _build("java", digest, lambda into: _run_build(
        [javac, "-d", str(into), "-cp", classpath, str(source)]))
    return [java, "-cp", f"{classes}:{classpath}", "HikariClient"]


def node_modules() -> Path:
    """Where scripts/setup installed the lockfile's packages; fails when that install is
    missing or older than the lockfile."""
    lock = (NODE_DIR / "package-lock.json").read_bytes()
    stamp = CACHE / "node" / f".installed-{_digest((NODE_DIR / 'package.json').read_bytes(), lock)}"
    _need(stamp.exists(), "Node's mysql2 is not installed for this package-lock.json: run "
          "scripts/setup")
    return CACHE / "node" / "node_modules"


def node_command() -> list[str]:
    node = _tool("node", "nodejs")
    node_modules()
    return [node, str(NODE_DIR / "mysql2_client.js")]


# --- a running program ------------------------------------------------------------------


@dataclass
class Line:
    at: float  # time.monotonic() when it was read
    text: str


@dataclass
class DriverProcess:
    """One program of the matrix, started with the contract's environment."""

    name: str
    argv: list[str]
    env: Mapping[str, str]
    lines: queue.Queue[Line] = field(default_factory=queue.Queue)
    process: subprocess.Popen[str] | None = None
    stderr: IO[str] | None = None

    def start(self) -> DriverProcess:
        self.stderr = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed by close())
        # Its own process group: the CLI's wrapper has a child that holds the connection,
        # and both go when the group is ended.
        self.process = subprocess.Popen(
            self.argv, env={**os.environ, **self.env}, cwd=REPO, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
            start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for text in self.process.stdout:
            self.lines.put(Line(time.monotonic(), text.rstrip("\n")))
        self.lines.put(Line(time.monotonic(), "exited"))

    def next_line(self, timeout: float) -> Line:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            line = Line(time.monotonic(), f"(nothing within {timeout:.0f} s)")
        if line.text.startswith(("fatal", "exited", "(nothing")):
            pytest.fail(f"driver matrix: {self.name} said {line.text!r}; its standard error:\n"
                        f"{self.stderr_text()}", pytrace=False)
        return line

    def send(self, text: str) -> float:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()
        return time.monotonic()

    def stderr_text(self, limit: int = 3000) -> str:
        if self.stderr is None:
            return ""
        self.stderr.seek(0)
        return self.stderr.read()[-limit:]

    def close(self) -> None:
        process = self.process
        if process is not None:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    stream.close()
        if self.stderr is not None:
            self.stderr.close()
