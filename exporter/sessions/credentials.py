"""Database credentials: ``--mysql.user``, a my.cnf ``[client]`` section and the environment.

The password never appears in a repr, a str, an exception or a log line.

Precedence, highest first: ``MYSQL_IDLE_EXPORTER_PASSWORD`` (password only, when set and
not empty), the ``--mysql.user`` flag (user only), the my.cnf section.

my.cnf is read the way the MySQL and MariaDB clients read it, as far as the exporter needs:
option names with dashes or underscores, an optional ``loose-`` prefix, ``skip-``/
``disable-``/``enable-`` prefixes on booleans, values in single or double quotes,
``#`` comments outside quotes, options without a value, and ``!include``/``!includedir``
lines, which are ignored with a warning.
"""

from __future__ import annotations

import configparser
import enum
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

PASSWORD_ENV = "MYSQL_IDLE_EXPORTER_PASSWORD"  # noqa: S105 - a variable name
DEFAULT_SECTION = "client"


class ConfigError(ValueError):
    """Configuration is unusable; the message is one line naming the file and the problem."""


class SslMode(enum.Enum):
    """The MySQL client's ``--ssl-mode`` values."""

    DISABLED = "DISABLED"
    PREFERRED = "PREFERRED"
    REQUIRED = "REQUIRED"
    VERIFY_CA = "VERIFY_CA"
    VERIFY_IDENTITY = "VERIFY_IDENTITY"


@dataclass(frozen=True, slots=True)
class SslOptions:
    """TLS towards the server. ``Credentials.ssl is None`` means TLS is off."""

    mode: SslMode = SslMode.REQUIRED
    ca: str | None = None
    capath: str | None = None
    cert: str | None = None
    key: str | None = None

    def __post_init__(self) -> None:
        if self.mode is SslMode.DISABLED:
            raise ValueError("SslOptions with mode DISABLED: use ssl=None instead")
        if self.mode in (SslMode.VERIFY_CA, SslMode.VERIFY_IDENTITY) and not (
            self.ca or self.capath
        ):
            raise ValueError(f"ssl-mode {self.mode.value} needs ssl-ca or ssl-capath")


# What the MySQL client does when nothing is said: TLS when the server offers it, plain
# otherwise. MySQL 8+ offers it out of the box, and its default caching_sha2_password
# needs a secure channel (or the RSA exchange of the [rsa] extra) for a full login.
PREFERRED = SslOptions(mode=SslMode.PREFERRED)


@dataclass(frozen=True, slots=True, repr=False)
class Credentials:
    """Who the exporter logs in as. ``repr``/``str`` show whether a password is set, never it.
    ``ssl=None`` means TLS off; the default is ``PREFERRED``."""

    user: str
    password: str = field(default="", repr=False)
    ssl: SslOptions | None = PREFERRED
    # Informational, from my.cnf; the target address itself comes from --mysql.address.
    host: str | None = None
    port: int | None = None
    socket: str | None = None

    def __repr__(self) -> str:
        secret = "<set>" if self.password else "<empty>"
        return (
            f"Credentials(user={self.user!r}, password={secret}, ssl={self.ssl!r}, "
            f"host={self.host!r}, port={self.port!r}, socket={self.socket!r})"
        )

    __str__ = __repr__


def load_credentials(
    *,
    user: str | None = None,
    my_cnf: str | os.PathLike[str] | None = None,
    section: str = DEFAULT_SECTION,
    environ: Mapping[str, str] | None = None,
) -> Credentials:
    """Build credentials from the flag, the optional my.cnf file and the environment."""
    env = os.environ if environ is None else environ
    options: dict[str, str | None] = {}
    origin = "command line"
    if my_cnf is not None:
        options = read_my_cnf(my_cnf, section=section)
        origin = str(my_cnf)
    from_file = _credentials_from_options(options, origin)
    chosen_user = user if user else from_file.user
    if not chosen_user:
        where = f" or set user in [{section}] of {my_cnf}" if my_cnf is not None else ""
        raise ConfigError(f"no MySQL user given: pass --mysql.user{where}")
    password = env.get(PASSWORD_ENV) or from_file.password
    return Credentials(
        user=chosen_user,
        password=password,
        ssl=from_file.ssl,
        host=from_file.host,
        port=from_file.port,
        socket=from_file.socket,
    )


def read_my_cnf(
    path: str | os.PathLike[str], *, section: str = DEFAULT_SECTION
) -> dict[str, str | None]:
    """The options of one section, names normalised (lower case, ``_`` for ``-``, no
    ``loose_`` prefix) and values unquoted. A name given without a value maps to None."""
    name = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read: {exc.strerror or type(exc).__name__}") from None
    text = raw.decode("utf-8", errors="surrogateescape")
    parser = configparser.RawConfigParser(
        allow_no_value=True,
        delimiters=("=",),
        comment_prefixes=("#", ";"),
        inline_comment_prefixes=None,
        strict=False,
        empty_lines_in_values=False,
        interpolation=None,
        default_section="\x00no-default-section",
    )
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    # configparser's own message quotes the line, which may hold a password: the error is
    # raised after the except clause, so the ConfigError does not even carry it as context.
    failure: str | None = None
    try:
        parser.read_string(_preprocess(text, name), source=name)
    except configparser.MissingSectionHeaderError as exc:
        failure = f"line {exc.lineno}: option outside of a [section]"
    except configparser.Error as exc:
        line = getattr(exc, "lineno", None)
        failure = (f"line {line}: " if line else "") + f"cannot parse ({type(exc).__name__})"
    if failure is not None:
        raise ConfigError(f"{name}: {failure}")
    if not parser.has_section(section):
        raise ConfigError(f"{name}: no [{section}] section")
    options: dict[str, str | None] = {}
    for key, value in parser.items(section, raw=True):
        options[normalise_option_name(key)] = None if value is None else unquote(value)
    return options


