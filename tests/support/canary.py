"""Helpers shared by the security tests: the canary secret and its encodings, my.cnf
files, and a look at a running process's resources."""

from __future__ import annotations

import base64
import json
import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from tests.support.exporter_process import ExporterProcess

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
# Distinctive, and full of characters that quoting, escaping and encoding change.
CANARY = "Canary-Pw-7f3e!\"'\\"


def my_cnf_quote(value: str) -> str:
    """A value as a double-quoted my.cnf string."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_my_cnf(path: Path, section: str = "client", **options: str | None) -> Path:
    """A my.cnf with one section; option names use dashes (ssl_ca -> ssl-ca); a None value
    writes the bare option name."""
    lines = [f"[{section}]"]
    for name, value in options.items():
        key = name.replace("_", "-")
        lines.append(key if value is None else f"{key}={value}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


def secret_forms(secret: str, *extra: str) -> dict[str, str]:
    """The secret as it could show up anywhere: plain, escaped, URL-, base64- and
    hex-encoded (base64 also at the two other byte alignments, as inside "user:secret")."""
    raw = secret.encode("utf-8")
    forms = {
        "plain": secret,
        "distinctive part": secret[:14],
        "json-escaped": json.dumps(secret)[1:-1],
        "repr-escaped": repr(secret)[1:-1],
        "url-encoded": urllib.parse.quote(secret, safe=""),
        "url-encoded (plus)": urllib.parse.quote_plus(secret),
        "base64": base64.b64encode(raw).decode(),
        "base64url": base64.urlsafe_b64encode(raw).decode().rstrip("="),
        "hex": raw.hex(),
        "hex of the distinctive part": secret[:14].encode().hex(),
    }
    for shift in (1, 2):
        # The characters that depend on the secret's bytes alone.
        encoded = base64.b64encode(b"\0" * shift + raw).decode()
        forms[f"base64 at offset {shift}"] = encoded[4:-4]
    for index, text in enumerate(extra):
        forms[f"extra form {index}"] = text
    return forms


def find_leaks(text: str, forms: dict[str, str]) -> list[str]:
    """Names of the forms found in text (case-insensitive: hex and %XX come in both cases)."""
    lowered = text.lower()
    return [name for name, form in forms.items() if form and form.lower() in lowered]


@dataclass(frozen=True)
class ProcessSample:
    fds: int
    rss_bytes: int
    threads: int


def sample_process(pid: int) -> ProcessSample:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss_kb = int(fields["VmRSS"].split()[0])
    return ProcessSample(
        fds=len(os.listdir(f"/proc/{pid}/fd")),
        rss_bytes=rss_kb * 1024,
        threads=int(fields["Threads"]),
    )


def alive(exporter: ExporterProcess) -> bool:
    return exporter.process is not None and exporter.process.poll() is None


def exporter_for(target: str, *args: str, env: dict[str, str] | None = None) -> ExporterProcess:
    """An exporter (not started) watching one target."""
    return ExporterProcess([f"--mysql.address={target}", *args], env=env)
