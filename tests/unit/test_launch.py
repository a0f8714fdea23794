"""The entry point imports aiohttp without the CA bundle of aiohttp's (unused) client, and
changes nothing else a process sees (exporter.launch)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# In a fresh interpreter: the test process has imported aiohttp already.
PROBE = """
import json, os, ssl
from exporter.launch import import_aiohttp_server_only
import_aiohttp_server_only()
from aiohttp import connector
import exporter.cli
print(json.dumps({
    "env": os.environ.get("SSL_CERT_FILE"),
    "aiohttp_client_cas": connector._SSL_CONTEXT_VERIFIED.cert_store_stats()["x509_ca"],
    "later_default_cas": ssl.create_default_context().cert_store_stats()["x509_ca"],
}))
"""


def probe(env: dict[str, str]) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                          text=True, check=True, timeout=60)
    result: dict[str, object] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize("cert_file", [None, "system"])
def test_aiohttp_client_context_loads_no_certificates_and_the_rest_is_unchanged(
    cert_file: str | None,
) -> None:
    import ssl

    env = {k: v for k, v in os.environ.items() if k != "SSL_CERT_FILE"}
    if cert_file is not None:
        bundle = ssl.get_default_verify_paths().cafile
        assert bundle, "this test needs the system CA bundle (ca-certificates)"
        env["SSL_CERT_FILE"] = cert_file = bundle
    result = probe(env)
    assert result["env"] == cert_file  # put back as it was, or left unset
    assert result["aiohttp_client_cas"] == 0  # the 1.8-2 MiB not loaded
    assert isinstance(result["later_default_cas"], int) and result["later_default_cas"] > 0


# Modules a sidecar with default flags must not load (resident memory, benchmarks/README.md):
# node mode (ctypes with it), fleet mode, the web config's watcher and password checks,
# --state.dir's persistence, and the status view and page until someone asks for them
# (tests/unit/test_status_web.py asks).
NOT_FOR_A_SIDECAR = ("ctypes", "exporter.node.namespaces", "exporter.node.reader",
                     "exporter.node.privileges", "exporter.node.places", "exporter.fleet.server",
                     "exporter.sessions.fleet_client", "exporter.web.reload", "exporter.web.auth",
                     "exporter.persistence", "exporter.status", "exporter.advice",
                     "exporter.web.status_page")
# The exporter and its web application, built from the flags as exporter.cli builds them.
LOADED = """
import json, sys
from exporter.launch import import_aiohttp_server_only
import_aiohttp_server_only()
from exporter.cli import build_exporter, web_options
from exporter.config import parse_config
from exporter.web.app import build_app
config = parse_config(sys.argv[1:])
exporter = build_exporter(config, {"MYSQL_IDLE_EXPORTER_PASSWORD": "pw"})
build_app(exporter.engine, web_options(config), exporter.fleet, exporter.drops)
exporter.close()
print(json.dumps(sorted(sys.modules)))
"""


def loaded_modules(*flags: str) -> set[str]:
    done = subprocess.run([sys.executable, "-c", LOADED, "--mysql.user=u", *flags],
                          capture_output=True, text=True, check=True, timeout=60)
    return set(json.loads(done.stdout))


def test_a_sidecar_loads_no_mode_it_does_not_use(tmp_path: Path) -> None:
    assert not loaded_modules() & set(NOT_FOR_A_SIDECAR)
    # The probe can see them: the flags that need them load them.
    assert {"exporter.node.namespaces", "ctypes"} <= loaded_modules("--mode=node")
    assert "exporter.persistence" in loaded_modules(f"--state.dir={tmp_path}")
    web_config = tmp_path / "web.yml"
    web_config.write_text("http_server_config:\n  headers:\n    X-Frame-Options: deny\n")
    assert "exporter.web.auth" in loaded_modules(f"--web.config.file={web_config}")
