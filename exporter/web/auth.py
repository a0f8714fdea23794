"""Basic-auth password checks off the event loop, bounded and cached.

bcrypt costs a quarter of a second at cost 12 on purpose. Run on the event loop, four
clients sending wrong passwords stalled every scrape and /healthz. Here checks run in one
thread of their own (bcrypt releases the GIL), one at a time as exporter-toolkit does,
with at most ``max_waiting`` more queued: beyond that a request is refused at once (429)
rather than queued for seconds. Verdicts are cached, as exporter-toolkit does, keyed by
user, stored hash and password, so a scraper whose password was checked once is answered
from the cache, and changing a user's hash forgets its old password."""

from __future__ import annotations

import asyncio
import enum
import hashlib
import hmac
import os
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

from exporter.web.config import BasicAuth

# Verified pairs, and wrong ones (a scraper left with an old password after a rotation
# would otherwise cost a bcrypt per scrape). Kept apart, so a flood of wrong passwords
# cannot push a right one out.
ALLOWED_CACHE_SIZE = 64
DENIED_CACHE_SIZE = 256
DEFAULT_MAX_WAITING = 8


class Verdict(enum.Enum):
    ALLOWED = "allowed"
    DENIED = "denied"
    BUSY = "busy"  # too many checks waiting: not checked


class _Lru:
    def __init__(self, size: int) -> None:
        self._size = size
        self._keys: OrderedDict[bytes, None] = OrderedDict()

    def __contains__(self, key: bytes) -> bool:
        if key in self._keys:
            self._keys.move_to_end(key)
            return True
        return False

    def add(self, key: bytes) -> None:
        self._keys[key] = None
        self._keys.move_to_end(key)
        while len(self._keys) > self._size:
            self._keys.popitem(last=False)


class PasswordChecker:
    """Used from the event loop only (the caches and the in-flight map are not locked)."""

    def __init__(self, max_waiting: int = DEFAULT_MAX_WAITING) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bcrypt")
        self._max_waiting = max_waiting
        # Checks queued or running, by cache key: the same credentials presented by many
        # clients at once (sidecars restarting together) share one check.
        self._inflight: dict[bytes, asyncio.Future[bool]] = {}
        # Keys are HMACs under a key of this process: the cache never holds a password, nor
        # a fast hash of one that could be brute-forced from a memory dump.
        self._key = os.urandom(32)
        self._allowed = _Lru(ALLOWED_CACHE_SIZE)
        self._denied = _Lru(DENIED_CACHE_SIZE)

    def _cache_key(self, auth: BasicAuth, user: str, password: str) -> bytes:
        message = b"\0".join((user.encode(), auth.hash_of(user), password.encode()))
        return hmac.new(self._key, message, hashlib.sha256).digest()

    async def check(self, auth: BasicAuth, user: str, password: str) -> Verdict:
        key = self._cache_key(auth, user, password)
        if key in self._allowed:
            return Verdict.ALLOWED
        if key in self._denied:
            return Verdict.DENIED
        shared = self._inflight.get(key)
        if shared is None:
            # One running plus max_waiting queued behind it.
            if len(self._inflight) > self._max_waiting:
                return Verdict.BUSY
            loop = asyncio.get_running_loop()
            shared = loop.run_in_executor(self._pool, auth.verify, user, password)
            self._inflight[key] = shared
            shared.add_done_callback(lambda done: self._settled(key, done))
        # Shielded: a client that gives up does not cancel the check others wait for.
        ok = await asyncio.shield(shared)
        return Verdict.ALLOWED if ok else Verdict.DENIED

    def _settled(self, key: bytes, done: asyncio.Future[bool]) -> None:
        del self._inflight[key]
        if not done.cancelled() and done.exception() is None:
            (self._allowed if done.result() else self._denied).add(key)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
