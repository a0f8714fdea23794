"""With no password source set, the exporter says so when it starts, not at the first
scrape (which may come minutes later, or never, if Prometheus is not set up yet)."""

from __future__ import annotations

import pytest

from exporter.cli import password_warning
from exporter.config import parse_config
from tests.support.exporter_process import ExporterProcess
from tests.support.scrapes import PASSWORD_ENV


@pytest.mark.parametrize(
    ("args", "environ", "warned"),
    [
        (["--mysql.user=exporter"], {}, True),
        (["--mysql.user=exporter"], {PASSWORD_ENV: ""}, True),
        (["--mysql.user=exporter"], {PASSWORD_ENV: "s3cret"}, False),
        (["--config.my-cnf=/etc/exporter.cnf"], {}, False),
        (["--fleet.url=http://fleet:9864"], {}, False),
    ],
)
def test_warned_only_without_any_password_source(args, environ, warned) -> None:
    message = password_warning(parse_config(args), environ)
    assert (message is not None) == warned
    if message is not None:
        assert message.startswith(f"no password set: {PASSWORD_ENV} is unset or empty and "
                                  "--config.my-cnf is not given")


def test_the_exporter_warns_at_start_before_any_scrape() -> None:
    exporter = ExporterProcess(["--mysql.address=127.0.0.1:1", "--mysql.user=exporter"],
                               env={PASSWORD_ENV: ""}).start()
    output = exporter.stop()
    warnings = [line for line in output.splitlines() if "no password set" in line]
    assert len(warnings) == 1, output
    assert "level=warning" in warnings[0]
    # No scrape was made: nothing tried the server yet, and still the line is there.
    assert "down:" not in output
