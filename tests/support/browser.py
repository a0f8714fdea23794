"""A real headless Chromium (Debian's package), driven by Playwright, for tests of what a
person sees. Playwright's own browser download is never used: it cannot reach its servers
here, and the browser under test is the one the machine has.

A test that needs the browser fails, saying why, when it cannot start: never a skip.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_PATHS = ("chromium", "/usr/bin/chromium", "chromium-browser")
# As root Chromium needs --no-sandbox; the rest keep it from reaching out to Google's
# servers (refused here, and slow to be refused) and from background work.
CHROMIUM_ARGS = (
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)
# Screenshots and the like kept for a person to look at (gitignored).
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def chromium_path() -> str:
    for name in CHROMIUM_PATHS:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("Chromium is not installed (Debian package 'chromium'): run scripts/setup",
                pytrace=False)


@contextmanager
def chromium() -> Iterator[Any]:
    """A launched headless Chromium (a playwright Browser) with a fresh profile."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed in .venv: run scripts/setup", pytrace=False)
    path = chromium_path()
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=path, headless=True,
                                                 args=list(CHROMIUM_ARGS), timeout=60_000)
        except Error as error:
            pytest.fail(f"Chromium ({path}) cannot start: {error}", pytrace=False)
        try:
            yield browser
        finally:
            browser.close()


def artifact(name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name
