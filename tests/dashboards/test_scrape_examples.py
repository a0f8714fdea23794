"""The README's Prometheus scrape configs are real: promtool accepts each, and the README
shows each one verbatim."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "docs" / "prometheus").glob("*.yml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_promtool_accepts_the_example(example: Path, tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: run scripts/setup", pytrace=False)
    document = yaml.safe_load(example.read_text())
    for job in document["scrape_configs"]:
        # Debian's Prometheus is built without Kubernetes discovery, so promtool rejects the
        # block itself: check its shape here and let promtool check everything else.
        if "kubernetes_sd_configs" in job:
            assert job.pop("kubernetes_sd_configs") == [{"role": "pod"}]
            job["static_configs"] = [{"targets": ["pod-ip:9864"]}]
    config = tmp_path / example.name
    config.write_text(yaml.safe_dump(document))
    shutil.copy(REPO / "dashboards" / "mysql-idle-exporter.rules.yml", tmp_path)
    result = subprocess.run([promtool, "check", "config", str(config)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_readme_shows_the_example(example: Path) -> None:
    assert example.read_text().strip() in (REPO / "README.md").read_text()


def test_there_are_three_examples() -> None:
    assert [p.name for p in EXAMPLES] == ["kubernetes-pods.yml", "probe.yml", "static.yml"]
