"""Name resolution that cannot hold a collection up: literals, the first lookup, refreshes
in the background, the last good addresses kept, failures counted once each."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading

import pytest

from exporter.deadline import Deadline
from exporter.resolver import AddressBook, literal_address
from tests.support.fakes import FakeClock


class Lookups:
    """A resolver whose answers the test hands out one at a time."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.answers: list[frozenset[str] | Exception] = []
        self.go = threading.Semaphore(0)

    def __call__(self, host: str) -> frozenset[str]:
        self.calls.append(host)
        self.go.acquire()
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.mark.parametrize(("host", "expected"), [
    ("10.0.0.5", {"10.0.0.5"}), ("::ffff:10.0.0.5", {"10.0.0.5"}), ("[::1]", {"::1"}),
    ("db.example", None), ("", None),
])
def test_literals_need_no_lookup(host: str, expected: set[str] | None) -> None:
    assert literal_address(host) == (frozenset(expected) if expected is not None else None)


def test_first_lookup_then_background_refreshes_keep_the_last_good_addresses(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    lookups = Lookups()
    book = AddressBook(lookups, clock=clock, refresh_seconds=60, timeout_seconds=5)

    async def scenario() -> None:
        lookups.answers.append(frozenset({"10.0.0.5"}))
        lookups.go.release()
        first = await book.addresses("db.example", Deadline.after(5, clock))
        assert first.addresses == {"10.0.0.5"}
        # Within the refresh period: no lookup at all.
        clock.advance(30)
        await book.addresses("db.example", Deadline.after(5, clock))
        assert lookups.calls == ["db.example"]
        # Due: a refresh starts, and the answer meanwhile is the known one, at once.
        clock.advance(31)
        during = await book.addresses("db.example", Deadline.after(5, clock))
        assert during.addresses == {"10.0.0.5"} and len(lookups.calls) == 2
        # It fails: the last good addresses stay; one failure counted, one warning.
        lookups.answers.append(socket.gaierror(socket.EAI_AGAIN, "Temporary failure"))
        lookups.go.release()
        await until(lambda: book.status("db.example").failures == 1)
        assert book.status("db.example").addresses == {"10.0.0.5"}
        # Later lookups fail too: counted, not logged again; then it resolves anew.
        for answer in (socket.gaierror(socket.EAI_AGAIN, "Temporary failure"),
                       frozenset({"10.0.0.6"})):
            clock.advance(61)
            await book.addresses("db.example", Deadline.after(5, clock))
            lookups.answers.append(answer)
            lookups.go.release()
            await until(lambda: lookups.calls and not book._entries["db.example"].pending)
        status = book.status("db.example")
        assert (status.addresses, status.failures, status.error) == ({"10.0.0.6"}, 2, None)

    with caplog.at_level(logging.INFO, logger="exporter.resolver"):
        asyncio.run(scenario())
    messages = [r.getMessage() for r in caplog.records]
    assert sum("cannot resolve db.example" in m for m in messages) == 1
    assert sum("resolves again" in m for m in messages) == 1


def test_a_hanging_lookup_is_one_thread_bounded_in_time_and_counted_once() -> None:
    clock = FakeClock()
    hang = threading.Event()
    calls: list[str] = []

    def lookup(host: str) -> frozenset[str]:
        calls.append(host)
        hang.wait()
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure")

    book = AddressBook(lookup, clock=clock, timeout_seconds=5)

    async def scenario() -> None:
        # The first collection waits for the first lookup, within its deadline (a past
        # one here, so it does not wait at all).
        status = await book.addresses("hung.example", Deadline(clock.now, clock))
        assert status.addresses == frozenset() and status.failures == 0
        for _ in range(5):
            clock.advance(3)
            status = await book.addresses("hung.example", Deadline(clock.now, clock))
        assert calls == ["hung.example"]  # one lookup at a time per name
        assert (status.failures, status.error) == (1, "lookup timed out")
        hang.set()  # it fails at last: not counted a second time
        await until(lambda: not book._entries["hung.example"].pending)
        assert book.status("hung.example").failures == 1

    asyncio.run(scenario())


async def until(condition: object, timeout: float = 5.0) -> None:
    """Let the event loop run (the lookups' threads report through it) until the
    condition holds."""
    async def poll() -> None:
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0)
    await asyncio.wait_for(poll(), timeout)
