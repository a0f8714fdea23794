"""What must agree across the chart's objects and that kubernetes-validate does not check
(it validates each object alone): selectors against the labels they must match, the names
the monitors and the scrape example expect, and the security settings the privilege matrix
proved (tests/containers/test_pod.py), as values, schema and install notes.

Uses the `helm` fixture of tests/helm/conftest.py (a real helm binary); about 3 s.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.support.containers import REPO, BuiltImage
from tests.support.privilege_matrix import CASES, Case, chart_values

CHART = REPO / "helm" / "mysql-idle-exporter"
CI_FILES = sorted((CHART / "ci").glob("*.yaml"))
KUBE_VERSION = "1.30.0"
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
SCRAPE_EXAMPLE = REPO / "docs" / "prometheus" / "kubernetes-pods.yml"
# Labels whose value changes with every release: a selector on them would orphan the old pods
# (and a Deployment's selector cannot change after creation).
MUTABLE_LABELS = {"helm.sh/chart", "app.kubernetes.io/version"}


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def selector_problems(objects: list[dict[str, Any]]) -> list[str]:
    """Every selector of these objects that does not select what it must."""
    problems = []
    deployments = [o for o in objects if o["kind"] in ("Deployment", "DaemonSet")]
    pods = [d["spec"]["template"]["metadata"]["labels"] for d in deployments]
    for deployment, pod in zip(deployments, pods, strict=True):
        selector = deployment["spec"]["selector"]["matchLabels"]
        kind = deployment["kind"]
        if not matches(selector, pod):
            problems.append(f"{kind} selector {selector} misses its pods {pod}")
        if MUTABLE_LABELS & set(selector):
            problems.append(f"{kind} selector {selector} uses a label that changes")
    services = [o for o in objects if o["kind"] == "Service"]
    for service in services:
        if pods and not any(matches(service["spec"]["selector"], pod) for pod in pods):
            problems.append(f"Service selector {service['spec']['selector']} selects no pod")
    for monitor in (o for o in objects if o["kind"] == "PodMonitor"):
        selector = monitor["spec"]["selector"]["matchLabels"]
        if pods and not any(matches(selector, pod) for pod in pods):
            problems.append(f"PodMonitor selector {selector} selects no pod")
    for monitor in (o for o in objects if o["kind"] == "ServiceMonitor"):
        selector = monitor["spec"]["selector"]["matchLabels"]
        if not any(matches(selector, s["metadata"]["labels"]) for s in services):
            problems.append(f"ServiceMonitor selector {selector} selects no Service")
        namespaces = monitor["spec"]["namespaceSelector"]["matchNames"]
        if not all(s["metadata"]["namespace"] in namespaces for s in services):
            problems.append(f"ServiceMonitor looks in {namespaces}, not the Service's")
    return problems


ALL_OBJECTS = {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}}


@pytest.mark.parametrize("values_file", CI_FILES, ids=[p.stem for p in CI_FILES])
def test_every_selector_selects_what_it_must(helm: Any, values_file: Path) -> None:
    assert selector_problems(helm.template(values_file).docs) == []


@pytest.mark.parametrize("mode", ["standalone", "sidecar", "external", "node"])
def test_every_selector_selects_what_it_must_in_each_mode(helm: Any, mode: str) -> None:
    objects = helm.template(values={"mode": mode, **ALL_OBJECTS}).docs
    assert selector_problems(objects) == []


def test_kubernetes_validate_misses_what_the_selector_check_catches(helm: Any) -> None:
    objects = helm.template(values={"mode": "sidecar", **ALL_OBJECTS}).docs
    [deployment] = [o for o in objects if o["kind"] == "Deployment"]
    deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] = "other"
    kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)  # no complaint
    assert selector_problems(objects)  # but the pods would never be selected


def test_the_scrape_example_keeps_the_sidecar_container_and_port() -> None:
    """docs/prometheus/kubernetes-pods.yml (also in the README) keeps the targets whose
    container and port names are the chart's defaults."""
    [job] = yaml.safe_load(SCRAPE_EXAMPLE.read_text())["scrape_configs"]
    [keep] = [r for r in job["relabel_configs"] if r.get("action") == "keep"]
    assert keep["source_labels"] == ["__meta_kubernetes_pod_container_name",
                                     "__meta_kubernetes_pod_container_port_name"]
    exporter = VALUES["exporter"]
    assert keep["regex"] == f"{exporter['containerName']};{exporter['portName']}"


