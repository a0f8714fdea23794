"""Flags: defaults, validation, and the one-line exit-2 contract of the real command."""

from __future__ import annotations

import subprocess
import sys

import pytest

from exporter.cli import build_exporter
from exporter.config import UsageError, parse_config


def test_defaults() -> None:
    config = parse_config([])
    assert [t.name for t in config.targets] == ["127.0.0.1:3306"]
    assert (config.listen_host, config.listen_port) == ("", 9864)
    assert config.telemetry_path == "/metrics"
    assert config.risk_headroom == 300
    assert config.network_idle_timeout is None
    assert config.sessions_top == 20
    assert config.server_interval == 30
    assert config.fleet_fresh_interval == 1
    assert config.mode == "local"


@pytest.mark.parametrize("value,seconds", [("250ms", 0.25), ("2s", 2), ("3", 3), ("0", 0)])
def test_fleet_fresh_interval(value: str, seconds: float) -> None:
    config = parse_config(["--fleet.serve", f"--fleet.fresh-interval={value}"])
    assert config.fleet_fresh_interval == seconds


def test_fleet_fresh_interval_reaches_the_fleet_server() -> None:
    config = parse_config(["--fleet.serve", "--mysql.user=u", "--fleet.fresh-interval=250ms"])
    exporter = build_exporter(config, {"MYSQL_IDLE_EXPORTER_PASSWORD": "pw"})
    try:
        assert exporter.fleet is not None and exporter.fleet.fresh_interval == 0.25
    finally:
        exporter.close()


def test_no_fleet_server_unless_asked_for() -> None:
    exporter = build_exporter(parse_config(["--mysql.user=u"]),
                              {"MYSQL_IDLE_EXPORTER_PASSWORD": "pw"})
    try:
        assert exporter.fleet is None
    finally:
        exporter.close()


def test_fleet_fresh_interval_is_checked_against_the_scrape_timeout_only_when_serving() -> None:
    argv = ["--fleet.fresh-interval=20s", "--web.scrape-timeout=30s"]
    assert parse_config(["--fleet.serve", *argv]).fleet_fresh_interval == 20
    # Not serving: the interval is unused, and no check stands in the way.
    assert parse_config(["--web.scrape-timeout=500ms"]).scrape_timeout == 0.5


def test_targets_are_repeatable_and_take_one_spelling_as_label() -> None:
    config = parse_config(
        [
            "--mysql.address=db-a:3306",
            "--mysql.address",
            "[2001:db8::1]:3307",
            "--mysql.address=:3308",
        ]
    )
    assert [(t.name, t.host, t.port) for t in config.targets] == [
        ("db-a:3306", "db-a", 3306),
        ("[2001:db8::1]:3307", "2001:db8::1", 3307),
        ("127.0.0.1:3308", "127.0.0.1", 3308),
    ]


@pytest.mark.parametrize(
    "value,seconds",
    [("30", 30), ("1.5", 1.5), ("30s", 30), ("5m", 300), ("1h", 3600), ("250ms", 0.25)],
)
def test_durations(value: str, seconds: float) -> None:
    assert parse_config([f"--risk.headroom={value}"]).risk_headroom == seconds


@pytest.mark.parametrize(
    "argv,fragment",
    [
        (["--mysql.address=db"], "missing port"),
        (["--mysql.address=db:99999"], "port must be a number"),
        (["--mysql.address=::1:3306"], "brackets"),
        (["--mysql.address=a:1", "--mysql.address=a:1"], "same target"),
        (["--risk.headroom=soon"], "not a duration"),
        (["--risk.headroom=-5"], "non-negative"),
        (["--risk.headroom=nan"], "finite"),
        (["--sessions.top=-1"], "must not be negative"),
        (["--web.telemetry-path=metrics"], "must start with '/'"),
        (["--web.telemetry-path=/healthz"], "/healthz"),
        (["--network.idle-timeout=0"], "more than 0"),
        (["--web.scrape-timeout=301s"], "at most 300s"),
        (["--web.scrape-timeout=0"], "more than 0"),
        (["--web.read-header-timeout=0"], "more than 0"),
        (["--web.max-connections=0"], "at least 1"),
        (["--mysql.password=hunter2"], "not accepted on the command line"),
        (["--no-such-flag"], "unrecognized arguments"),
        (["--sockets.source=magic"], "invalid choice"),
        (["--mode=cluster"], "invalid choice"),
        (["--mode=node", "--sockets.source=proc"], "netlink sock_diag"),
        (["--fleet.fresh-interval=often"], "not a duration"),
        (["--fleet.fresh-interval=-1s"], "non-negative"),
        (["--fleet.fresh-interval=inf"], "finite"),
        (["--sockets.dump-interval=-1m"], "non-negative"),
        (["--sockets.dump-interval=often"], "not a duration"),
        (["--fleet.serve", "--fleet.fresh-interval=10s"], "shorter than --web.scrape-timeout"),
        (["--fleet.serve", "--web.scrape-timeout=1s"], r"fresh-interval \(1s\) must be shorter"),
    ],
)
def test_bad_flags(argv: list[str], fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment):
        parse_config(argv)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


@pytest.mark.parametrize(
    "args",
    [
        ["--mysql.address=nope"],
        ["--risk.headroom=x"],
        ["--mysql.password=hunter2"],
        ["--config.my-cnf=/nonexistent/my.cnf"],
        ["--web.config.file=/nonexistent/web.yml", "--mysql.user=u"],
        ["--bogus"],
        ["--fleet.fresh-interval=soon"],
        ["--fleet.serve", "--fleet.fresh-interval=1m"],
        ["--state.dir=/nonexistent/state"],
    ],
)
def test_the_command_exits_2_with_one_line(args: list[str]) -> None:
    result = run_cli(*args)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mysql-idle-exporter: error: ")
    assert "Traceback" not in result.stderr
    assert "hunter2" not in result.stderr + result.stdout


def test_help_lists_the_contract_flags() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for flag in (
        "--mysql.address",
        "--mysql.user",
        "--config.my-cnf",
        "--web.listen-address",
        "--web.telemetry-path",
        "--web.config.file",
        "--risk.headroom",
        "--network.idle-timeout",
        "--sessions.top",
        "--server.interval",
        "--fleet.fresh-interval",
        "--fleet.allow-unauthenticated",
        "--web.read-header-timeout",
        "--web.max-connections",
        "--sockets.dump-interval",
    ):
        assert flag in result.stdout
    # What a hostile header is turned into, and what the target label is.
    assert "300s" in result.stdout and "NaN" in result.stdout
    assert "canonical form" in " ".join(result.stdout.split())
    assert "MYSQL_IDLE_EXPORTER_PASSWORD" in result.stdout


def test_a_state_directory_is_taken_as_given(tmp_path) -> None:
    assert parse_config([f"--state.dir={tmp_path}"]).state_dir == str(tmp_path)
    assert parse_config([]).state_dir is None


@pytest.mark.parametrize("path", ["/nonexistent/state", "/etc/hostname"])
def test_a_state_directory_must_exist_and_be_writable(path: str) -> None:
    config = parse_config(["--mysql.user=u", f"--state.dir={path}"])
    with pytest.raises(UsageError, match="not an existing directory"):
        build_exporter(config, {"MYSQL_IDLE_EXPORTER_PASSWORD": "pw"})
