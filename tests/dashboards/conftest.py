"""Fixtures for the dashboard and alert-rule tests: the tools they need, never skipped."""

from __future__ import annotations

import shutil

import pytest


def _require(tool: str, hint: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} not found on PATH: {hint}", pytrace=False)
    return path


@pytest.fixture(scope="session")
def promtool() -> str:
    return _require("promtool", "install it (Debian: apt-get install prometheus)")


@pytest.fixture(scope="session")
def node() -> str:
    _require("npm", "install node >= 18 with npm (Debian: apt-get install nodejs npm)")
    return _require("node", "install node >= 18 with npm (Debian: apt-get install nodejs npm)")
