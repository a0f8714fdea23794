"""--web.config.file: TLS and basic auth in the Prometheus exporter-toolkit format.

https://github.com/prometheus/exporter-toolkit/blob/master/docs/web-configuration.md
Only the parts that make sense for an aiohttp server are accepted; anything else is an
error rather than silently ignored, so a user never believes a setting is active when it is not.
"""

from __future__ import annotations

import hashlib
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# yaml and bcrypt (about 1 MiB together) are imported where a file is loaded or a password
# checked, not here: most exporters run without --web.config.file, and their resident
# memory is a target.


class WebConfigError(ValueError):
    """The web configuration file is unusable; the message says where and why."""


_TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_TLS_KEYS = {
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "min_version",
    "max_version",
    "cipher_suites",
    "prefer_server_cipher_suites",
    "curve_preferences",
}
_TOP_KEYS = {"tls_server_config", "basic_auth_users", "http_server_config"}
_HTTP_KEYS = {"headers", "http2"}


@dataclass(frozen=True)
class BasicAuth:
    """Users and their bcrypt hashes. ``dummy_hash`` stands in for unknown users: it has
    the highest cost among the users, so a wrong password costs the same whether the user
    exists or not (with several costs, unknown users cost what the dearest one does).
    Checking is slow on purpose; exporter.web.auth runs it off the event loop."""

    users: Mapping[str, bytes]
    dummy_hash: bytes = b""  # made from the users' costs when not given

    def __post_init__(self) -> None:
        if not self.dummy_hash:
            cost = max((int(hashed[4:6]) for hashed in self.users.values()), default=4)
            object.__setattr__(self, "dummy_hash", _dummy_hash(cost))

    def hash_of(self, user: str) -> bytes:
        return self.users.get(user, self.dummy_hash)

    def verify(self, user: str, password: str) -> bool:
        """bcrypt's verdict (a quarter of a second at cost 12): call it off the event loop."""
        import bcrypt

        known = user in self.users
        matches = bcrypt.checkpw(password.encode(), self.hash_of(user))
        return known and matches


def _dummy_hash(cost: int) -> bytes:
    """A hash no password matches, costing `cost` to check: a fresh salt and a hash part
    that bcrypt never produces for it (the comparison fails after the full work)."""
    import bcrypt

    return bcrypt.gensalt(rounds=cost) + b"." * 31


@dataclass(frozen=True)
class WebConfig:
    ssl_context: ssl.SSLContext | None = None
    basic_auth: BasicAuth | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    # client_auth_type RequireAndVerifyClientCert: no one without a certificate from
    # client_ca_file gets an answer.
    verifies_client_certs: bool = False
    # What the TLS part was made of, to say what a reload changed: the certificate's
    # SHA-256 fingerprint, digests of the key and client CA files (never logged), and the
    # settings. Empty without TLS.
    tls_identity: Mapping[str, str] = field(default_factory=dict)

    @property
    def authenticates(self) -> bool:
        """Whether every answer (but /healthz) needs a password or a verified certificate."""
        return self.basic_auth is not None or self.verifies_client_certs


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise WebConfigError(f"{where} must be a mapping")
    return value


def _check_keys(section: Mapping[str, Any], allowed: set[str], where: str) -> None:
    # YAML keys need not be strings (`1: x`), and mixed types do not sort together.
    unknown = sorted(set(section) - allowed, key=str)
    if unknown:
        raise WebConfigError(f"{where}: unknown key {unknown[0]!r}")


def _resolve(base: Path, value: Any, where: str) -> Path:
    if not isinstance(value, str) or not value:
        raise WebConfigError(f"{where} must be a file path")
    path = Path(value)
    return path if path.is_absolute() else base / path


