"""The status page in a real browser (headless Chromium) against the real exporter watching
a throwaway MariaDB through the seed story (wait_timeout 8 s, at_risk at 4 s of headroom):
the countdown falls between reloads, the page reloads itself, the worker's row turns
at_risk then dropped, the drop appears; a process named like markup shows as text; the
Content-Security-Policy is set and nothing breaks under it; the page reads without
JavaScript. A screenshot is kept in test-artifacts/status-page.png."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from exporter.web.status import CONTENT_SECURITY_POLICY
from tests.support.browser import artifact, chromium
from tests.support.exporter_process import ExporterProcess, Worker
from tests.support.mariadb import ThrowawayMariaDB

pytestmark = [pytest.mark.mariadb, pytest.mark.browser]

WAIT_TIMEOUT = 8
HEADROOM = 4
HOSTILE = "<img src=x onerror=alert(1)>"
APP_PASSWORD = "app-Pw-1"


@pytest.fixture(scope="module")
def server() -> Iterator[ThrowawayMariaDB]:
    db = ThrowawayMariaDB([f"--wait-timeout={WAIT_TIMEOUT}"])
    db.start()
    db.create_monitor_user()
    db.create_user("app", grants=(), password=APP_PASSWORD)
    db.execute("CREATE DATABASE shop", "GRANT ALL ON shop.* TO 'app'@'%'")
    yield db
    db.cleanup()


def seconds(text: str | None) -> float:
    """A countdown cell's value: 4.2s, 42s, 1m05s."""
    match = re.fullmatch(r"(?:(\d+)m)?(\d+(?:\.\d)?)s", (text or "").strip())
    assert match, f"not a duration: {text!r}"
    return int(match.group(1) or 0) * 60 + float(match.group(2))


def test_status_page_follows_the_story_in_chromium(server: ThrowawayMariaDB) -> None:
    db = server
    exporter = ExporterProcess(
        [f"--mysql.address=127.0.0.1:{db.port}", f"--mysql.user={db.exporter_user}",
         f"--risk.headroom={HEADROOM}", "--server.interval=2"],
        env={"MYSQL_IDLE_EXPORTER_PASSWORD": db.exporter_password},
    ).start()
    workers: list[Worker] = []
    try:
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1500, "height": 900})
            dialogs: list[str] = []
            requests: list[str] = []
            complaints: list[str] = []
            loads: list[float] = []
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            page.on("request", lambda request: requests.append(request.url))
            page.on("console", lambda message: complaints.append(message.text)
                    if message.type in ("error", "warning") else None)
            page.on("load", lambda _: loads.append(time.monotonic()))

            # The story starts: a worker whose connection will idle into the timeout, and a
            # process that names itself like markup (its query keeps it active).
            workers.append(Worker("seed-worker", db.host, db.port, "app", APP_PASSWORD))
            hostile = Worker(HOSTILE, db.host, db.port, "app", APP_PASSWORD)
            workers.append(hostile)
            assert hostile.send("busy 0 60") == "busy 0"

            # The countdown falls without a reload (the page's script, allowed by its policy).
            response = page.goto(exporter.base + "/?refresh=0")
            assert response is not None and response.status == 200
            assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
            cell = page.locator('tbody[data-process="seed-worker"] td[data-headroom]').first
            start = seconds(cell.text_content())
            assert 0 < start <= WAIT_TIMEOUT
            page.wait_for_function(
                "([cell, start]) => parseFloat(cell.textContent) < start - 0.5",
                arg=[cell.element_handle(), start], timeout=5_000)
            assert seconds(cell.text_content()) < start

            # Reloading itself every second, the page follows the worker's connection.
            page.goto(exporter.base + "/?refresh=1")
            reloads_from = len(loads)
            seed = 'tbody[data-process="seed-worker"]'
            page.locator(f"{seed} tr.state-at_risk").wait_for(timeout=WAIT_TIMEOUT * 1000)
            # A second application connects now: by the drop it is near its own timeout.
            workers.append(Worker("report-cron", db.host, db.port, "app", APP_PASSWORD))
            page.locator(f"{seed} tr.state-dropped").wait_for(timeout=(WAIT_TIMEOUT + 4) * 1000)
            page.locator("table.drops tr.drop td.process",
                         has_text="seed-worker").wait_for(timeout=5_000)
            assert len(loads) - reloads_from >= 3, "the page did not reload itself"
            # Dropped at its wait_timeout: the cause says so.
            assert page.locator("table.drops td.cause").first.text_content() == "idle_timeout"
            # An application that just connected: idle, far from its timeout.
            workers.append(Worker("api-server", db.host, db.port, "app", APP_PASSWORD))
            page.locator('tbody[data-process="api-server"] tr.state-idle').wait_for(
                timeout=5_000)
            page.wait_for_load_state("load")

            # The hostile name is text: no element of its making, no script run.
            names = page.locator("td.process").all_text_contents()
            assert HOSTILE in names, names
            assert page.locator("img").count() == 0 and dialogs == []
            assert page.locator('tbody[data-process="seed-worker"] tr.process-head').inner_text(
            ).startswith("seed-worker")
            # Nothing came from elsewhere, and the policy blocked nothing of the page's own.
            assert requests and all(url.startswith(exporter.base + "/") for url in requests)
            assert not [c for c in complaints if "Content Security Policy" in c], complaints

            shot = artifact("status-page.png")
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000

            # Without JavaScript the same table, with the numbers as the server wrote them.
            plain = browser.new_page(java_script_enabled=False)
            plain.goto(exporter.base + "/?refresh=0")
            row = plain.locator('tbody[data-process="api-server"] tr.state-idle').first
            assert seconds(row.locator("td.headroom").text_content()) > HEADROOM
            assert plain.locator('tbody[data-process="seed-worker"] tr.state-dropped').count()
    finally:
        for worker in workers:
            worker.close()
        exporter.stop()
