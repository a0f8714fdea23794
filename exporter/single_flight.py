"""One piece of work shared by everyone who asks while it runs.

Fifty scrapes that arrive together get one collection; sidecars asking a fleet exporter
at once get one read. Each asker waits only until its own deadline: work still running
then goes on in the background and the next asker shares it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from exporter.deadline import Deadline

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """Runs ``work`` for the first asker and shares it with the others until it ends."""

    def __init__(self, work: Callable[[Deadline], Awaitable[T]]) -> None:
        self._work = work
        self._running: asyncio.Future[T] | None = None

    @property
    def running(self) -> asyncio.Future[T] | None:
        """The work under way, if any."""
        return self._running if self._running is not None and not self._running.done() else None

    def start(self, deadline: Deadline) -> asyncio.Future[T]:
        """The work under way, or new work started with this asker's deadline."""
        running = self.running
        if running is None:
            running = self._running = asyncio.ensure_future(self._work(deadline))
        return running

    def detach(self) -> None:
        """Let the next asker start new work, while those already waiting keep theirs: for
        work that must begin after its asker arrived, once it has begun."""
        self._running = None

    async def wait(self, deadline: Deadline) -> T | None:
        """The shared result, or None when it is not ready by ``deadline``."""
        running = self.start(deadline)
        try:
            return await asyncio.wait_for(asyncio.shield(running), deadline.remaining())
        except TimeoutError:
            return None
