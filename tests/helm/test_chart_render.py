"""The chart lints, renders valid Kubernetes objects for every ci/ values file, and the parts
that must agree (pod, ports, probes, Service, monitors, flags) agree."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.support.helm import (
    CHART,
    CI_DIR,
    CI_VALUES,
    EXPORTER_CONTAINER,
    KUBE_VERSION,
    MONITORING_API,
    NAMESPACE,
    Helm,
    Manifests,
    ci_id,
    containers_by_name,
    exporter_container,
    flag_values,
    pod_spec,
)

SIDECAR = CI_DIR / "sidecar-values.yaml"
STANDALONE = CI_DIR / "standalone-values.yaml"
MONITORING_DISABLED = CI_DIR / "monitoring-disabled-values.yaml"
NODE = CI_DIR / "node-values.yaml"
# ci/ files whose release runs pods of its own (`mode: external` renders none).
CI_WITH_PODS = [p for p in CI_VALUES if yaml.safe_load(p.read_text()).get("mode") != "external"]
ALL_MONITORING = {
    "serviceMonitor": {"enabled": True},
    "podMonitor": {"enabled": True},
    "prometheusRule": {"enabled": True},
    "dashboards": {"enabled": True},
}
# Kinds validated against Kubernetes' own schemas; the chart renders nothing else but CRDs.
CORE_KINDS = {"Deployment", "DaemonSet", "Service", "ServiceAccount", "Secret", "ConfigMap"}
CRD_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


def test_ci_values_files_exist() -> None:
    assert {ci_id(p) for p in CI_VALUES} >= {"sidecar", "standalone", "monitoring-disabled"}
    assert len(CI_WITH_PODS) >= 3


@pytest.mark.parametrize("values_file", [None, *CI_VALUES],
                         ids=["defaults", *map(ci_id, CI_VALUES)])
def test_lint_strict(helm: Helm, values_file: Path | None) -> None:
    args = ["lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION]
    if values_file:
        args += ["-f", str(values_file)]
    proc = helm.run(*args, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


def parse_config(args: list[str]) -> Any:
    """The exporter's own flag parser (imported late: a broken exporter fails only these tests)."""
    from exporter.config import parse_config as exporter_parse_config

    return exporter_parse_config(args)


def check_monitoring_object(doc: dict[str, Any]) -> None:
    """prometheus-operator CRDs are not in kubernetes-validate's schemas: check their shape."""
    assert doc["apiVersion"] == MONITORING_API
    meta = doc["metadata"]
    assert meta["name"] and meta["namespace"]
    assert all(isinstance(v, str) for v in meta.get("labels", {}).values())
    spec = doc["spec"]
    kind = doc["kind"]
    if kind in ("ServiceMonitor", "PodMonitor"):
        assert set(spec) <= {"namespaceSelector", "selector", "endpoints", "podMetricsEndpoints",
                             "jobLabel"}, spec
        assert spec["selector"]["matchLabels"], "an empty selector would match every object"
        assert spec["namespaceSelector"]["matchNames"]
        key = "endpoints" if kind == "ServiceMonitor" else "podMetricsEndpoints"
        endpoints = spec[key]
        assert endpoints
        allowed = {"port", "path", "scheme", "interval", "scrapeTimeout", "honorLabels",
                   "tlsConfig", "relabelings", "metricRelabelings"}
        for endpoint in endpoints:
            assert set(endpoint) <= allowed, endpoint
            assert isinstance(endpoint["port"], str) and endpoint["path"].startswith("/")
            assert endpoint["scheme"] in ("http", "https")
    else:
        assert set(spec) == {"groups"}
        assert spec["groups"], "a PrometheusRule without groups"
        for group in spec["groups"]:
            assert group["name"] and group["rules"]
            for rule in group["rules"]:
                assert ("alert" in rule) != ("record" in rule), rule
                assert rule["expr"]


@pytest.mark.parametrize("values_file", [None, *CI_VALUES],
                         ids=["defaults", *map(ci_id, CI_VALUES)])