def normalise_option_name(key: str) -> str:
    name = key.strip().lower().replace("-", "_")
    return name.removeprefix("loose_")


def unquote(value: str) -> str:
    """A my.cnf value as the MySQL client sees it: end-of-line comment removed, surrounding
    quotes removed, escape sequences (``\\n``, ``\\t``, ``\\\\``, ``\\s`` ...) resolved."""
    text = _remove_end_comment(value).strip()
    if len(text) >= 2 and text[0] in "'\"" and text[-1] == text[0]:
        text = text[1:-1]
    return _unescape(text)


_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "r": "\r", "\\": "\\", "s": " ", "'": "'", '"': '"'}


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    out: list[str] = []
    chars = iter(text)
    for char in chars:
        if char != "\\":
            out.append(char)
            continue
        following = next(chars, "")
        out.append(_ESCAPES.get(following, "\\" + following))
    return "".join(out)


def _remove_end_comment(value: str) -> str:
    # Like mysys remove_end_comment(): '#' outside quotes ends the value.
    quote = ""
    escape = False
    for index, char in enumerate(value):
        if char in "'\"" and not escape:
            if not quote:
                quote = char
            elif quote == char:
                quote = ""
        if not quote and char == "#":
            return value[:index]
        escape = bool(quote) and char == "\\" and not escape
    return value


def _preprocess(text: str, name: str) -> str:
    """Make my.cnf digestible for configparser without changing line numbers: leading
    whitespace does not continue a value in my.cnf, and ``!include`` lines are dropped."""
    lines: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("!"):
            directive = stripped.split(None, 1)[0]
            log.warning("%s: line %d: %s is not supported, ignored", name, number, directive)
            lines.append("")
            continue
        lines.append(stripped)
    return "\n".join(lines) + "\n"


_TRUE = {"", "1", "true", "on", "yes", "enable", "enabled"}
_FALSE = {"0", "false", "off", "no", "disable", "disabled"}


def _boolean(options: Mapping[str, str | None], name: str, origin: str) -> bool | None:
    """A boolean option, honouring skip-/disable-/enable- prefixes; None when absent."""
    result: bool | None = None
    for key, value in options.items():
        if key == name or key == f"enable_{name}":
            result = _parse_bool(value, key, origin)
        elif key in (f"skip_{name}", f"disable_{name}"):
            result = not _parse_bool(value, key, origin)
    return result


def _parse_bool(value: str | None, key: str, origin: str) -> bool:
    text = "" if value is None else value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{origin}: {key.replace('_', '-')}: {value!r} is not a boolean")


def _text(options: Mapping[str, str | None], name: str) -> str | None:
    value = options.get(name)
    return value if value else None


def _credentials_from_options(options: Mapping[str, str | None], origin: str) -> Credentials:
    port: int | None = None
    port_text = _text(options, "port")
    if port_text is not None:
        digits = port_text.strip()
        # Checked before int(): Python refuses to convert more than 4300 digits.
        if not digits.isdecimal() or not digits.isascii() or len(digits) > 5:
            raise ConfigError(f"{origin}: port: {port_text!r} is not a number from 1 to 65535")
        port = int(port_text)
        if not 0 < port < 65536:
            raise ConfigError(f"{origin}: port: {port_text!r} is not a number from 1 to 65535")
    return Credentials(
        user=_text(options, "user") or "",
        password=options.get("password") or "",
        ssl=_ssl_options(options, origin),
        host=_text(options, "host"),
        port=port,
        socket=_text(options, "socket"),
    )


def _ssl_options(options: Mapping[str, str | None], origin: str) -> SslOptions | None:
    ca, capath = _text(options, "ssl_ca"), _text(options, "ssl_capath")
    cert, key = _text(options, "ssl_cert"), _text(options, "ssl_key")
    for option, value in (("ssl-ca", ca), ("ssl-capath", capath), ("ssl-cert", cert),
                          ("ssl-key", key)):
        # os.access raises ValueError for a path with a NUL in it.
        if value is not None and ("\0" in value or not os.access(value, os.R_OK)):
            raise ConfigError(f"{origin}: {option}: {value}: no such readable file")
    if (cert is None) != (key is None):
        raise ConfigError(f"{origin}: ssl-cert and ssl-key must be given together")

    mode_text = _text(options, "ssl_mode")
    if mode_text is not None:
        try:
            mode = SslMode(mode_text.strip().upper())
        except ValueError:
            allowed = ", ".join(m.value for m in SslMode)
            raise ConfigError(
                f"{origin}: ssl-mode: {mode_text!r} is not one of {allowed}"
            ) from None
    else:
        ssl_flag = _boolean(options, "ssl", origin)
        verify = _boolean(options, "ssl_verify_server_cert", origin)
        if ssl_flag is False:
            mode = SslMode.DISABLED
        elif verify:
            mode = SslMode.VERIFY_IDENTITY
        elif ca or capath:
            mode = SslMode.VERIFY_CA
        elif cert or ssl_flag:
            mode = SslMode.REQUIRED
        else:
            mode = SslMode.PREFERRED
    if mode is SslMode.DISABLED:
        return None
    try:
        return SslOptions(mode=mode, ca=ca, capath=capath, cert=cert, key=key)
    except ValueError as exc:
        raise ConfigError(f"{origin}: {exc}") from None
