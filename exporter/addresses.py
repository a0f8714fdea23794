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
