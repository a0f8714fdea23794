"""The chart ships the project's alert rules and Grafana dashboard: byte-identical copies of
dashboards/, rendered unchanged into a PrometheusRule and a dashboard ConfigMap."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.helm import (
    CHART,
    DASHBOARD_FILE,
    REPO,
    RULES_FILE,
    Helm,
    dashboards_file,
)

SYNC_SCRIPT = REPO / "helm" / "sync-files.sh"


@pytest.mark.parametrize("name", [RULES_FILE, DASHBOARD_FILE])
def test_chart_copy_is_byte_identical(name: str) -> None:
    original = dashboards_file(name)
    copy = CHART / "files" / name
    assert copy.is_file(), f"{copy.relative_to(REPO)} is missing: run helm/sync-files.sh"
    assert copy.read_bytes() == original.read_bytes(), (
        f"{copy.relative_to(REPO)} differs from {original}: run helm/sync-files.sh"
    )


def test_prometheus_rule_groups_equal_the_rule_file(helm: Helm) -> None:
    rules = yaml.safe_load(dashboards_file(RULES_FILE).read_text())
    manifests = helm.template(values={"prometheusRule": {
        "enabled": True, "labels": {"release": "kube-prometheus-stack"}}})
    rule = manifests.one("PrometheusRule")
    assert rule["spec"]["groups"] == rules["groups"]
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_dashboard_configmap_holds_the_dashboard(helm: Helm) -> None:
    dashboard = dashboards_file(DASHBOARD_FILE).read_text()
    manifests = helm.template(values={"dashboards": {"enabled": True}})
    [configmap] = manifests.of_kind("ConfigMap")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["data"] == {DASHBOARD_FILE: dashboard.rstrip("\n")}
    assert json.loads(configmap["data"][DASHBOARD_FILE]) == json.loads(dashboard)


def test_dashboard_label_is_configurable(helm: Helm) -> None:
    manifests = helm.template(values={"dashboards": {
        "enabled": True, "namespace": "grafana",
        "labels": {"grafana_dashboard": "yes", "team": "db"},
        "annotations": {"grafana_folder": "Databases"}}})
    configmap = manifests.one("ConfigMap")
    assert configmap["metadata"]["namespace"] == "grafana"
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "yes"
    assert configmap["metadata"]["labels"]["team"] == "db"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "Databases"}


def test_sync_script_copies_both_files(tmp_path: Path) -> None:
    (tmp_path / "helm" / "mysql-idle-exporter").mkdir(parents=True)
    shutil.copy2(SYNC_SCRIPT, tmp_path / "helm" / "sync-files.sh")
    (tmp_path / "dashboards").mkdir()
    (tmp_path / "dashboards" / RULES_FILE).write_text("groups: []\n")
    (tmp_path / "dashboards" / DASHBOARD_FILE).write_text("{}\n")
    script = [str(tmp_path / "helm" / "sync-files.sh")]
    subprocess.run(script, check=True, capture_output=True)
    files = tmp_path / "helm" / "mysql-idle-exporter" / "files"
    assert (files / RULES_FILE).read_text() == "groups: []\n"
    assert (files / DASHBOARD_FILE).read_text() == "{}\n"
    (tmp_path / "dashboards" / DASHBOARD_FILE).unlink()
    proc = subprocess.run(script, capture_output=True, text=True)
    assert proc.returncode != 0 and DASHBOARD_FILE in proc.stderr