@pytest.mark.parametrize("mode", ["sidecar", "standalone"])
def test_the_exporter_container_and_port_carry_the_names_monitors_expect(
    helm: Any, mode: str
) -> None:
    objects = helm.template(values={"mode": mode, **ALL_OBJECTS}).docs
    [deployment] = [o for o in objects if o["kind"] == "Deployment"]
    containers = deployment["spec"]["template"]["spec"]["containers"]
    [exporter] = [c for c in containers if c["name"] == VALUES["exporter"]["containerName"]]
    [port] = exporter["ports"]
    assert port["name"] == VALUES["exporter"]["portName"]
    [pod_monitor] = [o for o in objects if o["kind"] == "PodMonitor"]
    assert [e["port"] for e in pod_monitor["spec"]["podMetricsEndpoints"]] == [port["name"]]
    [service] = [o for o in objects if o["kind"] == "Service"]
    assert [p["targetPort"] for p in service["spec"]["ports"]] == [port["name"]]
    [service_monitor] = [o for o in objects if o["kind"] == "ServiceMonitor"]
    assert [e["port"] for e in service_monitor["spec"]["endpoints"]] == [
        p["name"] for p in service["spec"]["ports"]]


# --- the privilege matrix as the chart expresses it -----------------------------------------

TEST_IMAGE = BuiltImage("localhost/mysql-idle-exporter:test", 0.0, 0)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_each_measured_setting_renders_a_valid_pod(helm: Any, case: Case) -> None:
    objects = helm.template(values=chart_values(case, TEST_IMAGE, "not-a-secret")).docs
    [deployment] = [o for o in objects if o["kind"] == "Deployment"]
    kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)
    spec = deployment["spec"]["template"]["spec"]
    [exporter] = [c for c in spec["containers"] if c["name"] == "mysql-idle-exporter"]
    for key, value in case.exporter.items():
        if key != "capabilities":
            assert exporter["securityContext"][key] == value
    assert exporter["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert exporter["securityContext"]["capabilities"].get("add", []) == \
        case.exporter.get("capabilities", {}).get("add", [])
    assert spec["shareProcessNamespace"] is case.share_process_namespace


def test_uid_0_needs_run_as_non_root_false(helm: Any) -> None:
    error = helm.template_error(values={"exporter": {"securityContext": {"runAsUser": 0}}})
    assert "runAsNonRoot" in error
    root = {"runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": False,
            "capabilities": {"add": ["SYS_PTRACE", "DAC_READ_SEARCH"]}}
    helm.template(values={"exporter": {"securityContext": root}})


@pytest.mark.parametrize("security_context", [
    {"runAsUsr": 1000},  # a typo would silently leave the default uid
    {"runAsGroup": -1},
    {"capabilities": {"add": ["sys_ptrace"]}},
    {"capabilities": {"ad": ["SYS_PTRACE"]}},
])
def test_schema_rejects_a_broken_security_context(helm: Any, security_context: dict[str, Any]
                                                  ) -> None:
    for values in ({"exporter": {"securityContext": security_context}},
                   {"sidecar": {"app": {"securityContext": security_context}}}):
        helm.template_error(values=values)


def render_notes(helm: Any, tmp_path: Path, values: dict[str, Any]) -> str:
    """`helm template` skips NOTES.txt: render it from a copy of the chart as a ConfigMap."""
    chart = tmp_path / "mysql-idle-exporter"
    if not chart.exists():
        shutil.copytree(CHART, chart, ignore=shutil.ignore_patterns("ci"))
        notes = (chart / "templates" / "NOTES.txt").read_text()
        (chart / "templates" / "zz-notes.yaml").write_text(
            '{{- define "test.notes" -}}\n' + notes + "\n{{- end }}\n"
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\n"
            'data:\n  notes: {{ include "test.notes" . | quote }}\n'
        )
    objects = helm.template(values=values, chart=chart).docs
    [notes_map] = [o for o in objects if o["kind"] == "ConfigMap"
                   and o["metadata"]["name"] == "notes"]
    return str(notes_map["data"]["notes"])


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_the_notes_say_what_the_matrix_measured(helm: Any, tmp_path: Path, case: Case) -> None:
    notes = render_notes(helm, tmp_path, chart_values(case, TEST_IMAGE, "not-a-secret"))
    reads = "process names, pids and RST-form drops work" in notes
    assert reads is case.owners_visible, notes
    if not case.share_process_namespace:
        assert "shareProcessNamespace is off" in notes and 'reason="not_visible"' in notes
    elif not case.owners_visible:
        assert "WARNING: the exporter" in notes and 'reason="no_permission"' in notes
        assert "runAsUser AND\nrunAsGroup" in notes and "DAC_READ_SEARCH" in notes


def test_the_notes_of_external_mode_name_the_exporters_ids(helm: Any, tmp_path: Path) -> None:
    notes = render_notes(helm, tmp_path, {
        "mode": "external",
        "exporter": {"securityContext": {"runAsUser": 10001, "runAsGroup": 10002}},
    })
    prose = " ".join(notes.split())
    assert "shareProcessNamespace: true and the exporter your application's uid AND gid" in prose
    assert "runAsUser and runAsGroup, now 10001:10002)" in prose
    assert "or uid 0 with SYS_PTRACE and DAC_READ_SEARCH" in prose
