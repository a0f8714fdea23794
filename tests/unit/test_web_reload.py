"""What a web config reload says it changed: names of users and parts, never secrets."""

from __future__ import annotations

from exporter.web.config import BasicAuth, WebConfig
from exporter.web.reload import describe_changes
from tests.support.web import bcrypt_hash


def config(users: dict[str, str] | None = None, tls: dict[str, str] | None = None,
           headers: dict[str, str] | None = None) -> WebConfig:
    auth = BasicAuth({u: h.encode() for u, h in users.items()}) if users else None
    return WebConfig(basic_auth=auth, headers=headers or {}, tls_identity=tls or {})


def test_nothing_changed() -> None:
    hashed = bcrypt_hash("a")
    assert describe_changes(config({"a": hashed}), config({"a": hashed})) == []


def test_users_and_passwords() -> None:
    a, b = bcrypt_hash("a"), bcrypt_hash("b")
    changes = describe_changes(config({"a": a, "b": b}), config({"a": bcrypt_hash("a2"), "c": b}))
    assert changes == ["users added: c", "users removed: b", "password changed: a"]
    assert not any("$2" in change for change in changes)


def test_tls_parts_and_headers() -> None:
    old = {"certificate": "aa" * 32, "key": "k1", "client CA": "c1", "min_version": "TLS12",
           "max_version": "TLS13", "client_auth_type": "NoClientCert"}
    new = {**old, "certificate": "bb" * 32, "key": "k2", "min_version": "TLS13"}
    changed = config(tls=new, headers={"X-Frame-Options": "deny"})
    changes = describe_changes(config(tls=old), changed)
    assert changes == [f"certificate changed (sha256 {'bb' * 8})", "key changed",
                       "min_version TLS12 -> TLS13", "headers changed"]
    assert "k2" not in " ".join(changes)
