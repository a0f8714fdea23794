"""`mysql-idle-exporter demo`: the newcomer's first command tells the whole story, points at
a status page that shows it, and leaves nothing behind however it is stopped."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from exporter.throwaway import mariadb as throwaway_mariadb
from tests.support.waiting import until

pytestmark = pytest.mark.mariadb


class Demo:
    """The real command in a subprocess, its output collected line by line."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "exporter", "demo", "--web.listen-address=127.0.0.1:0",
             *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.lines: list[str] = []
        self.errors: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(stream, into), daemon=True)
                         for stream, into in ((self.process.stdout, self.lines),
                                              (self.process.stderr, self.errors))]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream, into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    def line(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """The first output line matching ``pattern``, waiting for it if need be."""
        found: list[re.Match[str]] = []

        def seen() -> bool:
            found[:] = [m for m in (re.search(pattern, line) for line in self.lines) if m][:1]
            return bool(found) or self.process.poll() is not None

        until(seen, f"the demo to print {pattern!r}", timeout=timeout)
        assert found, f"demo exited ({self.process.returncode}) without {pattern!r}:\n" + (
            "\n".join(self.lines + self.errors))
        return found[0]

    def wait(self, timeout: float = 60.0) -> int:
        code = self.process.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=5)
        return code

    @property
    def out(self) -> str:
        return "\n".join(self.lines)

    @property
    def err(self) -> str:
        return "\n".join(self.errors)


def processes_using(path: str) -> list[int]:
    """Processes whose command line names ``path`` (a server and its install helper do)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            # Bytes: another process's name may be anything, not even UTF-8.
            state = Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if path.encode() in cmdline and state != b"Z":
            found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_demo_tells_the_story_and_its_status_page_shows_it() -> None:
    demo = Demo("--wait-timeout=10", "--duration=26")
    try:
        # What each connection is for, the threshold and why, where to look.
        daily = int(demo.line(r"port (\d+) +daily job +used once, then left idle").group(1))
        demo.line(r"port \d+ +report +runs a long query: active, never idle")
        demo.line(r"port \d+ +pool +pinged every 2.5s, well inside the timeout")
        demo.line(r"at_risk once its headroom .* is 5s or less")
        demo.line(r"half of this demo's 10s timeout")
        base = demo.line(r"status page: (http://127\.0\.0\.1:\d+)/").group(1)
        demo.line(r"metrics: +http://127\.0\.0\.1:\d+/metrics")
        # The narration, in order.
        demo.line(r"the daily job's connection is at_risk: \d+s left", timeout=20)
        demo.line(r"the daily job's connection is dropped: the server reset it", timeout=20)
        with urllib.request.urlopen(base + "/status.json", timeout=10) as response:
            status = json.load(response)
        (target,) = status["targets"]
        worker = next(p for p in target["processes"] if p["process"] == "demo-worker")
        states = {int(s["local"].rsplit(":", 1)[1]): s["state"] for s in worker["sessions"]}
        assert states[daily] == "dropped", states
        assert sorted(states.values()) == ["active", "dropped", "idle"]
        assert [d["process"] for d in target["drops"]] == ["demo-worker"]
        with urllib.request.urlopen(base + "/", timeout=10) as response:
            assert 'data-process="demo-worker"' in response.read().decode()
        lead = demo.line(r"Lead time the exporter gave: at_risk (\d+)s before the drop; "
                         r"dropped reported (\d+)s before the worker noticed\.", timeout=20)
        assert 2 <= int(lead.group(1)) <= 6 and 5 <= int(lead.group(2)) <= 12, lead.group(0)
        demo.line(r"^The story is complete")
        demo.line(r"Press Ctrl-C to stop; the private MariaDB and its data are then removed")
        assert demo.wait() == 0, demo.err
    finally:
        if demo.process.poll() is None:
            demo.process.kill()
    lines = demo.lines
    first = {word: next((i for i, line in enumerate(lines) if word in line), None)
             for word in ("idle 2", "at_risk 1", "dropped 1", "gone away", "story is complete")}
    assert None not in first.values(), demo.out
    assert (first["idle 2"] < first["at_risk 1"] < first["dropped 1"] < first["gone away"]
            < first["story is complete"]), demo.out
    assert "2006" in demo.out and "drops counted 1" in demo.out
    assert lines[-1] == "demo stopped; the private server and its data are gone"
    assert "Traceback" not in demo.err


@pytest.mark.parametrize(
    ("signum", "when"),
    [
        (signal.SIGTERM, "starting"),
        (signal.SIGTERM, "running"),
        (signal.SIGHUP, "running"),
        (signal.SIGINT, "running"),
    ],
    ids=lambda value: value.name if isinstance(value, signal.Signals) else value,
)
def test_a_stop_signal_removes_the_server_and_its_data(signum: signal.Signals,
                                                       when: str) -> None:
    demo = Demo("--wait-timeout=10")
    try:
        workdir = demo.line(r"Starting a private MariaDB in (\S+) on a free loopback port")
        workdir_path = workdir.group(1)
        mariadbd = worker = None
        if when == "running":
            mariadbd = int(demo.line(r"MariaDB on 127\.0\.0\.1:\d+ \(pid (\d+)\)").group(1))
            worker = int(demo.line(r'worker process "demo-worker" \(pid (\d+)\)').group(1))
            demo.line(r"^\s+\d+s  \[up\]")  # the story is under way
            assert alive(mariadbd) and alive(worker)
        demo.process.send_signal(signum)
        assert demo.wait(timeout=30) == 0, demo.err
    finally:
        if demo.process.poll() is None:
            demo.process.kill()
    assert "Traceback" not in demo.err and "KeyboardInterrupt" not in demo.err, demo.err
    assert not Path(workdir_path).exists(), f"{workdir_path} left behind"
    assert processes_using(workdir_path) == [], "a server process was left behind"
    if mariadbd is not None and worker is not None:
        assert not alive(mariadbd) and not alive(worker)
    assert demo.lines[-1] == "demo stopped; the private server and its data are gone"


def test_demo_without_mariadb_says_what_to_install(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from exporter.demo import run_demo

    monkeypatch.setattr(throwaway_mariadb, "find_binary", lambda name: None)
    with pytest.raises(SystemExit) as exit_info:
        run_demo(["--duration=1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("mysql-idle-exporter: error: MariaDB is not installed (mariadbd, "
                       "mariadb-install-db): run 'apt-get install mariadb-server' as root")


def test_demo_rejects_bad_flags() -> None:
    result = subprocess.run([sys.executable, "-m", "exporter", "demo", "--wait-timeout=2"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip() == ("mysql-idle-exporter: error: --wait-timeout must be at "
                                     "least 10 seconds")
