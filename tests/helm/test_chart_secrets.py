"""The password reaches the exporter only through a Secret: never in clear in any rendered
object, never base64-encoded outside a Secret's data, never on the command line."""

from __future__ import annotations

import base64
import configparser
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.support.helm import (
    CHART,
    NAMESPACE,
    Helm,
    exporter_container,
    pod_spec,
)

CANARY = "s3cr3t-canary-Pw"
EVERYTHING_ON = {
    "serviceMonitor": {"enabled": True},
    "podMonitor": {"enabled": True},
    "prometheusRule": {"enabled": True},
    "dashboards": {"enabled": True},
}


def encodings(secret: str) -> list[str]:
    """The secret in clear, base64-encoded, and the part of its base64 that is the same at any
    offset inside a longer encoded value."""
    raw = secret.encode()
    found = [secret, base64.b64encode(raw).decode().rstrip("=")]
    for shift in (1, 2):
        encoded = base64.b64encode(b"\0" * shift + raw).decode()
        found.append(encoded[4 : len(encoded) - 4])
    return found


def secret_values(
    mode: str, auth_type: str, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "mode": mode,
        "mysql": {"user": "watcher", "addresses": ["db:3306"]},
        "auth": {"type": auth_type, "password": CANARY, **(extra or {})},
        **EVERYTHING_ON,
    }


@pytest.mark.parametrize("auth_type", ["env", "myCnf"])
@pytest.mark.parametrize("mode", ["standalone", "sidecar", "external"])
def test_password_only_inside_secret_data(helm: Helm, mode: str, auth_type: str) -> None:
    manifests = helm.template(values=secret_values(mode, auth_type))
    secrets = manifests.of_kind("Secret")
    assert len(secrets) == 1
    [secret] = secrets
    assert "stringData" not in secret
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert any(CANARY in value for value in decoded.values()), "the canary was not rendered"
    for doc, raw in manifests.pairs():
        if doc["kind"] == "Secret":
            assert CANARY not in raw  # data only: base64, never stringData
            continue
        for form in encodings(CANARY):
            assert form not in raw, f"{doc['kind']}/{doc['metadata']['name']} holds {form!r}"


@pytest.mark.parametrize("mode", ["standalone", "sidecar"])
def test_env_password_comes_from_secret_key_ref(helm: Helm, mode: str) -> None:
    from exporter.sessions.credentials import PASSWORD_ENV

    manifests = helm.template(values=secret_values(mode, "env"))
    secret = manifests.one("Secret")
    exporter = exporter_container(pod_spec(manifests))
    [env] = [e for e in exporter["env"] if e["name"] == PASSWORD_ENV]
    assert "value" not in env
    ref = env["valueFrom"]["secretKeyRef"]
    assert ref == {"name": secret["metadata"]["name"], "key": "password"}
    assert base64.b64decode(secret["data"]["password"]).decode() == CANARY
    assert not any(a.startswith("--config.my-cnf") for a in exporter["args"])


