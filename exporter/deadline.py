"""One clock and one deadline per scrape.

A scrape's time limit becomes a ``Deadline`` once, where the request arrives (from
Prometheus's ``X-Prometheus-Scrape-Timeout-Seconds``), and that object is handed down to
every read: the socket dump, the owner scan, the server read and each statement on the
connection. No layer works out "how long is left" from its own idea of the time: each asks
the deadline, which reads the one clock the whole collection uses (injectable, so tests
move time instead of waiting for it).
"""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]
"""Seconds on a monotonic scale; ``time.monotonic`` unless a test injects another."""


class Deadline:
    """A moment on a clock by which some work must be done."""

    __slots__ = ("at", "clock")

    def __init__(self, at: float, clock: Clock = time.monotonic) -> None:
        self.at = at
        self.clock = clock

    @classmethod
    def after(cls, seconds: float, clock: Clock = time.monotonic) -> Deadline:
        return cls(clock() + seconds, clock)

    def __repr__(self) -> str:
        return f"Deadline(in {self.remaining():.3f}s)"

    def now(self) -> float:
        """The current time on this deadline's clock (what reads stamp their results with)."""
        return self.clock()

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(self.at - self.clock(), 0.0)

    @property
    def expired(self) -> bool:
        return self.clock() >= self.at

    def sooner(self, seconds: float) -> Deadline:
        """The same deadline brought forward, e.g. to keep time back for rendering."""
        return Deadline(self.at - seconds, self.clock)