def test_manifests_are_valid_kubernetes_objects(helm: Helm, values_file: Path | None) -> None:
    manifests = helm.template(*([values_file] if values_file else []))
    assert manifests.docs
    names: set[tuple[str, str]] = set()
    for doc in manifests.docs:
        kind = doc["kind"]
        ident = (kind, doc["metadata"]["name"])
        assert ident not in names, f"duplicate {ident}"
        names.add(ident)
        if kind in CRD_KINDS:
            check_monitoring_object(doc)
        else:
            assert kind in CORE_KINDS, f"unexpected kind {kind}"
            try:
                kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
            except kubernetes_validate.ValidationError as error:
                path = ".".join(str(p) for p in error.path)
                pytest.fail(f"{kind}/{doc['metadata']['name']}: {path}: {error.message}")
            assert doc["metadata"].get("namespace") == NAMESPACE


def test_sidecar_runs_exporter_in_the_application_pod(helm: Helm) -> None:
    manifests = helm.template(SIDECAR)
    spec = pod_spec(manifests)
    assert list(containers_by_name(spec)) == ["app", EXPORTER_CONTAINER]
    assert spec["shareProcessNamespace"] is True
    off = pod_spec(helm.template(SIDECAR, values={"sidecar": {"shareProcessNamespace": False}}))
    assert off["shareProcessNamespace"] is False
    assert list(containers_by_name(off)) == ["app", EXPORTER_CONTAINER]


def test_standalone_runs_exporter_alone(helm: Helm) -> None:
    spec = pod_spec(helm.template(STANDALONE))
    assert list(containers_by_name(spec)) == [EXPORTER_CONTAINER]
    assert "shareProcessNamespace" not in spec


def test_external_mode_renders_no_pods(helm: Helm) -> None:
    manifests = helm.template(values={"mode": "external", "auth": {"password": "x"},
                                      **ALL_MONITORING})
    assert not manifests.of_kind("Deployment") and not manifests.of_kind("ServiceAccount")
    assert {"Secret", "Service", "PodMonitor", "ServiceMonitor", "PrometheusRule",
            "ConfigMap"} <= set(manifests.kinds())
    selector = manifests.one("Service")["spec"]["selector"]
    assert selector == {"mysql-idle-exporter/instance": "demo-mysql-idle-exporter"}
    assert manifests.one("PodMonitor")["spec"]["selector"]["matchLabels"] == selector


def test_monitoring_disabled_renders_no_operator_objects(helm: Helm) -> None:
    manifests = helm.template(MONITORING_DISABLED)
    assert not [d for d in manifests.docs if d["apiVersion"] == MONITORING_API]
    assert not manifests.of_kind("ConfigMap") and not manifests.of_kind("Service")
    assert manifests.of_kind("Deployment")


def test_service_monitor_needs_the_service(helm: Helm) -> None:
    error = helm.template_error(values={"service": {"enabled": False},
                                        "serviceMonitor": {"enabled": True}})
    assert "serviceMonitor.enabled needs service.enabled" in error


def subset(small: dict[str, str], big: dict[str, str]) -> bool:
    return all(big.get(k) == v for k, v in small.items())


