"""`inspect`'s loop over fake sources: exit codes from the view, the table or JSON, and
--watch refreshing until a signal stops it."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal

import pytest

from exporter.cli import Exporter
from exporter.config import parse_config_args
from exporter.inspect import EXIT_OK, EXIT_RISK, EXIT_UNKNOWN, inspect_loop, inspect_parser
from exporter.model import ServerView
from tests.support.builders import sess, sock
from tests.support.fakes import FakeSessions, fake_engine, reading


class Screen(io.StringIO):
    """Output that sends the process SIGINT after ``stop_after`` writes (a person pressing
    Ctrl-C while --watch runs)."""

    def __init__(self, *, tty: bool = False, stop_after: int | None = None) -> None:
        super().__init__()
        self.tty = tty
        self.stop_after = stop_after
        self.writes = 0

    def isatty(self) -> bool:
        return self.tty

    def write(self, text: str) -> int:
        self.writes += 1
        if self.stop_after is not None and self.writes == self.stop_after:
            os.kill(os.getpid(), signal.SIGINT)
        return super().write(text)


def run(sessions: FakeSessions, *args: str, out: Screen | None = None,
        idle_seconds: float = 20.0) -> tuple[int, str]:
    """``idle_seconds``: the kernel's silence of the second socket."""
    sockets = [sock(5000, idle=10.0), sock(5001, idle=idle_seconds)]
    engine = fake_engine({"db:3306": sessions}, sockets)
    config, options = parse_config_args(["--risk.headroom=60", *args], inspect_parser())
    screen = out or Screen()
    try:
        code = asyncio.run(inspect_loop(Exporter(engine), config, options, screen))
    finally:
        engine.close()
    return code, screen.getvalue()


def idle() -> FakeSessions:
    return FakeSessions(reading(sess(1, 5000, idle=10.0), sess(2, 5001, idle=20.0)))


@pytest.mark.parametrize(
    ("sessions", "idle_seconds", "code", "verdict"),
    [
        pytest.param(idle(), 20.0, EXIT_OK, "ok", id="all idle"),
        pytest.param(idle(), 560.0, EXIT_RISK, "risk", id="one at risk"),
        pytest.param(FakeSessions(reading(sess(1, 5000))), 20.0, EXIT_RISK, "risk",
                     id="one phantom"),
        pytest.param(FakeSessions(lambda d: ServerView("db:3306", ok=False, error="refused")),
                     20.0, EXIT_UNKNOWN, "unknown", id="server down"),
    ],
)
def test_exit_code_is_the_verdict(sessions: FakeSessions, idle_seconds: float, code: int,
                                  verdict: str) -> None:
    assert run(sessions, idle_seconds=idle_seconds)[0] == code
    got, out = run(sessions, "--json", idle_seconds=idle_seconds)
    assert got == code and json.loads(out)["verdict"] == verdict


def test_one_look_prints_the_table_once() -> None:
    code, out = run(idle())
    assert code == EXIT_OK
    assert out.startswith("all well: 2 sockets, none near its timeout")
    assert out.count("SOCKET") == 1 and "\x1b" not in out
    row = next(line.split() for line in out.splitlines() if "10.0.0.9:5000" in line)
    assert row[:7] == ["10.0.0.9:5000", "4242", "worker", "1", "app", "shop", "idle"]


def test_watch_refreshes_until_interrupted() -> None:
    code, out = run(idle(), "--watch", "--interval=0.01", out=Screen(stop_after=3))
    assert code == EXIT_OK
    assert out.count("refreshing every 0.01s; Ctrl-C to stop (exit code now 0)") == 3
    assert "\x1b[2J" not in out  # not a terminal: one view after the other


def test_watch_redraws_a_terminal_in_place() -> None:
    _, out = run(idle(), "--watch", "--interval=0.01", out=Screen(tty=True, stop_after=2))
    assert out.count("\x1b[H\x1b[2J") == 2


def test_watch_json_is_one_document_per_line() -> None:
    _, out = run(idle(), "--watch", "--json", "--interval=0.01", out=Screen(stop_after=3))
    lines = out.splitlines()
    assert len(lines) == 3
    assert [json.loads(line)["collections"] for line in lines] == [1, 2, 3]


def test_help_names_the_exit_codes_and_hides_what_a_look_does_not_use(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        inspect_parser().parse_args(["--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert "3  nothing known to be at risk, but the view is incomplete" in text
    assert "--watch" in text and "--json" in text and "--interval" in text
    assert "--web.listen-address" not in text and "--fleet.serve" not in text
    assert "--mysql.address" in text and "--config.my-cnf" in text
