"""Waiting for something to become true: polling under a deadline, never a bare sleep."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest


def until(condition: Callable[[], object], what: str, *, timeout: float = 5.0,
          interval: float = 0.02) -> None:
    """Poll ``condition`` until it is true; fail saying ``what`` was awaited after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}", False)
        time.sleep(interval)
