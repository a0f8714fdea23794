"""The security tests: secrets, TLS to the database, grants, concurrency and a soak."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # Registered here so that --strict-markers accepts it without touching pyproject.toml;
    # `-m "not soak"` leaves out the 150-second soak.
    config.addinivalue_line("markers", "soak: a long-running stability test (about 150 s)")
