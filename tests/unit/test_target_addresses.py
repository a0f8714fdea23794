"""--mysql.address: one target per server address, however it is spelled. The `target`
label is the normalised spelling; /probe and /fleet/sessions accept any spelling of it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from exporter.addresses import AddressError, target_address
from exporter.config import UsageError, parse_config
from tests.support.exporter_process import ExporterProcess


@pytest.mark.parametrize(
    "given,expected",
    [
        ("127.0.0.1:3306", ("127.0.0.1:3306", "127.0.0.1", 3306)),
        ("127.0.0.1:3306 ", ("127.0.0.1:3306", "127.0.0.1", 3306)),
        (" 127.0.0.1:3306", ("127.0.0.1:3306", "127.0.0.1", 3306)),
        ("\t127.0.0.1:3306\n", ("127.0.0.1:3306", "127.0.0.1", 3306)),
        ("127.0.0.1:03306", ("127.0.0.1:3306", "127.0.0.1", 3306)),
        (":3306", ("127.0.0.1:3306", "127.0.0.1", 3306)),
        ("DB-A.Example:3306", ("db-a.example:3306", "db-a.example", 3306)),
        ("[::1]:3306", ("[::1]:3306", "::1", 3306)),
        ("[0:0:0:0:0:0:0:1]:3306", ("[::1]:3306", "::1", 3306)),
        ("[2001:DB8::1]:3307", ("[2001:db8::1]:3307", "2001:db8::1", 3307)),
        ("[::ffff:127.0.0.1]:3306", ("127.0.0.1:3306", "127.0.0.1", 3306)),
        ("[fe80::1%eth0]:3306", ("[fe80::1%eth0]:3306", "fe80::1%eth0", 3306)),
        # Not the same as 127.0.0.1: a name is never resolved to decide sameness.
        ("localhost:3306", ("localhost:3306", "localhost", 3306)),
    ],
)
def test_spellings_normalise(given: str, expected: tuple[str, str, int]) -> None:
    assert target_address(given) == expected


@pytest.mark.parametrize("given", ["", "   ", "db", "::1:3306", "db:0", "db:x", "[::1"])
def test_malformed_addresses_are_refused(given: str) -> None:
    with pytest.raises(AddressError):
        target_address(given)


@pytest.mark.parametrize(
    "first,second",
    [
        ("127.0.0.1:3306", "127.0.0.1:3306 "),
        (" 127.0.0.1:3306", "127.0.0.1:3306"),
        ("DB:3306", "db:3306"),
        ("[::1]:3306", "[0::1]:3306"),
        (":3306", "127.0.0.1:3306"),
    ],
)
def test_two_spellings_of_one_target_are_refused(first: str, second: str) -> None:
    with pytest.raises(UsageError, match="same target"):
        parse_config([f"--mysql.address={first}", f"--mysql.address={second}"])


def test_three_spellings_exit_2_with_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "--mysql.user=u", "--mysql.address=127.0.0.1:3306 ",
         "--mysql.address= 127.0.0.1:3306", "--mysql.address=127.0.0.1:3306"],
        capture_output=True, text=True, timeout=30,
        env={"MYSQL_IDLE_EXPORTER_PASSWORD": "pw"},
    )
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "same target" in lines[0] and "127.0.0.1:3306" in lines[0], lines[0]


def test_the_label_is_the_normalised_spelling_and_probe_accepts_any() -> None:
    # Port 1 on loopback refuses at once: the target is down, which is all this needs.
    exporter = ExporterProcess(["--mysql.address= LocalHost:1 ", "--mysql.user=u"],
                               env={"MYSQL_IDLE_EXPORTER_PASSWORD": "pw"})
    with exporter:
        metrics = exporter.scrape()
        assert [labels["target"] for labels, _ in metrics.find("mysql_idle_up")] == [
            "localhost:1"
        ]
        probed = exporter.scrape("/probe?target=LOCALHOST:01")
        assert probed.get("mysql_idle_up", target="localhost:1") == 0
        status, _ = exporter.get("/probe?target=localhost:2")
        assert status == 400
