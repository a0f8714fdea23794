"""Address parsing and normalisation: the one place that knows the textual forms."""

from __future__ import annotations

import functools
import ipaddress

from exporter.model import Endpoint

# A collection parses the same few addresses thousands of times (every processlist row and
# every session carries one of this host's addresses), and ipaddress parsing runs in Python:
# the answers are cached. Bounded, because hostnames and user input pass through too.
_CACHE_SIZE = 4096


@functools.lru_cache(maxsize=_CACHE_SIZE)
def normalise_ip(text: str) -> str:
    """Canonical text of an IP address; IPv4-mapped IPv6 becomes plain IPv4.

    Text that is not an IP address (a hostname, "localhost") is returned lower-cased.
    """
    candidate = text.strip()
    if candidate.startswith("[") and candidate.endswith("]"):
        candidate = candidate[1:-1]
    # A zone index ("fe80::1%eth0") does not take part in matching.
    candidate = candidate.split("%", 1)[0]
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        return candidate.lower()
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=_CACHE_SIZE)
def is_loopback(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).is_loopback
    except ValueError:
        return text == "localhost"


def endpoint(ip: str, port: int) -> Endpoint:
    return Endpoint(normalise_ip(ip), port)


def parse_processlist_host(host: str | None) -> Endpoint | None:
    """Parse processlist HOST: "ip:port", unbracketed IPv6 "::1:47394", "[v6]:port",
    "localhost:PORT", "hostname:PORT". Bare "localhost" (unix socket), empty values and
    anything without a valid port give None."""
    if not host:
        return None
    text = host.strip()
    if text.startswith("["):
        closing = text.find("]")
        if closing < 0 or text[closing + 1 : closing + 2] != ":":
            return None
        address, port_text = text[1:closing], text[closing + 2 :]
    else:
        address, sep, port_text = text.rpartition(":")
        if not sep:
            return None
    # isdigit() alone admits "²" and other scripts' digits, which int() rejects or misreads.
    if not (port_text.isascii() and port_text.isdigit()) or not address or len(port_text) > 5:
        return None
    port = int(port_text)
    if not 0 < port < 65536:
        return None
    ip = normalise_ip(address)
    if not ip:  # e.g. "%eth0:3306": nothing but a zone index
        return None
    return Endpoint(ip, port)


class AddressError(ValueError):
    """An address given on the command line or in configuration is malformed."""


def parse_host_port(
    text: str, default_port: int | None = None, *, allow_zero: bool = False
) -> tuple[str, int]:
    """Parse "HOST:PORT", "[v6]:PORT" or ":PORT" (empty host) as given by a user.
    Port 0 ("any free port") only where `allow_zero` says so."""
    value = text.strip()
    if not value:
        raise AddressError("empty address")
    if value.startswith("["):
        closing = value.find("]")
        if closing < 0:
            raise AddressError(f"{text!r}: missing ']'")
        host, rest = value[1:closing], value[closing + 1 :]
        if rest and not rest.startswith(":"):
            raise AddressError(f"{text!r}: expected ':PORT' after ']'")
        port_text = rest[1:] if rest else ""
    elif value.count(":") > 1:
        raise AddressError(f"{text!r}: put IPv6 addresses in brackets, as [::1]:3306")
    else:
        host, _, port_text = value.partition(":")
    if not port_text:
        if default_port is None:
            raise AddressError(f"{text!r}: missing port")
        return host, default_port
    lowest = 0 if allow_zero else 1
    if not (port_text.isascii() and port_text.isdigit()) or not lowest <= int(port_text) < 65536:
        raise AddressError(f"{text!r}: port must be a number from {lowest} to 65535")
    return host, int(port_text)


DEFAULT_TARGET_HOST = "127.0.0.1"


def target_address(text: str) -> tuple[str, str, int]:
    """A --mysql.address as (name, host, port), with one spelling per server address.

    What is the same target: surrounding whitespace is dropped, an empty host is
    127.0.0.1, the port loses leading zeros, IP addresses take their canonical text (IPv6
    compressed and lower-case, in brackets in the name; IPv4-mapped IPv6 becomes IPv4; an
    IPv6 zone is kept, since it picks the interface) and host names are lower-cased (DNS
    ignores case). Names are never resolved: `localhost:3306` and `127.0.0.1:3306` stay
    two targets, as do `db:3306` and `db.:3306` (a resolver's search list treats them
    differently). The name is the `target` label."""
    host, port = parse_host_port(text)
    host = host or DEFAULT_TARGET_HOST
    address, _, zone = host.partition("%")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        if zone:
            raise AddressError(f"{text!r}: a zone index needs an IPv6 address") from None
        name = host.lower()
        return f"{name}:{port}", name, port
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None and not zone:
        ip = ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv4Address):
        if zone:
            raise AddressError(f"{text!r}: a zone index needs an IPv6 address")
        return f"{ip}:{port}", str(ip), port
    canonical = f"{ip}%{zone}" if zone else str(ip)
    return f"[{canonical}]:{port}", canonical, port
