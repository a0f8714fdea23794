"""The sidecar benchmark, shortened, so that benchmarks/sidecar.py keeps working.

Timings are not checked (shared, noisy machines; the numbers live in benchmarks/README.md),
only that every part runs and measures what it says: the three contenders answer, every
figure is there, the exporter sees the application's sessions and not the others (held over
the unix socket), and the counts that do not depend on speed hold.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.scale import MYSQLD_EXPORTER
from benchmarks.sidecar import rss_breakdown

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[2]


def test_sidecar_benchmark_short_run(tmp_path: Path) -> None:
    if shutil.which(MYSQLD_EXPORTER) is None:
        pytest.fail(f"{MYSQLD_EXPORTER} is missing: scripts/setup installs it", pytrace=False)
    out = tmp_path / "sidecar.json"
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.sidecar", "--others=0,40", "--own=3",
         "--scrapes=12", "--warmup=1", "--cadence=0.5", "--cadence-scrapes=2", "--settle=0.1",
         "--exporter-python=current", f"--out={out}"],
        cwd=REPO, capture_output=True, text=True, timeout=110, check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert [level["other_sessions"] for level in result["levels"]] == [0, 40]
    contenders = ("exporter", "exporter_interval_0", "mysqld_exporter")
    for level in result["levels"]:
        for name in contenders:
            burst = level["burst"][name]
            assert burst["scrapes"] == 12
            assert burst["median_wall_ms"] > 0 and burst["median_cpu_ms_per_scrape_schedstat"] > 0
            assert burst["server_statement_ms_per_scrape"] > 0, name
            assert level["rss_mib_steady"][name] > 0
        # The application's 3 sessions are seen and matched; the others are not sockets here.
        assert level["exporter_sessions_by_state"]["idle"] >= 3
        assert level["exporter_sessions_by_state"]["unmatched"] == 0
        assert set(level["ratios"]) >= {"exporter_cpu_stat", "exporter_median_wall"}
        # mysqld_exporter reads the server on every scrape; the exporter at most once per
        # --server.interval (30 s) and a ping (a statement event too) otherwise.
        assert level["burst"]["exporter_interval_0"]["statements_per_scrape"] <= 2
    cadence = result["levels"][-1]["cadence"]
    assert all(cadence[name]["idle_cpu_ms_per_second"] >= 0 for name in contenders)
    steps = [step["step"] for step in result["rss_breakdown"]["steps"]]
    assert steps[0] == "interpreter" and steps[-1].startswith("the exporter's modules")
    assert result["rss_breakdown"]["optimize"] == 2  # as the image runs it
    assert f"results in {out}" in run.stderr


def test_memory_figures_are_refused_when_modules_compile_from_source(tmp_path: Path) -> None:
    """Compiling a module at import leaves memory a deployed exporter does not hold: with an
    empty bytecode cache every module would be compiled, and the breakdown says so."""
    with pytest.raises(SystemExit) as refused:
        rss_breakdown(sys.executable, 2, pycache=tmp_path)
    message = str(refused.value)
    count = re.match(r"(\d+) modules have no bytecode at optimization level 2 in (\S+) ", message)
    assert count is not None, message
    assert int(count[1]) > 100 and count[2] == str(tmp_path)
