"""HOST parsing and address normalisation: every form the processlist and users write."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.addresses import AddressError, normalise_ip, parse_host_port, parse_processlist_host
from exporter.model import Endpoint


@pytest.mark.parametrize(
    "host,expected",
    [
        ("10.0.0.9:47394", Endpoint("10.0.0.9", 47394)),
        ("::1:47394", Endpoint("::1", 47394)),
        ("2001:db8::9:3306", Endpoint("2001:db8::9", 3306)),
        ("[2001:db8::9]:3306", Endpoint("2001:db8::9", 3306)),
        ("::ffff:10.0.0.9:5000", Endpoint("10.0.0.9", 5000)),
        ("localhost:5000", Endpoint("localhost", 5000)),
        ("App-7F9C.example:5000", Endpoint("app-7f9c.example", 5000)),
        ("localhost", None),
        ("", None),
        (None, None),
        ("10.0.0.9", None),
        ("10.0.0.9:", None),
        ("10.0.0.9:0", None),
        ("10.0.0.9:65536", None),
        ("10.0.0.9:12a", None),
        ("a:²", None),
        ("a:٣٣٠٦", None),
        (":5000", None),
        ("[::1]5000", None),
        ("[::1", None),
    ],
)
def test_processlist_host(host: str | None, expected: Endpoint | None) -> None:
    assert parse_processlist_host(host) == expected


@given(st.text(max_size=300))
def test_processlist_host_never_raises(text: str) -> None:
    result = parse_processlist_host(text)
    assert result is None or 0 < result.port < 65536


@given(st.ip_addresses(), st.integers(min_value=1, max_value=65535))
def test_every_ip_round_trips(address: ipaddress.IPv4Address | ipaddress.IPv6Address,
                              port: int) -> None:
    parsed = parse_processlist_host(f"{address}:{port}")
    assert parsed is not None and parsed.port == port
    assert parsed.ip == normalise_ip(str(address))


@pytest.mark.parametrize("text,expected", [
    ("::ffff:127.0.0.1", "127.0.0.1"), ("[::1]", "::1"), ("fe80::1%eth0", "fe80::1"),
    ("2001:DB8::1", "2001:db8::1"), ("LocalHost", "localhost"), (" 10.0.0.1 ", "10.0.0.1"),
])
def test_normalise(text: str, expected: str) -> None:
    assert normalise_ip(text) == expected


def test_endpoint_text_brackets_ipv6() -> None:
    assert str(Endpoint("::1", 3306)) == "[::1]:3306"
    assert str(Endpoint("10.0.0.1", 3306)) == "10.0.0.1:3306"


@pytest.mark.parametrize("text,fragment", [
    ("", "empty"), ("db", "missing port"), ("db:x", "port must"), ("db:0", "port must"),
    ("::1:3306", "brackets"), ("[::1", "missing ']'"), ("[::1]x", "expected ':PORT'"),
    ("db:²", "port must"),
])
def test_user_addresses_rejected(text: str, fragment: str) -> None:
    with pytest.raises(AddressError, match=fragment):
        parse_host_port(text)


def test_user_addresses() -> None:
    assert parse_host_port("[::1]:3307") == ("::1", 3307)
    assert parse_host_port(":9864") == ("", 9864)
    assert parse_host_port("db", default_port=3306) == ("db", 3306)
    assert parse_host_port("127.0.0.1:0", allow_zero=True) == ("127.0.0.1", 0)
