"""The scale benchmark at 200 sessions, so that benchmarks/scale.py keeps working.

Timings are not checked here (the machines are shared and noisy; the numbers live in
benchmarks/README.md), only that every part of the benchmark runs and measures what it
says: both exporters and mysqld_exporter answer, the floor is timed, and the counts that
do not depend on speed hold. Once per server (--server mariadb|mysql); MySQL with its
default performance_schema ON, so the exporter reads performance_schema.processlist.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.scale import MYSQLD_EXPORTER

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[2]
SESSIONS = 200


def test_scale_benchmark_at_200_sessions(tmp_path: Path, db_flavor: str) -> None:
    for tool in (MYSQLD_EXPORTER, "ss", "mariadb"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: scripts/setup installs it", pytrace=False)
    out = tmp_path / "scale.json"
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.scale", f"--server={db_flavor}",
         f"--performance-schema={'on' if db_flavor == 'mysql' else 'off'}",
         f"--sessions={SESSIONS}", "--rounds=2",
         "--unrelated=200", "--rss-scrapes=20", "--query-scrapes=3", "--concurrent=10",
         "--settle=0.2", f"--out={out}"],
        cwd=REPO, capture_output=True, text=True, timeout=280, check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    (run_result,) = result["runs"]
    assert run_result["server"]["server"] == {"mariadb": "MariaDB", "mysql": "MySQL"}[db_flavor]
    (level,) = run_result["levels"]
    assert level["sessions"] == SESSIONS
    assert level["exporter_source"] == ("performance_schema.processlist" if db_flavor == "mysql"
                                        else "information_schema")
    # Every contender was timed in every round, the floor's two commands included.
    for name in ("scrape_interval_0", "scrape_cached_default_interval", "floor_ss",
                 "floor_ss_with_processes", "floor_mariadb_cli", "floor",
                 "floor_with_processes", "mysqld_exporter", "phase_total", "phase_render"):
        assert level["median_ms"][name] > 0, name
    for ratio in ("scrape_over_floor", "scrape_over_floor_with_processes", "cached_over_ss",
                  "cached_over_ss_with_processes"):
        assert level["median_ratio"][ratio] > 0, ratio
    # The exporter saw the holders' sessions idle and the busy ones active.
    states = level["sessions_by_state"]
    assert states["idle"] >= SESSIONS and states["active"] >= 1, states
    assert states["phantom"] == states["unmatched"] == 0, states
    # Counts that do not depend on the machine's speed.
    assert level["queries_per_scrape"]["interval_0"]["Questions"] <= 2
    assert level["queries_per_scrape"]["default_interval"]["Questions"] == 0
    assert level["series"]["exporter_per_session"] <= 20
    # Ten scrapes sent at once share collections. How many collections depends on speed: at
    # 200 sessions one takes about 15 ms, and a loaded machine may start a scrape's thread
    # after it ended (seen: 2). That one collection serves every scrape that arrives while
    # it runs is proven without timing in tests/security/test_concurrency.py (a frozen
    # server holds the collection) and tests/unit/test_engine.py.
    assert level["concurrent"]["ok"] == 10 and 1 <= level["concurrent"]["collections"] < 10
    assert len(level["rss_over_scrapes"]) >= 2 and level["rss_mib"]["exporter_steady"] > 0
    assert f"results in {out}" in run.stderr
