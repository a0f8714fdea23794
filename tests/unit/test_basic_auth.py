"""Basic auth: an unknown user costs what a known one does, so timing does not tell which
users exist; the password checker keeps bcrypt off the event loop and caches verdicts."""

from __future__ import annotations

import asyncio
import secrets
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from exporter.web.auth import PasswordChecker, Verdict
from exporter.web.config import BasicAuth, load_web_config
from tests.support.web import bcrypt_hash, web_config_text


def auth_with(tmp_path: Path, **users: str) -> BasicAuth:
    path = tmp_path / "web.yml"
    path.write_text(web_config_text(users=users))
    auth = load_web_config(path).basic_auth
    assert auth is not None
    return auth


def seconds(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def test_the_dummy_hash_has_the_highest_cost_of_the_users(tmp_path: Path) -> None:
    auth = auth_with(tmp_path, cheap=bcrypt_hash("a", cost=5), dear=bcrypt_hash("b", cost=9))
    assert auth.dummy_hash.startswith(b"$2b$09$")


def test_an_unknown_user_costs_what_a_known_one_does(tmp_path: Path) -> None:
    auth = auth_with(tmp_path, known=bcrypt_hash("right", cost=9))
    known: list[float] = []
    unknown: list[float] = []
    for _ in range(7):  # interleaved: a change in the machine's load weighs on both alike
        known.append(seconds(lambda: auth.verify("known", secrets.token_hex(8))))
        unknown.append(seconds(lambda: auth.verify("nobody", secrets.token_hex(8))))
    # cost 9 is about 30 ms here; the old cost-4 stand-in took about 1 ms.
    ratio = statistics.median(unknown) / statistics.median(known)
    assert 0.5 < ratio < 2, (sorted(known), sorted(unknown))
    assert auth.verify("known", "right")
    assert not auth.verify("nobody", "right")


def test_verdicts_are_cached_per_user_hash_and_password(tmp_path: Path) -> None:
    auth = auth_with(tmp_path, user=bcrypt_hash("right", cost=10))

    async def scenario() -> list[tuple[Verdict, float]]:
        checker = PasswordChecker()
        results = []
        try:
            for password in ("right", "right", "wrong", "wrong"):
                started = time.perf_counter()
                verdict = await checker.check(auth, "user", password)
                results.append((verdict, time.perf_counter() - started))
        finally:
            checker.close()
        return results

    (first, t1), (again, t2), (wrong, t3), (wrong_again, t4) = asyncio.run(scenario())
    assert (first, again, wrong, wrong_again) == (
        Verdict.ALLOWED, Verdict.ALLOWED, Verdict.DENIED, Verdict.DENIED)
    assert t2 < t1 / 10 and t4 < t3 / 10, (t1, t2, t3, t4)


def test_a_changed_hash_is_not_answered_from_the_cache(tmp_path: Path) -> None:
    old = auth_with(tmp_path, user=bcrypt_hash("old"))
    new = auth_with(tmp_path, user=bcrypt_hash("new"))

    async def scenario() -> tuple[Verdict, Verdict, Verdict]:
        checker = PasswordChecker()
        try:
            return (await checker.check(old, "user", "old"),
                    await checker.check(new, "user", "old"),
                    await checker.check(new, "user", "new"))
        finally:
            checker.close()

    assert asyncio.run(scenario()) == (Verdict.ALLOWED, Verdict.DENIED, Verdict.ALLOWED)


def test_checks_run_off_the_loop_one_at_a_time_and_excess_is_refused(tmp_path: Path) -> None:
    auth = auth_with(tmp_path, user=bcrypt_hash("right", cost=10))

    async def scenario() -> tuple[list[Verdict], float]:
        checker = PasswordChecker(max_waiting=2)
        try:
            checks = [asyncio.ensure_future(checker.check(auth, "user", f"wrong{i}"))
                      for i in range(6)]
            # The loop stays free while the checks run in their thread.
            started = time.perf_counter()
            await asyncio.sleep(0.01)
            lag = time.perf_counter() - started
            return list(await asyncio.gather(*checks)), lag
        finally:
            checker.close()

    verdicts, lag = asyncio.run(scenario())
    assert lag < 0.05, lag
    # One running and two waiting; the other three are refused at once.
    assert verdicts.count(Verdict.DENIED) == 3, verdicts
    assert verdicts.count(Verdict.BUSY) == 3, verdicts


@pytest.mark.parametrize("cost", [4, 31])
def test_costs_at_the_bounds_are_accepted(tmp_path: Path, cost: int) -> None:
    # A cost-31 hash is never computed here: only its form is checked at load.
    hashed = bcrypt_hash("x", cost=4).replace("$04$", f"${cost:02d}$")
    auth = auth_with(tmp_path, user=hashed)
    assert auth.dummy_hash.startswith(f"$2b${cost:02d}$".encode())


def test_the_same_credentials_at_once_share_one_check(tmp_path: Path) -> None:
    # Fifty sidecars restarting together present one password at the same moment.
    auth = auth_with(tmp_path, sidecar=bcrypt_hash("right", cost=8))

    async def scenario() -> list[Verdict]:
        checker = PasswordChecker(max_waiting=2)
        try:
            return list(await asyncio.gather(
                *(checker.check(auth, "sidecar", "right") for _ in range(50))))
        finally:
            checker.close()

    assert asyncio.run(scenario()) == [Verdict.ALLOWED] * 50