@pytest.mark.parametrize("mode", ["standalone", "sidecar"])
def test_my_cnf_is_mounted_from_secret(helm: Helm, mode: str) -> None:
    from exporter.sessions.credentials import PASSWORD_ENV

    values = secret_values(mode, "myCnf", {"myCnfOptions": {"ssl-ca": "/etc/ca/ca.pem"}})
    manifests = helm.template(values=values)
    secret = manifests.one("Secret")
    spec = pod_spec(manifests)
    exporter = exporter_container(spec)
    assert PASSWORD_ENV not in [e["name"] for e in exporter.get("env", [])]
    [path] = [a.split("=", 1)[1] for a in exporter["args"] if a.startswith("--config.my-cnf=")]
    [mount] = [m for m in exporter["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
    assert mount["readOnly"] is True
    [volume] = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    assert volume["secret"]["items"] == [{"key": "my.cnf", "path": Path(path).name}]
    # The file is a my.cnf the exporter (and the mysql client) can read.
    parser = configparser.ConfigParser()
    parser.read_string(base64.b64decode(secret["data"]["my.cnf"]).decode())
    client = parser["client"]
    assert client["password"].strip('"') == CANARY
    assert client["user"].strip('"') == "watcher"
    assert client["ssl-ca"].strip('"') == "/etc/ca/ca.pem"


@pytest.mark.parametrize("password", ['p"a\\ss # word', "it's; [client]\nuser=root", " x "])
def test_my_cnf_reads_back_awkward_passwords(helm: Helm, tmp_path: Path, password: str) -> None:
    from exporter.sessions.credentials import read_my_cnf

    values = {"mysql": {"user": "o'brien"}, "auth": {"type": "myCnf", "password": password}}
    secret = helm.template(values=values).one("Secret")
    my_cnf = tmp_path / "my.cnf"
    my_cnf.write_bytes(base64.b64decode(secret["data"]["my.cnf"]))
    options = read_my_cnf(my_cnf)
    assert options["password"] == password
    assert options["user"] == "o'brien"


@pytest.mark.parametrize("auth_type", ["env", "myCnf"])
def test_existing_secret_is_referenced_not_created(helm: Helm, auth_type: str) -> None:
    manifests = helm.template(values={
        "mode": "sidecar",
        "auth": {"type": auth_type, "existingSecret": "db-credentials",
                 "passwordKey": "pw", "myCnfKey": "client.cnf",
                 "password": CANARY},  # ignored: the existing Secret wins
    })
    assert not manifests.of_kind("Secret")
    assert CANARY not in manifests.text
    spec = pod_spec(manifests)
    exporter = exporter_container(spec)
    if auth_type == "env":
        [env] = [e for e in exporter["env"] if "valueFrom" in e]
        assert env["valueFrom"]["secretKeyRef"] == {"name": "db-credentials", "key": "pw"}
    else:
        [volume] = [v for v in spec["volumes"] if "secret" in v]
        assert volume["secret"]["secretName"] == "db-credentials"
        assert volume["secret"]["items"][0]["key"] == "client.cnf"


def test_no_credentials_renders_no_secret_reference(helm: Helm) -> None:
    manifests = helm.template()
    assert not manifests.of_kind("Secret")
    exporter = exporter_container(pod_spec(manifests))
    assert "env" not in exporter
    assert not any("secret" in v for v in pod_spec(manifests)["volumes"])


def render_notes(helm: Helm, tmp_path: Path, values: dict[str, Any]) -> str:
    """`helm template` skips NOTES.txt and `helm install --dry-run` needs a cluster, so render
    the notes from a copy of the chart as the data of a ConfigMap."""
    chart = tmp_path / "mysql-idle-exporter"
    shutil.copytree(CHART, chart, ignore=shutil.ignore_patterns("ci"))
    notes = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "zz-notes.yaml").write_text(
        '{{- define "test.notes" -}}\n' + notes + "\n{{- end }}\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\n"
        'data:\n  notes: {{ include "test.notes" . | quote }}\n'
    )
    manifests = helm.template(values=values, chart=chart)
    [doc] = [d for d in manifests.of_kind("ConfigMap") if d["metadata"]["name"] == "notes"]
    return str(doc["data"]["notes"])


@pytest.mark.parametrize("mode", ["standalone", "sidecar", "external"])
def test_notes_render_without_the_password(helm: Helm, tmp_path: Path, mode: str) -> None:
    notes = render_notes(helm, tmp_path, secret_values(mode, "env"))
    assert f"({mode} mode)" in notes
    assert "Prefer auth.existingSecret" in notes
    for form in encodings(CANARY):
        assert form not in notes
    if mode == "external":
        assert 'include "mysql-idle-exporter.sidecarContainer"' in notes
    assert f"namespace {NAMESPACE}" in notes