def _digest(path: Path) -> str:
    """SHA-256 of a file's bytes ("" when unreadable: loading it reports why)."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except (OSError, ValueError):
        return ""


def _cert_fingerprint(path: Path) -> str:
    """SHA-256 fingerprint of the first certificate in a PEM file, as `openssl x509
    -fingerprint -sha256` shows it (without colons); "" if there is none."""
    try:
        text = path.read_text(encoding="ascii", errors="replace")
        start = text.index("-----BEGIN CERTIFICATE-----")
        end = text.index("-----END CERTIFICATE-----", start) + len("-----END CERTIFICATE-----")
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(text[start:end])).hexdigest()
    except (OSError, ValueError):
        return ""


def _tls_context(
    tls: Mapping[str, Any], base: Path, source: str, referenced: list[Path]
) -> tuple[ssl.SSLContext, dict[str, str]]:
    _check_keys(tls, _TLS_KEYS, f"{source}: tls_server_config")
    if "cert_file" not in tls or "key_file" not in tls:
        raise WebConfigError(f"{source}: tls_server_config needs cert_file and key_file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    min_version = str(tls.get("min_version", "TLS12"))
    max_version = str(tls.get("max_version", "TLS13"))
    for name, value in (("min_version", min_version), ("max_version", max_version)):
        if value not in _TLS_VERSIONS:
            raise WebConfigError(
                f"{source}: {name} must be one of {', '.join(_TLS_VERSIONS)}, not {value!r}"
            )
    context.minimum_version = _TLS_VERSIONS[min_version]
    context.maximum_version = _TLS_VERSIONS[max_version]
    cert = _resolve(base, tls["cert_file"], f"{source}: cert_file")
    key = _resolve(base, tls["key_file"], f"{source}: key_file")
    referenced += [cert, key]
    identity = {
        "certificate": _cert_fingerprint(cert),
        "key": _digest(key),
        "min_version": min_version,
        "max_version": max_version,
    }
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError, ValueError) as error:  # ValueError: a NUL in a path
        raise WebConfigError(f"{source}: cannot load cert_file/key_file: {error}") from None
    client_auth = str(tls.get("client_auth_type", "NoClientCert"))
    if client_auth not in _CLIENT_AUTH:
        raise WebConfigError(f"{source}: unknown client_auth_type {client_auth!r}")
    context.verify_mode = _CLIENT_AUTH[client_auth]
    identity["client_auth_type"] = client_auth
    if "client_ca_file" in tls:
        ca = _resolve(base, tls["client_ca_file"], f"{source}: client_ca_file")
        referenced.append(ca)
        identity["client CA"] = _digest(ca)
        try:
            context.load_verify_locations(cafile=ca)
        except (OSError, ssl.SSLError, ValueError) as error:
            raise WebConfigError(f"{source}: cannot load client_ca_file: {error}") from None
    elif client_auth in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert"):
        raise WebConfigError(f"{source}: client_auth_type {client_auth} needs client_ca_file")
    return context, identity


_BCRYPT_HASH = re.compile(rb"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}")


def _valid_hash(hashed: bytes) -> bool:
    """A well-formed bcrypt hash with a cost of 4 to 31. bcrypt itself checks the salt's
    encoding, at cost 4 (about a millisecond) instead of the hash's own cost, so loading
    and reloading stay cheap whatever the cost."""
    import bcrypt

    match = _BCRYPT_HASH.fullmatch(hashed)
    if match is None or not 4 <= int(match[1]) <= 31:
        return False
    try:
        bcrypt.checkpw(b"", hashed[:4] + b"04" + hashed[6:])
    except ValueError:
        return False
    return True


def _basic_auth(users: Mapping[str, Any], source: str) -> BasicAuth:
    parsed: dict[str, bytes] = {}
    for user, hashed in users.items():
        try:
            # YAML escapes can name users no client can send (lone surrogates).
            str(user).encode("utf-8")
        except UnicodeEncodeError:
            raise WebConfigError(
                f"{source}: basic_auth_users has a user name that is not valid UTF-8"
            ) from None
        message = f"{source}: basic_auth_users.{user} must be a bcrypt hash (htpasswd -nbB)"
        # A malformed hash would otherwise make every request fail (bcrypt raises).
        if not isinstance(hashed, str) or not hashed.isascii() or not _valid_hash(
            hashed.encode()
        ):
            raise WebConfigError(message)
        parsed[str(user)] = hashed.encode()
    return BasicAuth(parsed)


def load_web_config(
    path: str | os.PathLike[str], referenced: list[Path] | None = None
) -> WebConfig:
    """Parse and check a web config file. Every file it reads (the config itself, then
    certificates and keys) is appended to `referenced` as it goes, even when it fails, so
    a caller can watch them for the change that fixes it."""
    import yaml

    source = str(path)
    referenced = [] if referenced is None else referenced
    referenced.append(Path(path))
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise WebConfigError(f"{source}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise WebConfigError(f"{source}: not UTF-8 text") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise WebConfigError(f"{source}:{where} not valid YAML") from None
    except RecursionError:
        raise WebConfigError(f"{source}: nested too deeply") from None
    top = _mapping(document, source)
    _check_keys(top, _TOP_KEYS, source)
    base = Path(path).resolve().parent
    tls = _mapping(top.get("tls_server_config"), f"{source}: tls_server_config")
    users = _mapping(top.get("basic_auth_users"), f"{source}: basic_auth_users")
    http = _mapping(top.get("http_server_config"), f"{source}: http_server_config")
    _check_keys(http, _HTTP_KEYS, f"{source}: http_server_config")
    headers = _mapping(http.get("headers"), f"{source}: http_server_config.headers")
    context, identity = _tls_context(tls, base, source, referenced) if tls else (None, {})
    return WebConfig(
        ssl_context=context,
        basic_auth=_basic_auth(users, source) if users else None,
        headers=_headers(headers, source),
        verifies_client_certs=bool(tls)
        and str(tls.get("client_auth_type")) == "RequireAndVerifyClientCert",
        tls_identity=identity,
    )


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _headers(headers: Mapping[Any, Any], source: str) -> dict[str, str]:
    """Response headers; aiohttp would refuse to send a response with a bad one, so every
    request would fail: a bad name or a value with CR, LF or NUL is a configuration error."""
    checked: dict[str, str] = {}
    for name, value in headers.items():
        name, value = str(name), str(value)
        if not _TOKEN.fullmatch(name) or set(value) & {"\r", "\n", "\0"}:
            raise WebConfigError(f"{source}: http_server_config.headers: invalid header {name!r}")
        checked[name] = value
    return checked
