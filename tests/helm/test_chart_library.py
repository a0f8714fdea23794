"""An application chart that depends on this chart puts the exporter into its own pods with
the documented named templates (`mode: external`), as the chart README shows."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.support.helm import (
    CHART,
    EXPORTER_CONTAINER,
    KUBE_VERSION,
    Helm,
    Manifests,
    containers_by_name,
    exporter_container,
)

SUB = '(index .Subcharts "mysql-idle-exporter")'
APP_DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-shop
spec:
  selector:
    matchLabels:
      app.kubernetes.io/name: shop
  template:
    metadata:
      labels:
        app.kubernetes.io/name: shop
        {{- include "mysql-idle-exporter.sidecarPodLabels" SUB | nindent 8 }}
    spec:
      shareProcessNamespace: true
      securityContext:
        runAsNonRoot: true
        runAsUser: 10001
        runAsGroup: 10001
      containers:
        - name: shop
          image: example.org/shop:2.0.0
          ports:
            - name: http
              containerPort: 8080
        {{- include "mysql-idle-exporter.sidecarContainer" SUB | nindent 8 }}
      volumes:
        - name: cache
          emptyDir: {}
        {{- include "mysql-idle-exporter.sidecarVolumes" SUB | nindent 8 }}
""".replace("SUB", SUB)


def app_chart(root: Path, exporter_values: dict[str, Any]) -> Path:
    chart = root / "shop"
    (chart / "templates").mkdir(parents=True)
    shutil.copytree(CHART, chart / "charts" / "mysql-idle-exporter",
                    ignore=shutil.ignore_patterns("ci"))
    (chart / "Chart.yaml").write_text(yaml.safe_dump({
        "apiVersion": "v2", "name": "shop", "version": "2.0.0", "appVersion": "2.0.0",
        "dependencies": [{"name": "mysql-idle-exporter", "version": "0.1.0"}],
    }))
    (chart / "values.yaml").write_text(yaml.safe_dump({"mysql-idle-exporter": exporter_values}))
    (chart / "templates" / "deployment.yaml").write_text(APP_DEPLOYMENT)
    return chart


@pytest.fixture(scope="module")
def rendered(helm: Helm, tmp_path_factory: pytest.TempPathFactory) -> Manifests:
    chart = app_chart(tmp_path_factory.mktemp("app-chart"), {
        "mode": "external",
        "mysql": {"addresses": ["mysql.databases.svc:3306"], "user": "shop"},
        "auth": {"type": "myCnf", "existingSecret": "shop-db"},
        "exporter": {"securityContext": {"runAsUser": 10001, "runAsGroup": 10001}},
        "podMonitor": {"enabled": True},
    })
    return helm.template(chart=chart, release="prod")


def test_exporter_joins_the_application_pod(rendered: Manifests) -> None:
    [deployment] = rendered.of_kind("Deployment")
    assert deployment["metadata"]["name"] == "prod-shop"
    spec = deployment["spec"]["template"]["spec"]
    assert list(containers_by_name(spec)) == ["shop", EXPORTER_CONTAINER]
    exporter = exporter_container(spec)
    # The subchart's appVersion, not the application's, picks the image.
    assert exporter["image"] == "ghcr.io/mysql-idle-exporter/mysql-idle-exporter:0.1.0"
    assert "--mysql.address=mysql.databases.svc:3306" in exporter["args"]
    # The application's uid AND gid: owners (docs/kubernetes.md, privilege matrix).
    assert exporter["securityContext"]["runAsUser"] == 10001
    assert exporter["securityContext"]["runAsGroup"] == 10001
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert {"cache", "mysql-idle-exporter-tmp", "mysql-idle-exporter-auth"} <= set(volumes)
    assert volumes["mysql-idle-exporter-auth"]["secret"]["secretName"] == "shop-db"
    for mount in exporter["volumeMounts"]:
        assert mount["name"] in volumes


def test_monitoring_selects_the_application_pods(rendered: Manifests) -> None:
    pod_labels = rendered.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    service = rendered.one("Service")
    monitor = rendered.one("PodMonitor")
    for selector in (service["spec"]["selector"], monitor["spec"]["selector"]["matchLabels"]):
        assert selector and all(pod_labels.get(k) == v for k, v in selector.items())
    exporter = exporter_container(rendered.one("Deployment")["spec"]["template"]["spec"])
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == exporter["ports"][0]["name"]


def test_application_pod_is_a_valid_deployment(rendered: Manifests) -> None:
    for doc in rendered.docs:
        if doc["apiVersion"] != "monitoring.coreos.com/v1":
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
