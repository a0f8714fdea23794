"""`mysql-idle-exporter demo`: the newcomer's first command tells the whole story."""

from __future__ import annotations

import subprocess
import sys

import pytest

from exporter.throwaway import mariadb as throwaway_mariadb


def test_demo_shows_idle_at_risk_dropped_and_the_2006() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "demo", "--wait-timeout=10", "--duration=24",
         "--web.listen-address=127.0.0.1:0"],
        capture_output=True, text=True, timeout=120,
    )
    out = result.stdout
    assert result.returncode == 0, result.stderr
    assert "metrics:  http://127.0.0.1:" in out
    lines = out.splitlines()
    first = {word: next((i for i, line in enumerate(lines) if word in line), None)
             for word in ("idle 2", "at_risk 1", "dropped 1", "gone away")}
    assert None not in first.values(), out
    assert first["idle 2"] < first["at_risk 1"] < first["dropped 1"] < first["gone away"], out
    assert "2006" in out
    assert "drops counted 1" in out
    assert "the private server and its data are gone" in out


def test_demo_without_mariadb_says_what_to_install(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from exporter.demo import run_demo

    monkeypatch.setattr(throwaway_mariadb, "find_binary", lambda name: None)
    with pytest.raises(SystemExit) as exit_info:
        run_demo(["--duration=1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("mysql-idle-exporter: error: MariaDB is not installed (mariadbd, "
                       "mariadb-install-db): run 'sudo apt-get install mariadb-server'")


def test_demo_rejects_bad_flags() -> None:
    result = subprocess.run([sys.executable, "-m", "exporter", "demo", "--wait-timeout=2"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip() == ("mysql-idle-exporter: error: --wait-timeout must be at "
                                     "least 10 seconds")