def check_ports_line_up(manifests: Manifests) -> None:
    spec = pod_spec(manifests)
    exporter = exporter_container(spec)
    kind = "DaemonSet" if manifests.of_kind("DaemonSet") else "Deployment"
    pod_labels = manifests.one(kind)["spec"]["template"]["metadata"]["labels"]
    [port] = exporter["ports"]
    name, number = port["name"], port["containerPort"]
    # Every port name in the pod is unique, or named references are ambiguous.
    all_names = [p["name"] for c in spec["containers"] for p in c.get("ports", [])]
    assert all_names.count(name) == 1
    # The exporter listens where the container port says, and serves what the monitors scrape.
    config = parse_config(exporter["args"])
    assert config.listen_port == number
    assert flag_values(exporter["args"], "--web.listen-address") == [f":{number}"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert exporter[probe]["httpGet"] == {"path": "/healthz", "port": name, "scheme": "HTTP"}
    services = manifests.of_kind("Service")
    for service in services:
        [service_port] = service["spec"]["ports"]
        assert service_port["name"] == name and service_port["targetPort"] == name
        assert subset(service["spec"]["selector"], pod_labels), "Service selects no exporter pod"
    for monitor in manifests.of_kind("ServiceMonitor"):
        [service] = services
        assert subset(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
        [endpoint] = monitor["spec"]["endpoints"]
        assert endpoint["port"] == service["spec"]["ports"][0]["name"]
        assert endpoint["path"] == config.telemetry_path
    for monitor in manifests.of_kind("PodMonitor"):
        assert subset(monitor["spec"]["selector"]["matchLabels"], pod_labels)
        [endpoint] = monitor["spec"]["podMetricsEndpoints"]
        assert endpoint["port"] == name
        assert endpoint["path"] == config.telemetry_path


@pytest.mark.parametrize("values_file", CI_WITH_PODS, ids=map(ci_id, CI_WITH_PODS))
def test_ports_line_up(helm: Helm, values_file: Path) -> None:
    check_ports_line_up(helm.template(values_file))


@pytest.mark.parametrize("mode", ["standalone", "sidecar", "node"])
def test_ports_line_up_when_renamed(helm: Helm, mode: str) -> None:
    manifests = helm.template(values={
        "mode": mode,
        "exporter": {"port": 19100, "portName": "idle-metrics", "telemetryPath": "/m"},
        "service": {"port": 80},
        **ALL_MONITORING,
    })
    check_ports_line_up(manifests)
    [port] = exporter_container(pod_spec(manifests))["ports"]
    assert port == {"name": "idle-metrics", "containerPort": 19100, "protocol": "TCP"}
    assert manifests.one("Service")["spec"]["ports"][0]["port"] == 80


@pytest.mark.parametrize("values_file", CI_WITH_PODS, ids=map(ci_id, CI_WITH_PODS))
def test_rendered_flags_are_accepted_by_the_exporter(helm: Helm, values_file: Path) -> None:
    values = yaml.safe_load(values_file.read_text())
    exporter = exporter_container(pod_spec(helm.template(values_file)))
    config = parse_config(exporter["args"])
    addresses = values.get("mysql", {}).get("addresses") or ["127.0.0.1:3306"]
    assert [t.name for t in config.targets] == addresses
    assert config.user == (values.get("mysql", {}).get("user") or None)


def test_flags_follow_values(helm: Helm) -> None:
    manifests = helm.template(values={
        "mysql": {"addresses": ["db-a:3306", "[fd00::1]:3307"], "user": "watcher"},
        "exporter": {"riskHeadroom": "2m", "networkIdleTimeout": 350, "sessionsTop": 5,
                     "serverInterval": 60, "logLevel": "debug", "logFormat": "json",
                     "extraArgs": ["--sockets.source=proc"]},
    })
    config = parse_config(exporter_container(pod_spec(manifests))["args"])
    assert [t.name for t in config.targets] == ["db-a:3306", "[fd00::1]:3307"]
    assert (config.user, config.risk_headroom, config.network_idle_timeout) == ("watcher", 120, 350)
    assert (config.sessions_top, config.server_interval) == (5, 60)
    assert (config.log_level, config.log_format, config.sockets_source) == ("debug", "json", "proc")
    # networkIdleTimeout 0 (the default) leaves the flag out: the exporter rejects 0.
    args = exporter_container(pod_spec(helm.template()))["args"]
    assert parse_config(args).network_idle_timeout is None


def test_password_env_name_is_the_exporters(helm: Helm) -> None:
    from exporter.sessions.credentials import PASSWORD_ENV

    exporter = exporter_container(pod_spec(helm.template(STANDALONE)))
    assert [e["name"] for e in exporter["env"]] == [PASSWORD_ENV]


# Node mode runs as root with three capabilities: test_node_mode_runs_a_daemonset_...
CI_UNPRIVILEGED = [p for p in CI_WITH_PODS if p != NODE]


@pytest.mark.parametrize("values_file", CI_UNPRIVILEGED, ids=map(ci_id, CI_UNPRIVILEGED))
def test_exporter_runs_unprivileged(helm: Helm, values_file: Path) -> None:
    spec = pod_spec(helm.template(values_file))
    exporter = exporter_container(spec)
    ctx = exporter["securityContext"]
    assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] != 0
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    pod_ctx = spec["securityContext"]
    assert pod_ctx["runAsNonRoot"] is True and pod_ctx["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["automountServiceAccountToken"] is False
    assert not spec.get("hostPID") and not spec.get("hostNetwork")
    resources = exporter["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"]
    assert resources["limits"]["memory"]
    # A read-only root needs a writable /tmp.
    assert {"name": "mysql-idle-exporter-tmp", "mountPath": "/tmp"} in exporter["volumeMounts"]


def test_node_mode_runs_a_daemonset_with_host_pid_and_only_the_capabilities_it_needs(
        helm: Helm) -> None:
    manifests = helm.template(NODE)
    assert not manifests.of_kind("Deployment")
    daemonset = manifests.one("DaemonSet")
    spec = daemonset["spec"]["template"]["spec"]
    assert spec["hostPID"] is True and not spec.get("hostNetwork")
    assert spec["automountServiceAccountToken"] is False
    assert spec["tolerations"] == [{"operator": "Exists"}]
    [exporter] = spec["containers"]
    ctx = exporter["securityContext"]
    # What tests/integration/test_node_privileges.py found needed and enough, for uid 0.
    assert ctx["capabilities"] == {"drop": ["ALL"],
                                   "add": ["SYS_ADMIN", "SYS_PTRACE", "DAC_READ_SEARCH"]}
    assert (ctx["runAsUser"], ctx["runAsNonRoot"]) == (0, False)
    assert "allowPrivilegeEscalation" not in ctx  # Kubernetes rejects false beside SYS_ADMIN
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["securityContext"]["runAsNonRoot"] is False
    config = parse_config(exporter["args"])
    assert config.mode == "node"
    # What the exporter knows of sockets and counted drops outlives its container's restarts.
    assert config.state_dir == "/var/lib/mysql-idle-exporter"
    assert {"name": "mysql-idle-exporter-state", "emptyDir": {"sizeLimit": "16Mi"}} in spec[
        "volumes"]
    # One PodMonitor scrapes every node's exporter, keeping the exporter's pod and container
    # labels (where each socket lives) over the target's (where the exporter runs).
    monitor = manifests.one("PodMonitor")
    labels = daemonset["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert [e["honorLabels"] for e in monitor["spec"]["podMetricsEndpoints"]] == [True]
    service_monitor = helm.template(NODE, values={"serviceMonitor": {"enabled": True},
                                                  "podMonitor": {"enabled": False}})
    assert [e["honorLabels"] for e in service_monitor.one("ServiceMonitor")["spec"][
        "endpoints"]] == [True]


def test_image_defaults_to_app_version(helm: Helm) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    image = exporter_container(pod_spec(helm.template()))["image"]
    assert image == f"ghcr.io/mysql-idle-exporter/mysql-idle-exporter:{chart['appVersion']}"
    digest = "sha256:" + "ab" * 32
    pinned = helm.template(values={"image": {"digest": digest, "tag": "ignored"}})
    assert exporter_container(pod_spec(pinned))["image"].endswith(f"mysql-idle-exporter@{digest}")


@pytest.mark.parametrize(
    "values",
    [
        {"service": {"port": "notanumber"}},
        {"exporter": {"port": 70000}},
        {"mode": "daemonset"},
        {"auth": {"type": "plaintext"}},
        {"notAValue": True},
        {"exporter": {"notAValue": 1}},
        {"image": {"pullPolicy": "Sometimes"}},
        {"exporter": {"logLevel": "verbose"}},
        {"exporter": {"riskHeadroom": "five minutes"}},
        {"exporter": {"telemetryPath": "/healthz"}},
        {"exporter": {"portName": "Metrics_Port_Too_Long"}},
        {"mysql": {"addresses": ["db-without-port"]}},
        {"serviceMonitor": {"interval": 30}},
    ],
    ids=lambda v: yaml.safe_dump(v, default_flow_style=True).strip(),
)
def test_schema_rejects_bad_values(helm: Helm, values: dict[str, Any]) -> None:
    error = helm.template_error(values=values)
    assert "don't meet the specifications of the schema" in error, error


def test_schema_rejects_bad_value_given_with_set(helm: Helm) -> None:
    proc = helm.run("template", "demo", str(CHART), "--set", "service.port=notanumber",
                    check=False)
    assert proc.returncode != 0
    assert "service.port" in proc.stderr
