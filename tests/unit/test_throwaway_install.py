"""The throwaway servers' install step leaves nothing running when it is interrupted."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from exporter.throwaway.mariadb import run_as_group
from tests.support.waiting import until


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (killed, not yet reaped by init) holds no files any more.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_an_interrupted_install_kills_the_scripts_children_too(tmp_path: Path) -> None:
    # Like mariadb-install-db: a script whose child (the bootstrap server) does the work.
    pidfile = tmp_path / "child.pid"
    script = f"sleep 60 & echo $! > {pidfile}; wait"
    with pytest.raises(subprocess.TimeoutExpired):
        run_as_group(["sh", "-c", script], timeout=1.0)
    child = int(pidfile.read_text())
    until(lambda: not _alive(child), "the script's child to be gone", timeout=5)


def test_a_finished_install_returns_its_output() -> None:
    result = run_as_group(["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=10)
    assert (result.returncode, result.stdout, result.stderr) == (3, b"out\n", b"err\n")
